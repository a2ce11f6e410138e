FROM alpine
LABEL org.opencontainers.image.title="My App" \
      org.opencontainers.image.description='single quoted $NOT_EXPANDED' \
      "com.example.key with space"="value" \
      version=1.0
LABEL legacy label value
