FROM python:3.12-slim
RUN <<EOF python3
import sys
print("building on", sys.version)
EOF
