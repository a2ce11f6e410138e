FROM alpine
ENTRYPOINT ["/entrypoint.sh"]
CMD []
