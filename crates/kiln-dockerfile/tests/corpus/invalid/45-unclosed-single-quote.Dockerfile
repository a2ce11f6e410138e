FROM alpine
ARG NAME=kiln
LABEL title=$NAME's\ image
