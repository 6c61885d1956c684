"""Who may use a room, as this worker knows it: membership checks and their revocation (G6).

A connection's membership of a room is read once and then cached on the connection, so
that a send or a typing frame costs no database read. What keeps that cache honest lives
here: every gateway hears every room's member events (bound whatever is subscribed: a
removed user's connection may hold the room without a subscription), a removal forgets
the cached answer and ends the user's stream of the room, a broker reconnect (removals
published meanwhile went nowhere) checks every membership again, and an answer that a
removal overtook is not cached.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

import aio_pika
import orjson
from pymongo.errors import PyMongoError

from burrow.core import ids
from burrow.storage.rooms import RoomStore
from gateway import protocol
from gateway.connection import Connection
from gateway.frames_out import OUT
from gateway.link import NODE_LOGGER, PUBLISH_FAILED, Link
from gateway.protocol import ProtocolError

log = logging.getLogger(NODE_LOGGER)

MEMBER_EVENTS = ids.event_key("*", "member")  # every room's member events


class Members:
    """*local*: the open connections of this worker, by id (a removal ends theirs);
    *unsubscribe*: ends a connection's subscription to a room."""

    def __init__(self, rooms: RoomStore, link: Link, local: dict[str, Connection],
                 unsubscribe: Callable[[Connection, str], Awaitable[None]]) -> None:
        self.rooms = rooms
        self.link = link
        self.local = local
        self._unsubscribe = unsubscribe
        # Counts the removals (and reconnects) seen: a membership read that a removal
        # overtook is not cached, and a subscription it overtook is checked again.
        self.revocations = 0

    async def bind(self) -> None:
        """Bind every room's member events to this node's queue."""
        assert self.link.queue is not None and self.link.fanout is not None
        await self.link.queue.bind(self.link.fanout, routing_key=MEMBER_EVENTS)

    async def rebind(self) -> None:
        """:meth:`bind` again after a broker reconnect; a failure is retried at the next."""
        try:
            await self.bind()
        except PUBLISH_FAILED as exc:
            log.warning("member events not bound again after a reconnect: %s", exc)

    async def check(self, conn: Connection, room: str, client_id: str | None = None) -> None:
        """Raise a ``forbidden`` :exc:`ProtocolError` unless the user is in *room* (G6).

        The answer is cached on the connection until a member event (or a broker
        reconnect) revokes it; an answer that a removal overtook is not cached.
        """
        if room in conn.member_of:
            return
        seen = self.revocations
        if await self.rooms.role(room, conn.user) is None:
            raise ProtocolError("forbidden", f"not a member of room {room}", room=room,
                                client_id=client_id)
        if self.revocations == seen:
            conn.member_of.add(room)

    async def on_event(self, room: str, body: bytes) -> None:
        """A member event from ``chat.fanout``: a removal ends the user's hold on *room*."""
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or event.get("action") != "removed":
            return
        user = event.get("user")
        self.revocations += 1
        for conn in [c for c in self.local.values() if c.user == user]:
            await self.revoke(conn, room)

    async def revoke(self, conn: Connection, room: str) -> None:
        """*conn*'s user is no longer in *room*: forget the check, end its stream."""
        conn.member_of.discard(room)
        if room in conn.subscriptions:
            await self._unsubscribe(conn, room)
            conn.push([protocol.unsubscribed(room, "removed")])
            OUT["unsubscribed"].inc()

    async def revalidate(self) -> None:
        """Forget every cached membership and end the subscriptions whose membership is
        gone: one read of the rooms of each user with a subscription here."""
        self.revocations += 1
        users: dict[str, list[Connection]] = defaultdict(list)
        for conn in list(self.local.values()):
            conn.member_of.clear()
            if conn.subscriptions:
                users[conn.user].append(conn)
        for user, conns in users.items():
            try:
                rooms = set(await self.rooms.room_ids(user))
            except PyMongoError as exc:  # database down too: end them, clients resume
                log.warning("memberships of %s not checked after a reconnect: %s", user, exc)
                for conn in conns:
                    conn.close(protocol.INTERNAL_ERROR, "could not check memberships: resume")
                continue
            for conn in conns:
                for room in [r for r in conn.subscriptions if r not in rooms]:
                    await self.revoke(conn, room)

    async def publish(self, room: str, user: str, action: str,
                      extra: dict[str, object] | None = None) -> None:
        """Tell every gateway that *user* joined or left *room* (they drop its streams)."""
        await self.link.ready()
        assert self.link.fanout is not None
        await self.link.fanout.publish(
            aio_pika.Message(orjson.dumps({**(extra or {}), "type": "member", "room": room,
                                           "user": user, "action": action}),
                             content_type="application/json"),
            ids.event_key(room, "member"), mandatory=False)
