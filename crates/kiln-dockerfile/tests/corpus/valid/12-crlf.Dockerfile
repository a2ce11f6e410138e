FROM alpine
RUN echo one \
    two
CMD ["sh"]
