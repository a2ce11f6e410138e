FROM alpine
RUN addgroup -S app && adduser -S app -G app
USER app
USER app:app
USER 1000:1000
ARG UID=1001
USER ${UID}
