"""Presence as one gateway worker keeps it: its open connections, and the users whose
status it sees change.

Presence is announced by whichever gateway sees a user's status change: a connect, a
close once :data:`OFFLINE_GRACE` has passed, or a sweep of a dead gateway's connections;
:mod:`burrow.storage.presence` says why racing gateways still end on the right status.
This worker's part is the heartbeat that vouches for its own connections (and sweeps
those nobody vouches for), the grace after a close, and the activity notes that decide
pushes. Every write is batched (:class:`~burrow.core.batches.Batches`): a gateway
restart brings thousands of connections at once, and one write each made the database
the limit.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pymongo.errors import PyMongoError

from burrow.core import events
from burrow.core.batches import Batches
from burrow.runtime.settings import Settings
from burrow.storage.presence import PresenceStore
from burrow.storage.rooms import RoomStore
from gateway import protocol
from gateway.connection import Connection
from gateway.ephemeral import EphemeralEvents
from gateway.held import Held
from gateway.link import NODE_LOGGER
from queues.events import EventPublisher

log = logging.getLogger(NODE_LOGGER)

# Seconds a closed connection still counts as online: a reload or a reconnect to another
# gateway (and every long-poll, which is a connection per request) must not flash the user
# offline to the room. A constant, not a setting: clients reconnect within a few seconds.
OFFLINE_GRACE = 5.0
SWEEP_PAGE = 1000


class PresenceTracker:
    """*local*: the open connections the heartbeat vouches for, by id; this tracker
    adds and removes them (:meth:`connected`, :meth:`closed`), others only read it."""

    def __init__(self, settings: Settings, presence: PresenceStore, rooms: RoomStore,
                 queue_name: str, local: dict[str, Connection], events: EphemeralEvents,
                 held: Held, backend_events: EventPublisher | None = None) -> None:
        self.settings = settings
        self.presence = presence
        self.rooms = rooms
        self.queue_name = queue_name
        self.local = local
        self.events = events
        self.held = held
        # user.online / user.offline for backend services (docs/events.md), published
        # by whichever gateway's settle flipped the status: once per change.
        self.backend_events = backend_events
        self._expiries: dict[str, asyncio.TimerHandle] = {}  # closed connections in grace
        # Presence writes, one per batch of what arrived together (see burrow.core.batches).
        self._arrivals: Batches[Connection] = Batches(self._record_arrivals, "arrivals")
        self._unsettled: Batches[str] = Batches(self._settle, "presence-settle")
        self._activity: Batches[str] = Batches(
            self._record_activity, "activity", linger=min(1.0, settings.idle_after / 4))

    async def beat(self) -> None:
        """Every third of the presence TTL: vouch for this gateway's connections, then
        sweep those no gateway vouches for (a gateway killed with ``kill -9``)."""
        while True:
            try:
                await self._vouch()
                await self._sweep()
            except PyMongoError as exc:
                log.warning("presence heartbeat failed: %s", exc)
            await asyncio.sleep(self.settings.presence_ttl / 3)

    async def _vouch(self) -> None:
        conn_ids = list(self.local)
        if await self.presence.heartbeat(conn_ids) >= len(conn_ids):
            return
        # Some were swept (this gateway's heartbeat came too late) or never recorded
        # (the database was down at connect): they are open, so put them back.
        missing = set(conn_ids) - await self.presence.existing(conn_ids)
        if missing:
            log.warning("presence of %d open connections restored", len(missing))
        for conn_id in missing:
            conn = self.local.get(conn_id)
            if conn is None:
                continue
            await self.presence.restore(conn_id, conn.user, self.queue_name)
            if conn_id not in self.local and not await self.presence.disconnected(conn_id):
                continue  # closed meanwhile: its own expiry announces it
            self._unsettled.add(conn.user)

    async def _sweep(self) -> None:
        """Delete connections that no gateway vouched for in the TTL; settle their users.

        Every gateway sweeps; the ``seen_at`` condition of the delete and the versioned
        status make concurrent sweeps harmless (a user is announced once per change).
        """
        while True:
            stale = await self.presence.stale(SWEEP_PAGE)
            if stale and await self.presence.expire([conn_id for conn_id, _ in stale]):
                for _, user in stale:
                    self._unsettled.add(user)
            if len(stale) < SWEEP_PAGE:
                return

    async def connected(self, conn: Connection) -> None:
        """Record *conn* as present (with the others that arrive meanwhile: a gateway
        restart brings thousands at once) and settle its user's status."""
        conn.active_written = time.monotonic()
        self.local[conn.id] = conn
        await self._arrivals.put(conn)

    async def _record_arrivals(self, conns: list[Connection]) -> None:
        # Those that closed while they waited are left out: their close found no
        # document to end, so writing one now would keep them present for the TTL.
        open_ = [conn for conn in conns if conn.id in self.local]
        try:
            await self.presence.connected_many([(c.id, c.user) for c in open_],
                                               self.queue_name)
        except PyMongoError as exc:  # presence is advisory: the heartbeat restores it
            log.warning("presence of %d connections not recorded: %s", len(open_), exc)
            return
        for conn in open_:
            self._unsettled.add(conn.user)

    async def closed(self, conn: Connection) -> None:
        """*conn* closed: it counts as online for :data:`OFFLINE_GRACE` more seconds."""
        # First: the heartbeat stops vouching for it. (Not there: a connection that was
        # never presence, such as an HTTP send's.)
        if self.local.pop(conn.id, None) is None:
            return
        try:
            await self.presence.closing(conn.id, OFFLINE_GRACE)
        except PyMongoError as exc:  # not vouched for any more: it expires after the TTL
            log.warning("presence of %s not ended: %s", conn.id, exc)
            return
        self._expiries[conn.id] = asyncio.get_running_loop().call_later(
            OFFLINE_GRACE, self._expire_soon, conn.id, conn.user)

    def _expire_soon(self, conn_id: str, user: str) -> None:
        self._expiries.pop(conn_id, None)
        self.held.hold(asyncio.create_task(self._expire(conn_id, user)))

    async def _expire(self, conn_id: str, user: str) -> None:
        try:
            if not await self.presence.disconnected(conn_id):
                return  # a sweep took it, and settled the user
        except PyMongoError as exc:  # the sweep ends it instead
            log.warning("presence of %s not removed: %s", conn_id, exc)
            return
        self._unsettled.add(user)

    async def _settle(self, users: list[str]) -> None:
        """Count each user's live connections; where that changes their status, tell
        their rooms.

        The versions are taken before the count (see :meth:`PresenceStore.settle`); the
        version and the count are one query each for the whole batch, the settle is one
        write per user because it must tell whether the status changed.
        """
        users = list(dict.fromkeys(users))
        try:
            versions = await self.presence.bump_many(users)
            online = await self.presence.online(users)
        except PyMongoError as exc:
            log.warning("presence of %d users not settled: %s", len(users), exc)
            return
        for user in users:
            try:
                if not await self.presence.settle(user, versions[user], user in online):
                    continue
                rooms = await self.rooms.room_ids(user)
            except PyMongoError as exc:
                log.warning("presence of %s not settled: %s", user, exc)
                continue
            status = "online" if user in online else "offline"
            self.held.hold(asyncio.create_task(
                self._announce(user, status, versions[user], rooms)))
            if self.backend_events is not None:
                self.backend_events.publish_soon([events.presence(
                    user, user in online, versions[user], int(time.time() * 1000))])

    async def _announce(self, user: str, status: str, version: int, rooms: list[str]) -> None:
        await asyncio.gather(*(
            self.events.publish(room, "presence", protocol.presence(room, user, status, version))
            for room in rooms))

    def touch(self, conn: Connection) -> None:
        """The client did something: it is active (noted at most every idle/4 s).

        Written in one update for all the connections active within a second: one write
        per connection cost more database time than storing the messages did.
        """
        now = time.monotonic()
        if now - conn.active_written < max(1.0, self.settings.idle_after / 4):
            return
        conn.active_written = now
        self._activity.add(conn.id)

    async def _record_activity(self, conn_ids: list[str]) -> None:
        # Only open ones: writing seen_at of a connection in its grace would revive it.
        open_ = [c for c in dict.fromkeys(conn_ids) if c in self.local]
        try:
            await self.presence.active(open_)
        except PyMongoError as exc:
            log.warning("activity of %d connections not recorded: %s", len(open_), exc)

    async def close(self) -> None:
        """Stop writing: what is queued for the batches is dropped."""
        for batches in (self._arrivals, self._unsettled, self._activity):
            await batches.close()

    def leave_graces(self) -> None:
        """Stop the timers of the connections in their grace, without ending them.

        Another gateway's sweep (or this one's successor) deletes them and announces who
        went offline, while users who reconnect elsewhere meanwhile never appear offline.
        """
        for timer in self._expiries.values():
            timer.cancel()
        self._expiries.clear()
