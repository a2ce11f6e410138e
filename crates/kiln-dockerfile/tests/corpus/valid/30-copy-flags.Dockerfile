FROM alpine AS src
RUN mkdir -p /out/a /out/b

FROM alpine
COPY --link --chmod=644 --chown=root:root config.yml /etc/app/
COPY --parents --exclude=**/*_test.go ./cmd/ ./pkg/ /src/
COPY --from=src /out/ /opt/
COPY --from=0 /out/a /a
COPY --from=nginx:alpine /etc/nginx/nginx.conf /etc/nginx/
