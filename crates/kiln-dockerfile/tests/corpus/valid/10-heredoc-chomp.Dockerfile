FROM alpine
RUN <<-EOT sh
	echo indented
	echo lines
	EOT
