FROM alpine
ARG RELEASE
RUN echo building
ENV RELEASE="${RELEASE:?pass --build-arg RELEASE=x.y.z}"
