"""The webhooks worker: POSTs backend events, signed, to ``BURROW_WEBHOOK_URL``.

Optional (``python -m consumers webhooks``, broker user ``burrow-webhooks``;
docs/events.md, "Webhooks"). Its queue ``webhook.due`` is a quorum queue bound to
``burrow.events`` with each pattern of ``BURROW_WEBHOOK_EVENTS``, and runs as a job
family (:mod:`queues.jobs`): one request per event, with the event's JSON as the body
and ``Burrow-Signature: t=<unix seconds>,v1=<HMAC-SHA256 hex>`` over ``<t>.<body>``
(:mod:`burrow.core.webhook_signing`).

- a 2xx answer delivers the event;
- a network error, a timeout, 408, 429 or a 5xx retries it through
  ``webhook.retry.<tier>`` (``BURROW_WEBHOOK_RETRIES``; a ``Retry-After`` is honoured
  by skipping to a tier at least that long), then parks it in ``webhook.dead``;
- any other answer (a redirect, another 4xx) parks it in ``webhook.dead`` at once, with
  the status in ``x-burrow-error``: the receiver refuses it, retrying will not help
  until someone fixes it; then it is replayed from the management UI like any job;
- an event of a type ``BURROW_WEBHOOK_EVENTS`` no longer selects (a binding left from
  before the setting was narrowed) is dropped, acked.

Delivery is at least once (a crash during a request repeats it, with the same
``Burrow-Event-Id``) and in no particular order (``BURROW_WORKER_CONCURRENCY`` requests
at once, retries later): receivers deduplicate on the id and order by the event's own
fields (a message's ``seq``, a presence ``version``).
"""

from __future__ import annotations

import logging
import time

import httpx
import orjson

from burrow.core import events, webhook_signing
from burrow.runtime import metrics
from burrow.runtime.process import Runtime
from burrow.runtime.settings import ConfigError, Settings
from queues import topology
from queues.jobs import Job, JobQueue, Permanent, RetryLater

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0  # seconds a receiver may take to answer one request
DRAIN_TIMEOUT = REQUEST_TIMEOUT + 2.0
RETRY_STATUSES = frozenset({408, 429})
USER_AGENT = "Burrow-Webhooks/1"


def retry_after(response: httpx.Response) -> float | None:
    """The receiver's ``Retry-After`` in seconds (the delta form; a date is ignored)."""
    raw = response.headers.get("retry-after", "")
    return float(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else None


def request(secret: bytes, event: dict[str, object], now: float) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the request that delivers *event* at *now*."""
    body = orjson.dumps(event)
    return body, {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        webhook_signing.HEADER: webhook_signing.header(secret, int(now), body),
        "Burrow-Event-Id": str(event["id"]),
        "Burrow-Event-Type": str(event["type"]),
    }


class Webhooks:
    def __init__(self, settings: Settings) -> None:
        # Checked now: a worker without a receiver or a key stops before it takes a job.
        if not settings.webhook_url:
            raise ConfigError("BURROW_WEBHOOK_URL is not set: the webhooks worker needs "
                              "the URL it POSTs events to (docs/events.md)")
        if not settings.webhook_secret:
            raise ConfigError("BURROW_WEBHOOK_SECRET is not set: the webhooks worker signs "
                              "every request with it (at least 32 bytes)")
        self.settings = settings
        self.family = topology.webhook_family(settings.webhook_retries)
        self.secret = settings.webhook_secret.encode()
        self.client: httpx.AsyncClient | None = None
        self.queue: JobQueue | None = None

    async def start(self, runtime: Runtime) -> None:
        for outcome in ("delivered", "retry", "rejected"):
            metrics.WEBHOOKS.labels(outcome)
        self.client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT, follow_redirects=False)
        connection = await runtime.broker.opened()
        topo = topology.for_settings(self.settings)
        self.queue = JobQueue.configured(self.settings, self.family.due, self.family.dead,
                                         self.settings.webhook_retries, self.family.retry,
                                         self.deliver)
        await self.queue.start(connection, topo.queue(self.family.due).arguments)

    async def drain(self) -> None:
        if self.queue is not None:
            await self.queue.drain(DRAIN_TIMEOUT)
        if self.client is not None:
            await self.client.aclose()

    async def deliver(self, job: Job) -> None:
        """POST one event; :exc:`RetryLater` or :exc:`Permanent` when it was not taken."""
        assert self.client is not None
        event = job.body
        type_, id_ = event.get("type"), event.get("id")
        if (event.get("schema") != events.SCHEMA or type_ not in events.TYPES
                or not isinstance(id_, str)):
            raise Permanent(f"not a {events.SCHEMA} event")
        if not self.settings.webhook_events.wants(str(type_)):
            log.info("dropped %s: BURROW_WEBHOOK_EVENTS does not select it (remove the "
                     "old binding of webhook.due)", type_)
            return
        body, headers = request(self.secret, event, time.time())
        try:
            response = await self.client.post(self.settings.webhook_url, content=body,
                                              headers=headers)
        except httpx.HTTPError as exc:
            metrics.WEBHOOKS.labels("retry").inc()
            raise RetryLater(f"webhook {id_}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if 200 <= status < 300:
            metrics.WEBHOOKS.labels("delivered").inc()
            return
        if status >= 500 or status in RETRY_STATUSES:
            metrics.WEBHOOKS.labels("retry").inc()
            raise RetryLater(f"webhook {id_}: HTTP {status}", retry_after=retry_after(response))
        metrics.WEBHOOKS.labels("rejected").inc()
        raise Permanent(f"webhook {id_}: the receiver answered HTTP {status}")
