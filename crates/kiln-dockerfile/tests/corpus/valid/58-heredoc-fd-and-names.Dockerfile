FROM alpine
RUN cat 3<<DATA /dev/fd/3 > /data.txt
payload
DATA
COPY <<one <<two /multi/
first file
one
second file
two
