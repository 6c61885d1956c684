"""Metrics every Burrow process exports, and the one way to render them.

Gateways run several Sanic worker processes, so metrics use prometheus-client's
multiprocess mode whenever ``PROMETHEUS_MULTIPROC_DIR`` is set (the composition roots set
it before this module is imported); a scrape then sums every worker's files.
Gauges say ``livemin``: the process set counts as connected only if every live process is.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

DEPENDENCY_UP = Gauge("burrow_dependency_up",
                      "1 when the last check of the dependency (broker, database) answered",
                      ["dependency"], multiprocess_mode="livemin")

# Seconds, from a quarter millisecond: fan-out and acks are sub-millisecond on loopback,
# provider and SMTP calls take tens of milliseconds to seconds.
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Workers. Labels are bounded: a queue is one of the topology's few work queues, an
# outcome one of a handful of words, a platform fcm or apns. Never a user or a room.
JOBS = Counter("burrow_jobs_total",
               "Jobs a worker finished, by queue and outcome: done, retried (sent to a "
               "back-off tier), dead (parked in the dead queue), requeued (raised; the "
               "delivery limit parks it after 10)", ["queue", "outcome"])
JOB_SECONDS = Histogram("burrow_job_seconds", "Time a worker spent on one job",
                        ["queue"], buckets=LATENCY_BUCKETS)
PUSHES = Counter("burrow_pushes_total",
                 "Provider answers per device: sent, invalid (token deleted), retry, failed",
                 ["platform", "outcome"])
PUSH_SECONDS = Histogram("burrow_push_seconds", "Time of one provider request",
                         ["platform"], buckets=LATENCY_BUCKETS)
EMAILS = Counter("burrow_emails_total", "SMTP outcomes: sent, retry, rejected", ["outcome"])
EMAIL_SECONDS = Histogram("burrow_email_seconds", "Time to hand one email to the SMTP server",
                          buckets=LATENCY_BUCKETS)


def render(accept: str | None) -> tuple[bytes, str]:
    """The current metrics in the format the scraper's *accept* header asks for."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()  # fresh per scrape: the collector reads every file
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def process_exited(pid: int) -> None:
    """Drop a finished worker's live gauges from the multiprocess directory."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid)
