FROM alpine AS app
COPY --from=build /out/app /app
FROM golang AS build
RUN go build -o /out/app
