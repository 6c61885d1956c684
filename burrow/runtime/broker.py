"""The broker link: one robust aio-pika connection and channel per process.

It is opened in the background so a process starts (and answers ``/healthz``) while the
broker is still down, and it comes back by itself after a broker restart: aio-pika's
robust connection reopens the channel and replays its QoS, declarations, bindings and
consumers (LIBRARY-NOTES.md, aio-pika). What it never replays is a publish that failed
during the outage; publishers retry with the same message id.

With several URLs (one per node of a RabbitMQ cluster, ``BURROW_AMQP_URL`` as a
comma-separated list) the link connects to the first node that answers and, when its node
goes away, to the next live one; the robust channels then restore the process's queues,
bindings and consumers on that node (quorum queues live on every node). aio-pika's
robust connection only ever reconnects to its own URL (aio-pika issue #141; a multi-host
class was proposed in PR #680 and not merged), so :class:`ClusterConnection` picks the
URL of each attempt; the order is :func:`burrow.core.endpoints.connect_order`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aio_pika import RobustConnection
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPError, ChannelInvalidStateError
from yarl import URL

from burrow.core.endpoints import connect_order, node_name
from burrow.runtime import metrics

log = logging.getLogger(__name__)

# What aio-pika raises while the broker is away: its protocol errors, socket errors, and
# ChannelInvalidStateError for a publish, bind or ack on a channel that closed while the
# robust connection reconnects. That one is a RuntimeError, not an AMQPError: catching
# AMQPError alone let a broker restart kill a sequencer shard's task for good.
BROKER_ERRORS: tuple[type[Exception], ...] = (AMQPError, ChannelInvalidStateError,
                                              ConnectionError)

OnChannel = Callable[[AbstractRobustChannel], Awaitable[None]]


# A shutdown step that talks to the broker gets this long; a broker that has not answered
# by then is not coming back before the SIGKILL deadline.
STOP_TIMEOUT = 2.0


async def stop_step(step: Callable[[], Awaitable[object]], what: str,
                    channel: AbstractChannel | None = None,
                    timeout: float = STOP_TIMEOUT) -> None:
    """Run one shutdown step that talks to the broker (a consumer cancel, a channel or
    connection close) so that it cannot hold up the stop.

    A robust channel's calls wait for the connection to come back, forever when it never
    does (the vhost deleted, the broker down for good): a worker ignored SIGTERM until it
    was SIGKILLed. So the step is skipped when *channel* is already closed (it closes with
    its connection), and otherwise given at most *timeout*. Nothing is lost either way: the
    broker requeues whatever was delivered and not acked when the connection dies
    (at-least-once; every job and batch handler is idempotent). Broker errors are logged,
    not raised: the stop goes on.
    """
    if channel is not None and channel.is_closed:
        log.info("%s: skipped, the broker connection is down", what)
        return
    try:
        async with asyncio.timeout(timeout):
            await step()
    except TimeoutError:
        log.warning("%s: no answer from the broker within %.0f s; stopping anyway",
                    what, timeout)
    except BROKER_ERRORS as exc:
        log.debug("%s: %s", what, exc)


# How long one node gets to answer a connection attempt (TCP, TLS, AMQP handshake: a few
# milliseconds on a LAN) before the next node is tried. A frozen or partitioned node
# accepts the TCP connection in its kernel and never answers; aiormq's own default
# would wait 60 s on it.
NODE_TIMEOUT = 5.0

# The one attempt RobustConnection makes per round of its reconnection loop (name-mangled
# private method). ClusterConnection overrides it to try the nodes in turn; if an upgrade
# of aio-pika renamed it, the override would silently never run, so the process stops at
# import instead (tests/unit/test_amqp_urls.py holds it too).
_ATTEMPT = "_RobustConnection__connect_transport"
if not hasattr(RobustConnection, _ATTEMPT):
    raise ImportError(f"aio-pika's RobustConnection has no {_ATTEMPT}: burrow/runtime/"
                      "broker.py's node failover needs updating for this aio-pika")


class ClusterConnection(RobustConnection):
    """A robust connection that tries every node of *urls*, in
    :func:`~burrow.core.endpoints.connect_order`, on each (re)connection attempt.

    Everything else is aio-pika's: the reconnection loop, its back-off
    (``reconnect_interval``, slept after a round where no node answered) and the restore
    of every robust channel on whichever node answered. :attr:`node` is the index of the
    node connected to (None while down); *on_node* is told each change.
    """

    def __init__(self, urls: Sequence[str], on_node: Callable[[str | None], None],
                 **kwargs: Any) -> None:
        super().__init__(URL(urls[0]), **kwargs)
        self.urls = tuple(URL(u) for u in urls)
        self.names = tuple(node_name(u) for u in urls)
        self.node: int | None = None
        self._last: int | None = None  # the node of the last connection, kept while down
        self._on_node = on_node

    async def _RobustConnection__connect_transport(self) -> None:
        attempt = getattr(super(), _ATTEMPT)
        error: BaseException | None = None
        for index in connect_order(len(self.urls), self._last):
            self.url = self.urls[index]  # what the attempt (Connection.connect) dials
            try:
                await attempt()
            except CONNECTION_EXCEPTIONS as exc:
                error = exc
                if len(self.urls) > 1:
                    log.warning("broker node %s did not answer: %s: %s",
                                self.names[index], type(exc).__name__, exc)
                continue
            self.node = self._last = index
            self._on_node(self.names[index])
            return
        assert error is not None
        raise error

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if self.node is not None:
            self.node = None
            self._on_node(None)
        await super()._on_connection_close(closing)


class BrokerLink:
    """Connect to *urls* (one node's URL, or one per node of a cluster) as *name* (shown
    in the management UI) and keep the channel open.

    Call :meth:`start`, then await :meth:`opened` or read :attr:`is_up`; :meth:`close`.
    *on_channel* runs once, on the first channel, to declare what this process needs.
    :attr:`node` is ``host:port`` of the node connected to, None while down.
    """

    def __init__(self, urls: str | Sequence[str], name: str, reconnect_interval: float,
                 on_channel: OnChannel | None = None) -> None:
        self.urls = (urls,) if isinstance(urls, str) else tuple(urls)
        if not self.urls:
            raise ValueError("BrokerLink needs at least one broker URL")
        self.url = self.urls[0]
        self.node: str | None = None
        self.name = name
        self.reconnect_interval = reconnect_interval
        self._on_channel = on_channel
        self.connection: AbstractRobustConnection | None = None
        # A strong reference: the robust connection holds its channels in a WeakSet.
        self.channel: AbstractRobustChannel | None = None
        self._opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._open(), name=f"broker-link-{self.name}")

    async def _open(self) -> None:
        while True:
            try:
                # fail_fast=False: keep trying in the background while the broker is down.
                # Built as aio_pika.connect_robust builds it, with our connection class.
                connection = ClusterConnection(
                    self.urls, self._moved, fail_fast=False,
                    reconnect_interval=self.reconnect_interval,
                    client_properties={"connection_name": self.name})
                self.connection = connection
                await connection.connect(timeout=NODE_TIMEOUT)
                self.channel = await self.connection.channel()
                if self._on_channel is not None:
                    await self._on_channel(self.channel)
            except (AMQPError, OSError) as exc:  # e.g. a topology conflict: say it, retry
                log.error("broker link %s failed: %s: %s", self.name, type(exc).__name__, exc)
                await self._close_connection()
                await asyncio.sleep(self.reconnect_interval)
                continue
            self._opened.set()
            return

    def _moved(self, node: str | None) -> None:
        """The connection reached *node* (``host:port``), or lost its node (None)."""
        previous, self.node = self.node, node
        if previous is not None:
            metrics.BROKER_NODE.labels(previous).set(0)
        if node is not None:
            metrics.BROKER_NODE.labels(node).set(1)
            log.info("broker link %s connected to node %s", self.name, node)
        elif previous is not None and self.connection is not None \
                and not self.connection.close_called:  # not our own close
            log.warning("broker link %s lost node %s; reconnecting%s", self.name, previous,
                        " to the next live node" if len(self.urls) > 1 else "")

    @property
    def is_up(self) -> bool:
        """True while the connection and the channel are open (not recovering)."""
        conn, channel = self.connection, self.channel
        return (self._opened.is_set() and conn is not None and not conn.is_closed
                and conn.connected.is_set() and channel is not None and not channel.is_closed)

    async def opened(self) -> AbstractRobustConnection:
        """Wait until the first connection and channel are open; bound it with a timeout.

        Channels opened on the returned robust connection are reopened, with their
        consumers, after every reconnect.
        """
        await self._opened.wait()
        assert self.connection is not None
        return self.connection

    async def _close_connection(self) -> None:
        conn, self.connection, self.channel = self.connection, None, None
        if conn is not None:
            # Not skipped while the connection is down: closing stops its reconnects.
            await stop_step(conn.close, f"close broker link {self.name}")
            self._moved(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close_connection()
