FROM alpine
HEALTHCHECK RUN curl localhost
