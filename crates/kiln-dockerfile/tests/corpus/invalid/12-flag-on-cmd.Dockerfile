FROM alpine
CMD --x ["sh"]
