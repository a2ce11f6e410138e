FROM alpine
COPY https://example.com/file.tar.gz /opt/
