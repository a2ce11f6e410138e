# check=error=true
FROM alpine
MAINTAINER someone
