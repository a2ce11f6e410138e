# syntax=docker/dockerfile:1
FROM alpine
RUN --mount=type=cache,target=/root/.cache \
    --mount=type=secret,id=aws,target=/root/.aws/credentials \
    --network=none \
    echo all flags together
