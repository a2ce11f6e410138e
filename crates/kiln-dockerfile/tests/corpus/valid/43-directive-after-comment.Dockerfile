# a leading comment
# escape=`
FROM alpine
RUN echo this backslash continues \
    the line
