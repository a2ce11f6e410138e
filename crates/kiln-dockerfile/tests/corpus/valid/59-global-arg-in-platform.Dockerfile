ARG PLAT=linux/arm64
FROM --platform=${PLAT} alpine AS arm
RUN uname -m
FROM --platform=linux/amd64 alpine
COPY --from=arm /etc/os-release /arm-os-release
