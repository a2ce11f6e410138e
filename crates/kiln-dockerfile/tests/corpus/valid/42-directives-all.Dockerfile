# syntax=docker/dockerfile:1.7-labs
# escape=\
# check=skip=JSONArgsRecommended,StageNameCasing
FROM alpine AS Base
CMD echo shell form without a warning
