FROM alpine
ENV MODE=from-env
ARG MODE=from-arg
RUN echo $MODE
LABEL mode=$MODE
