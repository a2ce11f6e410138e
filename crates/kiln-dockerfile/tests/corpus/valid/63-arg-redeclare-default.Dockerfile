ARG TAG=latest
FROM alpine:${TAG}
ARG TAG=overridden-in-stage
RUN echo $TAG
