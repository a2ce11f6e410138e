FROM alpine AS assets
RUN mkdir /assets && echo hi > /assets/hi

FROM alpine
RUN --mount=type=bind,from=assets,source=/assets,target=/mnt/assets ls /mnt/assets
RUN --mount=type=bind,target=/src,rw make -C /src
RUN --mount=type=tmpfs,target=/tmp,size=64m ls /tmp
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc,required npm ci
RUN --mount=type=secret,id=token,env=API_TOKEN ./fetch.sh
RUN --mount=type=ssh git clone git@github.com:org/private.git
RUN --mount=type=cache,id=apk,target=/var/cache/apk,sharing=private,mode=0755,uid=0,gid=0 apk add git
