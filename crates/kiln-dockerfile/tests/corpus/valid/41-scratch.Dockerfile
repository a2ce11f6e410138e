FROM busybox AS bb
FROM scratch
COPY --from=bb /bin/busybox /busybox
ENTRYPOINT ["/busybox"]
CMD ["sh"]
