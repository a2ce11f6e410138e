FROM alpine
ENV A=${B=default}
