FROM alpine
ENV APP_HOME=/opt/app
WORKDIR $APP_HOME
COPY ["bin/my app", "$APP_HOME/bin/"]
COPY conf/ ${APP_HOME}/conf/
