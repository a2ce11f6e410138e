FROM golang:1.22 AS build
RUN go build -o /app .

FROM build AS test
RUN go test ./...

FROM alpine AS lint
RUN ${UNDEFINED:?lint is never built for the default target}

FROM alpine AS release
COPY --from=build /app /app
