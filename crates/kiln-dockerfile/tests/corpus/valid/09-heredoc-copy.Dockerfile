FROM alpine
ARG GREETING=hello
COPY <<EOF /etc/greeting
$GREETING world
EOF
COPY <<'RAW' /etc/raw
$GREETING stays literal
RAW
