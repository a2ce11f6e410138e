FROM alpine
COPY <<-END /etc/x
	content
	EN
