FROM alpine
RUN --mount=type=cahce,target=/root/.cache echo
