FROM alpine AS one
COPY --from=two /a /a
FROM alpine AS two
COPY --from=one /b /b
