"""A confirmed publisher channel for one exchange, replaced when the broker keeps nacking.

After a RabbitMQ node dies, a channel reopened on a survivor can keep a quorum queue's
client state that is wrong for good (RabbitMQ 3.10): every publish of that channel to
that queue is nacked, while a new channel's are accepted. :class:`RenewingPublisher`
counts nacks per routing key (:mod:`burrow.core.nack_streak` decides) and, on a streak,
opens a new channel, publishes there from then on and closes the old one. Publishes still
waiting for their confirm on the old channel fail (a broker error, as for a connection
loss): their callers report a retryable failure and the retry goes through the new
channel. Only this publisher's channel is replaced; whatever else the process does on its
other channels (consumers, exclusive queues, bindings) is not touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.exceptions import DeliveryError
from pamqp.commands import Basic

from burrow.core.nack_streak import NackStreaks
from burrow.runtime.broker import BROKER_ERRORS, stop_step

log = logging.getLogger(__name__)

# A new channel that could not be opened: the broker is away or too slow to answer.
OPEN_FAILED: tuple[type[Exception], ...] = (*BROKER_ERRORS, TimeoutError)


def is_nack(exc: BaseException) -> bool:
    """*exc* is the broker's ``Basic.Nack`` of a publish (not a return: unroutable)."""
    return isinstance(exc, DeliveryError) and isinstance(exc.frame, Basic.Nack)


class RenewingPublisher:
    """:meth:`open`, then :meth:`publish`; :meth:`close` at shutdown."""

    def __init__(self, opened: Callable[[], Awaitable[AbstractRobustConnection]],
                 exchange: str, on_renewal: Callable[[], None],
                 streaks: NackStreaks | None = None) -> None:
        self._opened = opened
        self.exchange_name = exchange
        self._on_renewal = on_renewal
        self.streaks = streaks or NackStreaks()
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None
        self._renewing = asyncio.Lock()

    async def open(self) -> None:
        """Open a channel (publisher confirms; a return raises) and take the exchange."""
        connection = await self._opened()
        channel = await connection.channel(on_return_raises=True)
        self.exchange = await channel.get_exchange(self.exchange_name, ensure=False)
        self.channel = channel

    async def publish(self, message: aio_pika.Message, routing_key: str,
                      timeout: float) -> None:
        """Publish and wait for the confirm; raises what the exchange's publish raises.
        A nack that completes a streak replaces the channel before it is raised."""
        exchange = self.exchange
        assert exchange is not None, "RenewingPublisher.open first"
        try:
            await exchange.publish(message, routing_key, timeout=timeout)
        except DeliveryError as exc:
            if is_nack(exc) and exchange is self.exchange:
                now = time.monotonic()
                if self.streaks.nacked(routing_key, now):
                    self.streaks.renewed(now)  # before any await: one renewal per streak
                    await self._renew(exchange, routing_key)
            raise
        if exchange is self.exchange:
            self.streaks.acked(routing_key)

    async def _renew(self, stuck: AbstractExchange, routing_key: str) -> None:
        async with self._renewing:
            if self.exchange is not stuck:
                return
            old = self.channel
            try:
                await self.open()
            except OPEN_FAILED as exc:
                log.warning("publisher channel for %s not renewed: %s", self.exchange_name, exc)
                return
            self._on_renewal()
            log.warning("publisher channel for %s renewed: the broker nacked %s's "
                        "publishes %d times in a row", self.exchange_name, routing_key,
                        self.streaks.renew_after)
            if old is not None:
                await stop_step(old.close, f"close the nacked {self.exchange_name} channel",
                                old)

    async def close(self) -> None:
        """Close the channel at shutdown: bounded, skipped when the broker is gone."""
        if self.channel is not None:
            await stop_step(self.channel.close, f"close the {self.exchange_name} channel",
                            self.channel)
