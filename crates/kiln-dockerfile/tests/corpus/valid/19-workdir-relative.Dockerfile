FROM alpine
WORKDIR /srv
WORKDIR app
WORKDIR ./sub/../final
RUN pwd
