"""Presence and typing events: ephemeral, where messages are durable.

They travel the way messages do (``room.<room>.presence`` / ``.typing`` on
``chat.fanout``) but are never stored, carry no seq and are never replayed: one that the
broker loses is gone, nothing retries it. So they get none of the messages' machinery
(no cursor, no ack, no gap fill): published here, handed straight to the local
subscribers of the room, except the user's own connections. Typing starts here too,
throttled per connection and room; presence (:mod:`gateway.presence`) decides when a
status changed and publishes through this.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aio_pika

from burrow.core import ids, send_rules
from burrow.runtime.settings import Settings
from gateway import protocol
from gateway.bindings import Bindings
from gateway.connection import Connection
from gateway.frames_out import OUT
from gateway.held import Held
from gateway.link import NODE_LOGGER, PUBLISH_FAILED, Link
from gateway.members import Members

log = logging.getLogger(NODE_LOGGER)


class Throttle:
    """At most one event per (owner, key) per *interval* seconds; the rest are dropped.

    Dropped, not delayed: a typing indicator that arrives late is wrong, and the client
    repeats it while the user keeps typing.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last: dict[str, dict[str, float]] = {}

    def allow(self, owner: str, key: str, now: float) -> bool:
        times = self.last.setdefault(owner, {})
        last = times.get(key)
        if last is not None and now - last < self.interval:
            return False
        times[key] = now
        return True

    def forget(self, owner: str) -> None:
        self.last.pop(owner, None)


class EphemeralEvents:
    """Publish presence and typing events; pass on those ``chat.fanout`` delivers."""

    def __init__(self, settings: Settings, link: Link, bindings: Bindings, members: Members,
                 held: Held) -> None:
        self.settings = settings
        self.link = link
        self.bindings = bindings
        self.members = members
        self.held = held
        self.typing_throttle = Throttle(settings.typing_interval)

    async def publish(self, room: str, kind: str, frame: str,
                      expiration: float | None = None) -> None:
        """Publish an ephemeral event; it is lost if the broker is down (nothing retries)."""
        try:
            await self.link.ready()
            assert self.link.fanout is not None
            await self.link.fanout.publish(
                aio_pika.Message(frame.encode(), content_type="application/json",
                                 expiration=expiration),
                ids.event_key(room, kind), mandatory=False, timeout=self.settings.send_timeout)
        except PUBLISH_FAILED as exc:  # Unavailable too
            log.warning("%s event of %s not published: %s", kind, room, exc)

    def deliver(self, room: str, kind: str, body: bytes) -> None:
        """Hand a presence or typing event to every local subscriber of the room but the
        user's own connections: they know they are typing, and that they are online."""
        event = protocol.event(kind, room, body)
        if event is None:
            log.warning("malformed %s event on room %s", kind, room)
            return
        frame, user = event
        sent = 0
        for sub in self.bindings.local(room):
            if sub.connection.user != user:
                sub.connection.push([frame])
                sent += 1
        OUT[kind].inc(sent)

    async def typing(self, conn: Connection, room: str) -> None:
        """Tell the room's other members that *conn*'s user is typing, at most once per
        ``typing_interval`` per connection and room; extra frames are dropped silently,
        and so are those of a muted member or of a plain member of a locked room
        (burrow/core/send_rules.py: no error, the send refusal says why)."""
        member, rules = await self.members.standing(conn, room)
        if not send_rules.may_type(member, rules, conn.is_admin, int(time.time() * 1000)):
            return
        if not self.typing_throttle.allow(conn.id, room, time.monotonic()):
            return
        # Not awaited: the client's next frame must not wait for a broker confirm.
        self.held.hold(asyncio.create_task(self.publish(
            room, "typing", protocol.typing(room, conn.user),
            expiration=self.settings.typing_interval)))

    def forget(self, conn: Connection) -> None:
        """*conn* closed: drop its typing times."""
        self.typing_throttle.forget(conn.id)
