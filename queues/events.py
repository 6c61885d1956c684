"""The one publisher of backend events (docs/events.md) to ``burrow.events``.

Gateways (presence, membership, reports), the sequencer (messages) and the notifier
(pushes) each hold one :class:`EventPublisher`. It publishes on a channel of its own:
should ``burrow.events`` be missing, the broker closes the channel it was used on, and
that must never be the one sends, acks or jobs go through.

**Never slows or fails what caused the event.** :meth:`EventPublisher.publish` does not
raise: a publish the broker refuses or does not confirm within the timeout is counted
(``burrow_events_total{outcome="failed"}``) and logged, and the caller goes on. What
that gives (docs/events.md, "Guarantees"):

- the sequencer awaits its events' confirms together with the batch's fan-out confirms,
  before it acks the batch: a crash before the ack redelivers the batch, which publishes
  the same events again (same ids). At least once while the broker answers;
- gateways and the notifier publish after the change is stored (a report, a presence
  settle, a provider's answer); an event lost in a broker outage then is not published
  again. At most once for those, which a consumer that needs every one makes up for by
  reading the state (the presence and report APIs).

:envvar:`BURROW_EVENTS` (:attr:`Settings.events`) chooses the types a process publishes:
an event not selected costs nothing but the check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import ChannelNotFoundEntity

from burrow.core.events import TYPES, Selection
from burrow.runtime import metrics
from burrow.runtime.broker import BROKER_ERRORS, BrokerLink, stop_step
from burrow.runtime.settings import Settings
from queues import topology

log = logging.getLogger(__name__)

FAILED: tuple[type[Exception], ...] = (*BROKER_ERRORS, TimeoutError)
MISSING_RECHECK = 30  # seconds between checks of a missing burrow.events


def message(event: dict[str, Any]) -> aio_pika.Message:
    """The AMQP message of *event*: ``message_id`` = its id, ``type`` = its type,
    persistent, JSON."""
    return aio_pika.Message(orjson.dumps(event), content_type="application/json",
                            message_id=event["id"], type=event["type"],
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


class EventPublisher:
    """Publish events of the types *selection* wants, on *broker*'s connection."""

    def __init__(self, broker: BrokerLink, selection: Selection, timeout: float) -> None:
        self.broker = broker
        self.selection = selection
        self.timeout = timeout
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._opening = asyncio.Lock()
        self._tasks: set[asyncio.Task[int]] = set()
        self._missing_until = 0.0  # monotonic time until which burrow.events is missing
        self._wanted: dict[str, bool] = {}  # type -> selected (the hot path asks per message)

    @classmethod
    def configured(cls, settings: Settings, broker: BrokerLink) -> EventPublisher:
        return cls(broker, settings.events, settings.send_timeout)

    def wants(self, type_: str) -> bool:
        """Whether events of *type_* are published here (check before building one)."""
        wanted = self._wanted.get(type_)
        if wanted is None:
            wanted = self._wanted[type_] = self.selection.wants(type_)
        return wanted

    def wants_any(self, prefix: str) -> bool:
        """Whether any type starting with *prefix* (``message.``) is published here."""
        return any(self.wants(t) for t in TYPES if t.startswith(prefix))

    async def publish(self, events: Iterable[dict[str, Any] | None]) -> int:
        """Publish the selected *events* (``None`` entries skipped) with confirms, all
        in flight at once; return how many the broker confirmed. Never raises."""
        wanted = [e for e in events if e is not None and self.wants(e["type"])]
        if not wanted:
            return 0
        try:
            exchange = await self._ready()
            results = await asyncio.gather(*(
                exchange.publish(message(e), e["type"], mandatory=False, timeout=self.timeout)
                for e in wanted), return_exceptions=True)
        except FAILED as exc:
            results = [exc] * len(wanted)
        outcomes: Counter[tuple[str, str]] = Counter()
        for event, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, FAILED):
                    raise result  # a bug, not the broker: let it show
                outcomes[(event["type"], "failed")] += 1
            else:
                outcomes[(event["type"], "published")] += 1
        for (type_, outcome), count in outcomes.items():
            metrics.EVENTS.labels(type_, outcome).inc(count)
        failed = sum(n for (_, outcome), n in outcomes.items() if outcome == "failed")
        if failed:
            log.warning("%d of %d backend events not published (broker unavailable or "
                        "burrow.events missing)", failed, len(wanted))
        return len(wanted) - failed

    def publish_soon(self, events: Iterable[dict[str, Any] | None]) -> None:
        """:meth:`publish` in the background: for callers that must not wait for the
        broker (an HTTP answer, a presence settle). Held until done or :meth:`close`."""
        wanted = [e for e in events if e is not None and self.wants(e["type"])]
        if not wanted:
            return
        task = asyncio.create_task(self.publish(wanted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ready(self) -> AbstractExchange:
        """The exchange on this publisher's channel, opened (again) when needed.

        A new channel first checks that ``burrow.events`` exists (a passive declare,
        which needs no permission): publishes to a missing exchange make the broker close
        the channel, and publishes already in flight on it then make it close the whole
        *connection* (504 "expected 'channel.open'", every channel of the process with
        it). A missing exchange is checked again after :data:`MISSING_RECHECK` seconds;
        meanwhile events fail at once, counted, without touching the broker."""
        if not self.broker.is_up:
            raise ConnectionError("the broker is not reachable")
        if time.monotonic() < self._missing_until:
            raise ConnectionError(f"{topology.EVENTS} is missing")
        async with self._opening:
            if self._channel is None or self._channel.is_closed or self._exchange is None:
                self._exchange = None
                if self._channel is not None:  # a robust channel would reopen by itself
                    await stop_step(self._channel.close, "close the events channel",
                                    self._channel)
                connection = await self.broker.opened()
                self._channel = await connection.channel()  # publisher confirms on
                try:
                    self._exchange = await self._channel.get_exchange(topology.EVENTS)
                except ChannelNotFoundEntity:
                    self._missing_until = time.monotonic() + MISSING_RECHECK
                    log.warning("%s is missing: backend events are not published; checked "
                                "again in %d s", topology.EVENTS, MISSING_RECHECK)
                    raise ConnectionError(f"{topology.EVENTS} is missing") from None
            return self._exchange

    async def close(self, timeout: float = 2.0) -> None:
        """Let the events in flight finish (up to *timeout*), then close the channel."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
        channel = self._channel
        if channel is not None and not channel.is_closed:
            await stop_step(channel.close, "close the events channel", channel)
