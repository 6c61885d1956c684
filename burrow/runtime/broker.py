"""The broker link: one robust aio-pika connection and channel per process.

It is opened in the background so a process starts (and answers ``/healthz``) while the
broker is still down, and it comes back by itself after a broker restart: aio-pika's
robust connection reopens the channel and replays its QoS, declarations, bindings and
consumers (LIBRARY-NOTES.md, aio-pika). What it never replays is a publish that failed
during the outage; publishers retry with the same message id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

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


class BrokerLink:
    """Connect to *url* as *name* (shown in the management UI) and keep the channel open.

    Call :meth:`start`, then await :meth:`opened` or read :attr:`is_up`; :meth:`close`.
    *on_channel* runs once, on the first channel, to declare what this process needs.
    """

    def __init__(self, url: str, name: str, reconnect_interval: float,
                 on_channel: OnChannel | None = None) -> None:
        self.url = url
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
                self.connection = await aio_pika.connect_robust(
                    self.url, fail_fast=False, reconnect_interval=self.reconnect_interval,
                    client_properties={"connection_name": self.name})
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

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close_connection()
