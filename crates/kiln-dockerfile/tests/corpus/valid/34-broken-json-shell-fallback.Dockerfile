FROM alpine
CMD ["echo", "missing bracket"
RUN [not json] && echo fell back to shell form
ENTRYPOINT ['single', 'quotes', 'are', 'not', 'json']
