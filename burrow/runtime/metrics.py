"""Metrics every Burrow process exports, and the one way to render them.

Gateways run several Sanic worker processes, so metrics use prometheus-client's
multiprocess mode whenever ``PROMETHEUS_MULTIPROC_DIR`` is set (the composition roots set
it before this module is imported); a scrape then sums every worker's files.
Each gauge says how the processes' values merge: ``livemin`` for "up" gauges (the process
set counts as connected only if every live process is), ``livesum`` for counts of things
held, ``max`` for per-shard values that one process owns.

Every metric defined here is catalogued in docs/metrics.md with what to do when it moves;
a unit test fails when one is missing there.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

DEPENDENCY_UP = Gauge("burrow_dependency_up",
                      "1 when the last check of the dependency (broker, database) answered",
                      ["dependency"], multiprocess_mode="livemin")
# The node label is host:port of one of BURROW_AMQP_URL's entries: as many as the
# cluster's nodes. livesum: per node, how many live processes are connected to it.
BROKER_NODE = Gauge("burrow_broker_node",
                    "1 for the RabbitMQ node (host:port) this process's broker link is "
                    "connected to, 0 for a node it was connected to before",
                    ["node"], multiprocess_mode="livesum")

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
# Backend events (docs/events.md): published by every kind of process, delivered as
# webhooks by the webhooks worker. The type label is one of burrow.core.events.TYPES.
EVENTS = Counter("burrow_events_total",
                 "Backend events per type and outcome: published (confirmed by the broker), "
                 "failed (not published: the broker refused or did not answer in time)",
                 ["type", "outcome"])
WEBHOOKS = Counter("burrow_webhooks_total",
                   "Webhook requests by outcome: delivered (2xx), retry (5xx, 429, network), "
                   "rejected (another 4xx: parked in webhook.dead)", ["outcome"])


# Gateway. Labels are bounded sets fixed in code: a transport (ws, sse, poll), an
# AuthError reason, a frame type of the protocol, a limiter scope. Never a room, a user,
# a connection or a message id: a label value per client would grow without end.
TRANSPORTS = ("ws", "sse", "poll")
GATEWAY_CONNECTIONS = Gauge("burrow_gateway_connections",
                            "Open client connections on this gateway, by transport",
                            ["transport"], multiprocess_mode="livesum")
GATEWAY_HANDSHAKES = Counter("burrow_gateway_handshakes_total",
                             "Client connections accepted (token valid), by transport",
                             ["transport"])
GATEWAY_AUTH_FAILURES = Counter("burrow_gateway_auth_failures_total",
                                "Requests refused for their token, by AuthError reason",
                                ["reason"])
GATEWAY_FRAMES_IN = Counter("burrow_gateway_frames_in_total",
                            "Client frames received, by type; invalid: unparseable or "
                            "unknown", ["type"])
GATEWAY_FRAMES_OUT = Counter("burrow_gateway_frames_out_total",
                             "Frames queued to clients, by type", ["type"])
GATEWAY_ACK_SECONDS = Histogram("burrow_gateway_ack_seconds",
                                "From a send frame's arrival to its ack being queued to the "
                                "client", buckets=LATENCY_BUCKETS)
GATEWAY_FANOUT_SECONDS = Histogram("burrow_gateway_fanout_seconds",
                                   "From the sequencer storing a message to its frame being "
                                   "queued to this gateway's subscribers (once per message)",
                                   buckets=LATENCY_BUCKETS)
GATEWAY_SLOW_CLIENT_CLOSES = Counter("burrow_gateway_slow_client_closes_total",
                                     "Connections closed with 4008: their outbox filled up")
GATEWAY_RATE_LIMITED = Counter("burrow_gateway_rate_limited_total",
                               "Requests and sends refused by a rate limit, by scope "
                               "(connection, user, ip; flood: a 4429 close)", ["scope"])
GATEWAY_PUBLISHER_RENEWALS = Counter(
    "burrow_gateway_publisher_renewals_total",
    "Sends channels replaced after a streak of broker nacks (burrow/core/nack_streak.py)")
GATEWAY_RESENDS_JOINED = Counter(
    "burrow_gateway_resends_joined_total",
    "Resends (same client_id) not published again: their send was still on its way "
    "(confirmed by the broker, its ack awaited), so the resend waits for that ack")
_gateway_ready: Gauge | None = None


def gateway_ready() -> Gauge:
    """``burrow_gateway_ready``, made on first use, by gateway workers only.

    An unlabelled metric writes its 0 into the multiprocess files the moment it exists.
    Made at import, it would be 0 in Sanic's main process (which serves no client, so
    ``livemin`` would always say 0) and in every queue worker (an alert on it would
    fire for processes that are no gateways). livemin: with several workers the node
    counts as ready only if every live one is.
    """
    global _gateway_ready
    if _gateway_ready is None:
        _gateway_ready = Gauge("burrow_gateway_ready",
                               "1 when the gateway can serve (broker connected, node ready)",
                               multiprocess_mode="livemin")
    return _gateway_ready

# Sequencer. A shard label is the index N of the shard queue chat.seq.N: a handful.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SEQUENCER_BATCH_SIZE = Histogram("burrow_sequencer_batch_size",
                                 "Deliveries taken from a shard queue as one batch",
                                 buckets=BATCH_BUCKETS)
SEQUENCER_STORE_SECONDS = Histogram("burrow_sequencer_store_seconds",
                                    "Time to number and store one batch in the database",
                                    buckets=LATENCY_BUCKETS)
SEQUENCER_MESSAGES = Counter("burrow_sequencer_messages_total",
                             "Messages sequenced and stored (new, not duplicates)")
SEQUENCER_DUPLICATES = Counter("burrow_sequencer_duplicates_total",
                               "Sends dropped as already stored (redeliveries, client retries)")
SEQUENCER_LAG_SECONDS = Gauge("burrow_sequencer_lag_seconds",
                              "Seconds the oldest stored message whose fan-out is not yet "
                              "confirmed has waited, per shard; 0 when caught up",
                              ["shard"], multiprocess_mode="max")
SEQUENCER_SHARD_ACTIVE = Gauge("burrow_sequencer_shard_active",
                               "1 while this process is the shard queue's single active "
                               "consumer (it received a delivery since it last connected)",
                               ["shard"], multiprocess_mode="max")


SEQUENCER_HANDOVERS = Counter("burrow_sequencer_handovers_total",
                              "Shards this process let go to another sequencer to spread "
                              "the shards (consumers/shard_balance.py)")
SEQUENCER_MEMBERS = Gauge("burrow_sequencer_members",
                          "Live sequencer processes as this one sees them from heartbeats "
                          "(itself included)", multiprocess_mode="max")


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
