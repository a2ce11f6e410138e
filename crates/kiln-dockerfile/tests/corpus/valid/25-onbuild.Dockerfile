FROM python:3.12 AS base
ONBUILD COPY requirements.txt /app/
ONBUILD RUN pip install -r /app/requirements.txt
ONBUILD COPY . /app

FROM base
CMD ["python", "/app/main.py"]
