FROM debian@sha256:45f2e735295654f13e3be10da2a6892c708f71a71be845818f6058982761a6d3 AS pinned
FROM docker.io/library/alpine:3.20@sha256:beefdbd8a1da6d2915566fde36db9db0b524eb737fc57cd1367effd16dc0d06d
COPY --from=pinned /etc/debian_version /
