FROM alpine
ENV GREETING="hello world
