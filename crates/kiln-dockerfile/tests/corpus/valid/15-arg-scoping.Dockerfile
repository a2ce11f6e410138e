ARG VERSION=1.2.3
ARG BASE=alpine
FROM ${BASE}:3.20 AS first
RUN echo "no version here: ${VERSION}"
ARG VERSION
RUN echo "version is ${VERSION}"

FROM first
RUN echo "inherited ${VERSION}"
