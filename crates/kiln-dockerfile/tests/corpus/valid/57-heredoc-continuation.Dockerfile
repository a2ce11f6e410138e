FROM alpine
RUN <<EOF \
    sh -x
echo inside a heredoc whose command line continues
EOF
COPY <<-"CONF" /etc/app.conf
	key=value
	CONF
