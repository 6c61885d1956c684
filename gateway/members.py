"""Who may use a room, as this worker knows it: membership checks and their revocation (G6).

A connection's membership of a room is read once and then cached on the connection, so
that a send or a typing frame costs no database read. What keeps that cache honest lives
here: every gateway hears every room's member events (bound whatever is subscribed: a
removed user's connection may hold the room without a subscription), a removal forgets
the cached answer and ends the user's stream of the room, a broker reconnect (removals
published meanwhile went nowhere) checks every membership again, and an answer that a
removal overtook is not cached.

The same cache holds what a send is enforced with (issue 17: docs/moderation.md,
"Enforcement"): the member's role and ``muted_until`` per connection, the room's
``slow_mode_s`` and ``locked`` per worker. Member events ``muted``, ``unmuted`` and
``role`` forget the user's cached membership of the room on every connection here, ``room``
forgets the room's rules; the next frame reads them again (the event says that something
changed, the database what: two events from two gateways may arrive in either order).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

import aio_pika
import orjson
from pymongo.errors import PyMongoError

from burrow.core import ids, send_rules
from burrow.core.send_rules import Member, RoomRules
from burrow.storage.rooms import RoomStore
from gateway import protocol
from gateway.connection import Connection
from gateway.frames_out import OUT
from gateway.link import NODE_LOGGER, PUBLISH_FAILED, Link
from gateway.protocol import ProtocolError

log = logging.getLogger(NODE_LOGGER)

MEMBER_EVENTS = ids.event_key("*", "member")  # every room's member events
MEMBER_CHANGES = frozenset({"muted", "unmuted", "role"})  # of one user's hold on a room
ROOM_CHANGES = frozenset({"room"})  # of the room's rules (slow mode, lock)
MAX_ROOM_RULES = 10_000  # rooms whose rules a worker keeps; past it the oldest go


class Members:
    """*local*: the open connections of this worker, by id (a removal ends theirs);
    *unsubscribe*: ends a connection's subscription to a room."""

    def __init__(self, rooms: RoomStore, link: Link, local: dict[str, Connection],
                 unsubscribe: Callable[[Connection, str], Awaitable[None]]) -> None:
        self.rooms = rooms
        self.link = link
        self.local = local
        self._unsubscribe = unsubscribe
        # Counts the removals (and reconnects) seen: a subscription that a removal
        # overtook is checked again.
        self.revocations = 0
        # Counts every member event (and reconnect) seen: a read that one overtook may
        # predate it and is not cached.
        self.changes = 0
        self.room_rules: dict[str, RoomRules] = {}  # by room, oldest first

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

    async def check(self, conn: Connection, room: str, client_id: str | None = None) -> Member:
        """The user's membership of *room*; a ``forbidden`` :exc:`ProtocolError` unless
        they are in it (G6).

        The answer is cached on the connection until a member event (or a broker
        reconnect) revokes it; an answer that an event overtook is not cached.
        """
        member = conn.member_of.get(room)
        if member is None:
            member, _ = await self._read(conn, room, client_id, with_room=False)
        return member

    async def standing(self, conn: Connection, room: str,
                       client_id: str | None = None) -> tuple[Member, RoomRules]:
        """:meth:`check`, and the room's rules (slow mode, lock) a send is enforced with:
        both from the caches when they hold them, else one read of each."""
        member = conn.member_of.get(room)
        rules = self.room_rules.get(room)
        if member is None or rules is None:
            member, read = await self._read(conn, room, client_id, with_room=rules is None)
            rules = read or rules
            assert rules is not None
        return member, rules

    async def _read(self, conn: Connection, room: str, client_id: str | None,
                    with_room: bool) -> tuple[Member, RoomRules | None]:
        seen = self.changes
        found = await self.rooms.standing(room, conn.user, with_room)
        if found is None:
            raise ProtocolError("forbidden", f"not a member of room {room}", room=room,
                                client_id=client_id)
        member = send_rules.member_of(found[0])
        rules = None if found[1] is None else send_rules.rules_of(found[1])
        if self.changes == seen:  # no event came meanwhile: the answers are current
            conn.member_of[room] = member
            if rules is not None:
                self._keep_rules(room, rules)
        return member, rules

    def _keep_rules(self, room: str, rules: RoomRules) -> None:
        cached = self.room_rules
        cached.pop(room, None)
        if len(cached) >= MAX_ROOM_RULES:
            del cached[next(iter(cached))]
        cached[room] = rules

    async def on_event(self, room: str, body: bytes) -> None:
        """A member event from ``chat.fanout``: a removal ends the user's hold on *room*;
        a mute, unmute or role change forgets what is cached of it, a change of the room's
        rules forgets those."""
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        self.changes += 1  # whatever it is: a read in flight may predate it
        action, user = event.get("action"), event.get("user")
        if action == "removed":
            self.revocations += 1
            for conn in [c for c in self.local.values() if c.user == user]:
                await self.revoke(conn, room)
        elif action in MEMBER_CHANGES:
            for conn in self.local.values():
                if conn.user == user:
                    conn.member_of.pop(room, None)
        elif action in ROOM_CHANGES:
            self.room_rules.pop(room, None)

    async def revoke(self, conn: Connection, room: str) -> None:
        """*conn*'s user is no longer in *room*: forget the check, end its stream."""
        conn.member_of.pop(room, None)
        if room in conn.subscriptions:
            await self._unsubscribe(conn, room)
            conn.push([protocol.unsubscribed(room, "removed")])
            OUT["unsubscribed"].inc()

    async def revalidate(self) -> None:
        """Forget every cached membership and end the subscriptions whose membership is
        gone: one read of the rooms of each user with a subscription here."""
        self.revocations += 1
        self.changes += 1
        self.room_rules.clear()  # mutes, locks and slow modes changed meanwhile too
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
