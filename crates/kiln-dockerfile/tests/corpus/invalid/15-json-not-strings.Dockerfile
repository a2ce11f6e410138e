FROM alpine
CMD ["sleep", 10]
