FROM alpine
RUN ["sh", "-c", "echo \"quoted\" && echo 'single'"]
CMD ["echo", "tab\there", "unicode \u00e9"]
ENTRYPOINT ["/bin/sh", "-c", "exec \"$0\" \"$@\""]
