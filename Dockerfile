# One image for every Burrow process: the gateway, the three workers, and the one-shot
# service that renders the broker definitions with passwords. docker-compose.yml builds it
# once, as burrow:<version>, and runs every Burrow service from that image
# (docs/deploy.md). The command picks the process: python -m gateway, or
# python -m consumers sequencer|notifier|digester.
FROM python:3.11-slim

WORKDIR /src
# What `pip install` needs and nothing else: the four packages and the files
# pyproject.toml names (readme, licence). No tests, bench, docs or local state; the
# .dockerignore keeps everything else out of the build context as well.
COPY pyproject.toml README.md LICENSE ./
COPY burrow ./burrow
COPY gateway ./gateway
COPY consumers ./consumers
COPY queues ./queues
# The server extra: the gateway's and the workers' dependencies (the base install is the
# client alone); and the s3 extra (aiobotocore), so that BURROW_ATTACHMENT_STORE=s3 is a
# setting, not another image: every compose service runs this one image, and the gateways
# and the sequencer both need it for S3. About 45 MB more, most of it botocore's service
# descriptions; imported at the first S3 call only, so a GridFS deployment pays disk, no
# memory (docs/install.md). The sources go once installed, so the processes run what the
# wheel ships.
RUN pip install --no-cache-dir '.[server,s3]' \
    && rm -rf /src \
    && useradd --system --uid 10001 burrow \
    && mkdir /defs && chown 999:999 /defs  # rendered definitions, read by rabbitmq (uid 999)

WORKDIR /
USER burrow
ENV PYTHONUNBUFFERED=1
EXPOSE 8000 9100
CMD ["python", "-m", "gateway"]
