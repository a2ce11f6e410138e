FROM alpine AS a
FROM alpine
COPY --from=7 /x /x
