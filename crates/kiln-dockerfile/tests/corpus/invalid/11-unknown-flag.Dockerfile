FROM alpine AS build
FROM alpine
COPY --fro=build /out/app /app
