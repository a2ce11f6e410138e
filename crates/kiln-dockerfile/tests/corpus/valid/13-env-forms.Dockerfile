FROM alpine
ENV A=1 B="two words" C=$A
ENV LEGACY value with spaces
ENV D=${B}-suffix
RUN echo $A $B $C $D $LEGACY
