FROM alpine:3.20
RUN apk add --no-cache bash curl jq
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hello"]
