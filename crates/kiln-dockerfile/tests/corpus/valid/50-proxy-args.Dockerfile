FROM debian
RUN apt-get update
ARG HTTP_PROXY
RUN echo $HTTP_PROXY
