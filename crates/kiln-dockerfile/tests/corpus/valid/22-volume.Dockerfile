FROM postgres:16
VOLUME /var/lib/postgresql/data
VOLUME ["/data", "/logs"]
ENV CACHE=/cache
VOLUME $CACHE /other
