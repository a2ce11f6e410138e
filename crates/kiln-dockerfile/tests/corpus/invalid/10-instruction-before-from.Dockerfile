ARG OK=1
RUN echo too early
FROM alpine
