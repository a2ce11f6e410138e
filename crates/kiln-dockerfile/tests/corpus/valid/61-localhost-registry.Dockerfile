FROM localhost:5000/team/base:2024.06.1 AS base
FROM registry.example.com:8443/factory/tools:v3
COPY --from=base /opt /opt
