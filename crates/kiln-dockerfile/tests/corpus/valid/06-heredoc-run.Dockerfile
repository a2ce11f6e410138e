# syntax=docker/dockerfile:1.4
FROM debian:bookworm
RUN <<EOF
set -e
apt-get update
apt-get install -y nginx
rm -rf /var/lib/apt/lists/*
EOF
