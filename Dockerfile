# One image for every Burrow process: the gateway, the workers, and the one-shot
# service that renders the broker definitions with passwords for docker-compose.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY burrow ./burrow
COPY gateway ./gateway
COPY consumers ./consumers
COPY queues ./queues
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 burrow \
    && mkdir /defs && chown 999:999 /defs  # rendered definitions, read by rabbitmq (uid 999)

USER burrow
ENV PYTHONUNBUFFERED=1
EXPOSE 8000 9100
CMD ["python", "-m", "gateway"]
