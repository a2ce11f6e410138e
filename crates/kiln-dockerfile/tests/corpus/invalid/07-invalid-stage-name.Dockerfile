FROM alpine AS 2nd-stage
