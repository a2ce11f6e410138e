FROM alpine AS build
RUN echo one
FROM debian AS build
RUN echo two
FROM build
RUN echo uses the second
