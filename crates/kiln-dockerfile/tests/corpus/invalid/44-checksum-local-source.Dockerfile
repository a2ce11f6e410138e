FROM alpine
ADD --checksum=sha256:abc123 local.tar.gz /opt/
