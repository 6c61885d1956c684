"""The gateway worker's own end of the broker: its channel, its exclusive queue, the
exchanges it publishes to, and whether it is ready.

Every piece of the node publishes or binds through this one channel, except the sends to
``chat.ingress``: they go through a channel of their own (:meth:`Link.publish_send`),
replaced after a streak of broker nacks (:mod:`burrow.runtime.renewing_publisher`)
without touching the queue's channel. Each piece must give up the same way when the
broker is away (:exc:`Unavailable`, :data:`PUBLISH_FAILED`), so the channels and their
readiness are kept here once, apart from what the pieces do with them.

The queue is ``gateway.<instance>.<pid>``: exclusive, bound to ``chat.reply`` by its own
name (the acks of :mod:`gateway.sends`) and to ``chat.fanout`` for the rooms of
:mod:`gateway.bindings` and the member events of :mod:`gateway.members`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from burrow.runtime import metrics
from burrow.runtime.broker import BROKER_ERRORS
from burrow.runtime.process import Runtime
from burrow.runtime.renewing_publisher import RenewingPublisher
from burrow.runtime.settings import Settings
from queues import topology

# The node's pieces log under the node's name, as when they were one module: the
# ``logger`` field is what operators filter on (docs/monitoring.md).
NODE_LOGGER = "gateway.node"
log = logging.getLogger(NODE_LOGGER)

READY_INTERVAL = 1.0  # seconds between updates of burrow_gateway_ready


class Unavailable(Exception):
    """The broker link is not up (yet); the client may retry."""


# A publish (or bind) that got no answer: the broker is away, or too slow to answer.
PUBLISH_FAILED: tuple[type[Exception], ...] = (Unavailable, *BROKER_ERRORS, TimeoutError)


class Link:
    """:meth:`open`, then :meth:`consume`; :meth:`close` at shutdown."""

    def __init__(self, settings: Settings, runtime: Runtime, queue_name: str) -> None:
        self.settings = settings
        self.runtime = runtime
        self.queue_name = queue_name
        self.channel: AbstractRobustChannel | None = None
        self._verify_channel: AbstractChannel | None = None
        self.queue: AbstractQueue | None = None
        # Sends to chat.ingress go through a channel of their own, replaced after a streak
        # of nacks (a channel stuck on a dead shard leader after a node loss, RabbitMQ
        # 3.10): replacing it must not touch self.channel, which holds the exclusive
        # queue, its bindings and its consumer.
        self.sends_publisher = RenewingPublisher(
            self.runtime.broker.opened, topology.INGRESS,
            metrics.GATEWAY_PUBLISHER_RENEWALS.inc)
        self.fanout: AbstractExchange | None = None
        self._ready = asyncio.Event()

    async def open(self) -> AbstractRobustConnection:
        """Open the channel and the queue, bound to the acks; returns the connection."""
        connection = await self.runtime.broker.opened()
        # on_return_raises: a send that no shard queue takes is an error, not a silent drop.
        self.channel = await connection.channel(on_return_raises=True)
        await self.sends_publisher.open()
        self.fanout = await self.channel.get_exchange(topology.FANOUT, ensure=False)
        reply = await self.channel.get_exchange(topology.REPLY, ensure=False)
        # Exclusive: it goes with this process's connection. Not auto-delete: that would
        # also delete it when its consumer goes with a closed channel, which the robust
        # channel then cannot restore (it re-binds a queue that no longer exists).
        self.queue = await self.channel.declare_queue(
            self.queue_name, exclusive=True, arguments={"x-queue-type": "classic"})
        await self.queue.bind(reply, routing_key=self.queue_name)
        return connection

    async def consume(self, connection: AbstractRobustConnection,
                      on_delivery: Callable[[AbstractIncomingMessage], Awaitable[None]],
                      on_reconnect: Callable[[AbstractRobustConnection], None]) -> None:
        """Hand every delivery to *on_delivery*, *connection*'s reconnects to
        *on_reconnect*; from then on the node is ready."""
        assert self.queue is not None
        # no_ack: the queue is this process's alone and what it misses is replayed from
        # the database (gap fill), so broker-side acks would buy nothing but latency.
        await self.queue.consume(on_delivery, no_ack=True)
        connection.reconnect_callbacks.add(on_reconnect)  # type: ignore[arg-type]
        self._ready.set()
        metrics.gateway_ready().set(1 if self.is_ready else 0)  # not a second later
        log.info("gateway node %s ready", self.queue_name)

    @property
    def is_ready(self) -> bool:
        """The node can subscribe and send now: set up, and the broker link is up."""
        return self._ready.is_set() and self.runtime.broker.is_up

    async def export_ready(self) -> None:
        """Keep ``burrow_gateway_ready`` current. Each worker writes its own value (the
        scrape takes the minimum), so it is refreshed here rather than at scrape time."""
        gauge = metrics.gateway_ready()
        try:
            while True:
                gauge.set(1 if self.is_ready else 0)
                await asyncio.sleep(READY_INTERVAL)
        finally:
            gauge.set(0)

    async def ready(self) -> None:
        """Wait until the node can subscribe and send; raises :exc:`Unavailable` if not soon."""
        if self._ready.is_set() and self.runtime.broker.is_up:
            return
        try:
            async with asyncio.timeout(self.settings.send_timeout):
                await self._ready.wait()
                while not self.runtime.broker.is_up:  # reconnecting: a short outage
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise Unavailable("the broker is not reachable") from None

    @property
    def ingress(self) -> AbstractExchange | None:
        """``chat.ingress`` on the current sends channel (None before :meth:`open`)."""
        return self.sends_publisher.exchange

    async def publish_send(self, message: aio_pika.Message, routing_key: str) -> None:
        """Publish a send to ``chat.ingress`` and wait for its confirm, or raise one of
        :data:`PUBLISH_FAILED` (a nack too: ``DeliveryError`` is a broker error)."""
        await self.sends_publisher.publish(message, routing_key,
                                           timeout=self.settings.send_timeout)

    async def request_verification(self, body: dict[str, object], job_id: str) -> None:
        """Queue a verification mail (``email.verify`` -> ``email.due``), confirmed and
        routed, or raise one of :data:`PUBLISH_FAILED`."""
        await self.ready()
        # A channel of its own: should the exchange be missing (no digester has declared
        # it yet), the broker closes the channel it was used on, and that must not be
        # the one every send goes through.
        channel = self._verify_channel
        if channel is None or channel.is_closed:
            connection = await self.runtime.broker.opened()
            channel = self._verify_channel = await connection.channel(on_return_raises=True)
        exchange = await channel.get_exchange(topology.VERIFY, ensure=False)
        await exchange.publish(
            aio_pika.Message(orjson.dumps(body), content_type="application/json",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             message_id=job_id),
            topology.EMAIL.due, timeout=self.settings.send_timeout)

    async def close(self) -> None:
        await self.sends_publisher.close()
        if self.channel is not None and not self.channel.is_closed:
            await self.channel.close()
