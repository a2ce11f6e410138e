FROM alpine
RUN echo first > /first

FROM alpine
RUN echo second > /second

FROM scratch
COPY --from=0 /first /
COPY --from=1 /second /
