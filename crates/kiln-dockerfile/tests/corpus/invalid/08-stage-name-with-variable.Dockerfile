ARG X=a
FROM alpine AS base-${X}
