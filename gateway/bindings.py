"""Which rooms this worker's queue is bound to, and which local subscriptions each has.

A gateway receives a room's fan-out (``room.<room>.*`` on ``chat.fanout``) only while one
of its clients is subscribed to it: bound on the first subscription, unbound after the
last. The bind is the delicate part, and why this is a module of its own: aiormq closes
the whole channel (and the node's queue and consumer with it) when an RPC is cancelled in
flight, so binds and unbinds run in tasks nobody cancels, one at a time per room, and
callers only stop waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from burrow.core import ids
from burrow.runtime.broker import BROKER_ERRORS
from burrow.runtime.settings import Settings
from gateway.connection import Subscription
from gateway.held import Held
from gateway.link import NODE_LOGGER, PUBLISH_FAILED, Link, Unavailable

log = logging.getLogger(NODE_LOGGER)


class Bindings:
    """The rooms bound, and the subscriptions of each room on this worker."""

    def __init__(self, settings: Settings, link: Link, held: Held) -> None:
        self.settings = settings
        self.link = link
        self.held = held
        self.subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.bound: set[str] = set()
        self._binding: dict[str, asyncio.Task[None]] = {}  # binds in flight, by room

    def local(self, room: str) -> tuple[Subscription, ...]:
        """The subscriptions to *room* on this worker, now (fan-out may change them)."""
        return tuple(self.subscribers.get(room, ()))

    def add(self, sub: Subscription) -> None:
        self.subscribers[sub.room].add(sub)

    async def remove(self, sub: Subscription) -> None:
        """Forget *sub*; unbind its room if that was its last subscription here."""
        room = sub.room
        self.subscribers[room].discard(sub)
        if not self.subscribers[room]:
            # shielded: a cancelled unbind would close the channel (see bind)
            await asyncio.shield(self.held.hold(asyncio.create_task(self._unbind(room))))

    async def bind(self, room: str) -> None:
        """Bind *room* to this node's queue; :exc:`Unavailable` if not done in time.

        The bind runs in a task of its own that nobody cancels, and callers only stop
        waiting for it: aiormq closes the whole channel when an RPC is cancelled in
        flight (a timeout here, or Sanic cancelling the handler of a client that
        left), and this node's queue and consumer went with it.
        """
        if room in self.bound:
            return
        binding = self._binding.get(room)
        if binding is None:
            binding = self._binding[room] = self.held.hold(
                asyncio.create_task(self._bind_now(room), name=f"bind-{room}"))
        try:
            async with asyncio.timeout(self.settings.send_timeout):
                await asyncio.shield(binding)
        except TimeoutError:
            raise Unavailable("the broker is not reachable") from None
        if room not in self.bound:
            raise Unavailable("the broker is not reachable")

    async def _bind_now(self, room: str) -> None:
        try:
            async with self.locks[room]:
                if room in self.bound:
                    return
                assert self.link.queue is not None and self.link.fanout is not None
                await self.link.queue.bind(self.link.fanout, routing_key=ids.event_key(room, "*"))
                self.bound.add(room)
        except PUBLISH_FAILED as exc:  # the subscriber is told unavailable, and retries
            log.warning("room %s not bound: %s", room, exc)
        finally:
            self._binding.pop(room, None)

    async def _unbind(self, room: str) -> None:
        async with self.locks[room]:
            if room in self.bound and not self.subscribers[room]:
                assert self.link.queue is not None and self.link.fanout is not None
                self.bound.discard(room)
                self.subscribers.pop(room, None)
                try:
                    await self.link.queue.unbind(self.link.fanout,
                                                 routing_key=ids.event_key(room, "*"))
                except BROKER_ERRORS as exc:  # gone with the connection
                    log.debug("unbind %s: %s", room, exc)

    async def rebind(self) -> None:
        """Bind every bound room again, after a broker reconnect.

        aio-pika's robust queue restores the bindings it made, but a fault run once
        left one room of twenty unbound after a broker restart, its subscribers
        waiting for messages that were stored and acked. Binding twice is harmless,
        so the node does not rely on the restore; a bind that fails here is retried
        on the next reconnect.
        """
        assert self.link.queue is not None and self.link.fanout is not None
        for room in list(self.bound):
            async with self.locks[room]:
                if room not in self.bound:
                    continue
                try:  # not bounded by a timeout: a cancelled bind closes the channel
                    await self.link.queue.bind(self.link.fanout,
                                               routing_key=ids.event_key(room, "*"))
                except PUBLISH_FAILED as exc:
                    log.warning("room %s not bound again after a reconnect: %s", room, exc)
