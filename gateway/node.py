"""The chat side of one gateway worker: subscriptions, sends, acks and fan-out.

The worker has one exclusive queue, ``gateway.<instance>.<pid>``, bound to ``chat.reply``
by its own name (acks) and to ``chat.fanout`` with ``room.<room>.*`` for exactly the rooms
it has local subscribers in (bound on the first, unbound after the last). Every delivery
is handed to the local subscribers of its room through their :class:`~burrow.core.seam.Cursor`,
which makes delivery exactly-once and in order (G2, G4); a gap (messages lost while the
broker restarted) is filled from the database. The frame text is decoded once per
delivery, whatever the number of receivers.

Presence and typing events travel the same way (``room.<room>.presence`` / ``.typing``)
but are ephemeral: never stored, no seq, not replayed, straight to the local subscribers.
Presence is announced by whichever gateway sees a user's status change (its connect, its
close after :data:`OFFLINE_GRACE`, or a sweep of a dead gateway's connections); see
:mod:`burrow.storage.presence` for why racing gateways still end on the right status.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

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
from pymongo.errors import PyMongoError

from burrow.core import ids
from burrow.core.batches import Batches
from burrow.core.envelopes import ACKS_TYPE, BATCHED_ACKS, STORED_AT, Send, decode_acks
from burrow.core.seam import Cursor, TooFarBehind
from burrow.runtime import metrics
from burrow.runtime.broker import BROKER_ERRORS
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from burrow.storage import database
from burrow.storage.messages import MessageStore
from burrow.storage.presence import PresenceStore
from burrow.storage.rooms import RoomStore
from gateway import protocol
from gateway.connection import Connection, Subscription
from gateway.protocol import ProtocolError
from queues import topology

log = logging.getLogger(__name__)

REPLAY_PAGE = 500
# Seconds a closed connection still counts as online: a reload or a reconnect to another
# gateway (and every long-poll, which is a connection per request) must not flash the user
# offline to the room. A constant, not a setting: clients reconnect within a few seconds.
OFFLINE_GRACE = 5.0
SWEEP_PAGE = 1000
READY_INTERVAL = 1.0  # seconds between updates of burrow_gateway_ready

# Children bound once (``labels()`` takes a lock and a dict lookup on every call, and
# fan-out counts every message), for every frame type the gateway sends; the transports
# count theirs here too.
OUT = {kind: metrics.GATEWAY_FRAMES_OUT.labels(kind) for kind in (
    "message", "ack", "error", "subscribed", "unsubscribed", "presence", "typing", "pong")}


MEMBER_EVENTS = ids.event_key("*", "member")  # every room's member events


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


class Unavailable(Exception):
    """The broker link is not up (yet); the client may retry."""


# A publish (or bind) that got no answer: the broker is away, or too slow to answer.
PUBLISH_FAILED: tuple[type[Exception], ...] = (Unavailable, *BROKER_ERRORS, TimeoutError)


@dataclass
class PendingSend:
    connection: Connection
    client_id: str
    room: str
    arrived: float  # perf_counter() when the send frame arrived: burrow_gateway_ack_seconds
    timer: asyncio.TimerHandle | None = None


class Node:
    """Create in ``before_server_start``, :meth:`start`; :meth:`stop` at shutdown."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        db = database.database(runtime.db)
        self.messages = MessageStore(db)
        self.rooms = RoomStore(db)
        self.presence = PresenceStore(db, settings.presence_ttl)
        self.queue_name = f"gateway.{settings.instance_id}.{os.getpid()}"
        self.subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self.bind_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.bound: set[str] = set()
        self._binding: dict[str, asyncio.Task[None]] = {}  # binds in flight, by room
        self.pending: dict[str, PendingSend] = {}
        self.local: dict[str, Connection] = {}  # open connections the heartbeat vouches for
        self.typing_throttle = Throttle(settings.typing_interval)
        self._expiries: dict[str, asyncio.TimerHandle] = {}  # closed connections in grace
        # Counts the removals (and reconnects) seen: a membership read that a removal
        # overtook is not cached, and a subscription it overtook is checked again.
        self.revocations = 0
        self.channel: AbstractRobustChannel | None = None
        self._verify_channel: AbstractChannel | None = None
        self.queue: AbstractQueue | None = None
        self.ingress: AbstractExchange | None = None
        self.fanout: AbstractExchange | None = None
        self._ready = asyncio.Event()
        self._setup: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._readiness: asyncio.Task[None] | None = None
        # Presence writes, one per batch of what arrived together (see burrow.core.batches).
        self._arrivals: Batches[Connection] = Batches(self._record_arrivals, "arrivals")
        self._unsettled: Batches[str] = Batches(self._settle, "presence-settle")
        self._activity: Batches[str] = Batches(
            self._record_activity, "activity", linger=min(1.0, settings.idle_after / 4))

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._setup = asyncio.create_task(self._open(), name="gateway-node")
        self._heartbeat = asyncio.create_task(self._beat(), name="presence-heartbeat")
        self._readiness = asyncio.create_task(self._export_ready(), name="gateway-ready")

    async def _open(self) -> None:
        connection = await self.runtime.broker.opened()
        # on_return_raises: a send that no shard queue takes is an error, not a silent drop.
        self.channel = await connection.channel(on_return_raises=True)
        self.ingress = await self.channel.get_exchange(topology.INGRESS, ensure=False)
        self.fanout = await self.channel.get_exchange(topology.FANOUT, ensure=False)
        reply = await self.channel.get_exchange(topology.REPLY, ensure=False)
        # Exclusive: it goes with this process's connection. Not auto-delete: that would
        # also delete it when its consumer goes with a closed channel, which the robust
        # channel then cannot restore (it re-binds a queue that no longer exists).
        self.queue = await self.channel.declare_queue(
            self.queue_name, exclusive=True, arguments={"x-queue-type": "classic"})
        await self.queue.bind(reply, routing_key=self.queue_name)
        # Every room's member events, whatever is subscribed here: a removed user's
        # connection may hold the room without a subscription (it sent or typed).
        await self.queue.bind(self.fanout, routing_key=MEMBER_EVENTS)
        # no_ack: the queue is this process's alone and what it misses is replayed from
        # the database (gap fill), so broker-side acks would buy nothing but latency.
        await self.queue.consume(self._on_delivery, no_ack=True)
        connection.reconnect_callbacks.add(self._on_reconnect)  # type: ignore[arg-type]
        self._ready.set()
        metrics.gateway_ready().set(1 if self.is_ready else 0)  # not a second later
        log.info("gateway node %s ready", self.queue_name)

    @property
    def is_ready(self) -> bool:
        """The node can subscribe and send now: set up, and the broker link is up."""
        return self._ready.is_set() and self.runtime.broker.is_up

    async def _export_ready(self) -> None:
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

    async def stop(self) -> None:
        for task in (self._setup, self._heartbeat, self._readiness):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for batches in (self._arrivals, self._unsettled, self._activity):
            await batches.close()
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        # Connections in their grace are left to expire: another gateway's sweep (or this
        # one's successor) deletes them and announces who went offline, while users who
        # reconnect elsewhere meanwhile never appear offline.
        for timer in self._expiries.values():
            timer.cancel()
        self._expiries.clear()
        for pending in self.pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        if self.channel is not None and not self.channel.is_closed:
            await self.channel.close()

    def _on_reconnect(self, connection: AbstractRobustConnection) -> None:
        # The exclusive queue died with the old connection, and whatever was fanned out
        # meanwhile with it: bind every room again, then replay them from the database.
        log.info("broker reconnected: catching up %d rooms", len(self.subscribers))
        self._hold(asyncio.create_task(self._catch_up()))

    async def _catch_up(self) -> None:
        """Bind every subscribed room again, then replay each subscription.

        aio-pika's robust queue restores the bindings it made, but a fault run once
        left one room of twenty unbound after a broker restart, its subscribers
        waiting for messages that were stored and acked. Binding twice is harmless,
        so the node does not rely on the restore; a bind that fails here is retried
        on the next reconnect, and the replay still runs.
        """
        assert self.queue is not None and self.fanout is not None
        # Removals published while this node was cut off went nowhere: check every
        # membership it relies on again (G6 across a broker outage).
        await self._revalidate()
        try:
            await self.queue.bind(self.fanout, routing_key=MEMBER_EVENTS)
        except PUBLISH_FAILED as exc:
            log.warning("member events not bound again after a reconnect: %s", exc)
        for room in list(self.bound):
            async with self.bind_locks[room]:
                if room not in self.bound:
                    continue
                try:  # not bounded by a timeout: a cancelled bind closes the channel
                    await self.queue.bind(self.fanout, routing_key=ids.event_key(room, "*"))
                except PUBLISH_FAILED as exc:
                    log.warning("room %s not bound again after a reconnect: %s", room, exc)
        for subscriptions in self.subscribers.values():
            for sub in subscriptions:
                self._replay_soon(sub)

    # -- subscriptions ---------------------------------------------------------------

    async def check_member(self, conn: Connection, room: str,
                           client_id: str | None = None) -> None:
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

    async def subscribe(self, conn: Connection, room: str, since: int | None) -> None:
        """Bind, then replay what follows *since* from the database, then go live."""
        seen = self.revocations
        await self.check_member(conn, room)
        await self.ready()
        if room in conn.subscriptions:
            await self.unsubscribe(conn, room)
        await self._bind(room)
        last = since if since is not None else (await self.messages.last_seqs([room]))[room]
        sub = Subscription(conn, room, Cursor(last))
        conn.subscriptions[room] = sub
        self.subscribers[room].add(sub)
        if self.revocations != seen and await self.rooms.role(room, conn.user) is None:
            # removed while this subscription was being set up: its event found
            # nothing to end yet
            await self._revoke(conn, room)
            return
        conn.push([protocol.subscribed(room, last)])
        OUT["subscribed"].inc()
        await self._replay(sub)

    async def unsubscribe(self, conn: Connection, room: str) -> None:
        sub = conn.subscriptions.pop(room, None)
        if sub is None:
            return
        if sub.replay is not None:
            sub.replay.cancel()
        self.subscribers[room].discard(sub)
        if not self.subscribers[room]:
            # shielded: a cancelled unbind would close the channel (see _bind)
            await asyncio.shield(self._hold(asyncio.create_task(self._unbind(room))))

    async def drop(self, conn: Connection) -> None:
        """Forget a closed connection."""
        for room in list(conn.subscriptions):
            await self.unsubscribe(conn, room)
        for key in [k for k, p in self.pending.items() if p.connection is conn]:
            pending = self.pending.pop(key)
            if pending.timer is not None:
                pending.timer.cancel()
        self.typing_throttle.forget(conn.id)
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

    # -- presence --------------------------------------------------------------------

    async def _beat(self) -> None:
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

    def _expire_soon(self, conn_id: str, user: str) -> None:
        self._expiries.pop(conn_id, None)
        self._hold(asyncio.create_task(self._expire(conn_id, user)))

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
            self._hold(asyncio.create_task(self._announce(user, status, versions[user], rooms)))

    async def _announce(self, user: str, status: str, version: int, rooms: list[str]) -> None:
        await asyncio.gather(*(
            self._publish_event(room, "presence", protocol.presence(room, user, status, version))
            for room in rooms))

    async def _publish_event(self, room: str, kind: str, frame: str,
                             expiration: float | None = None) -> None:
        """Publish an ephemeral event; it is lost if the broker is down (nothing retries)."""
        try:
            await self.ready()
            assert self.fanout is not None
            await self.fanout.publish(
                aio_pika.Message(frame.encode(), content_type="application/json",
                                 expiration=expiration),
                ids.event_key(room, kind), mandatory=False, timeout=self.settings.send_timeout)
        except PUBLISH_FAILED as exc:  # Unavailable too
            log.warning("%s event of %s not published: %s", kind, room, exc)

    async def typing(self, conn: Connection, room: str) -> None:
        """Tell the room's other members that *conn*'s user is typing, at most once per
        ``typing_interval`` per connection and room; extra frames are dropped silently."""
        await self.check_member(conn, room)
        if not self.typing_throttle.allow(conn.id, room, time.monotonic()):
            return
        # Not awaited: the client's next frame must not wait for a broker confirm.
        self._hold(asyncio.create_task(self._publish_event(
            room, "typing", protocol.typing(room, conn.user),
            expiration=self.settings.typing_interval)))

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

    def _hold(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    def drop_soon(self, conn: Connection) -> asyncio.Task[None]:
        """:meth:`drop` as a task we hold, so it ends even when its caller is cancelled."""
        return self._hold(asyncio.create_task(self.drop(conn)))

    async def _bind(self, room: str) -> None:
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
            binding = self._binding[room] = self._hold(
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
            async with self.bind_locks[room]:
                if room in self.bound:
                    return
                assert self.queue is not None and self.fanout is not None
                await self.queue.bind(self.fanout, routing_key=ids.event_key(room, "*"))
                self.bound.add(room)
        except PUBLISH_FAILED as exc:  # the subscriber is told unavailable, and retries
            log.warning("room %s not bound: %s", room, exc)
        finally:
            self._binding.pop(room, None)

    async def _unbind(self, room: str) -> None:
        async with self.bind_locks[room]:
            if room in self.bound and not self.subscribers[room]:
                assert self.queue is not None and self.fanout is not None
                self.bound.discard(room)
                self.subscribers.pop(room, None)
                try:
                    await self.queue.unbind(self.fanout, routing_key=ids.event_key(room, "*"))
                except BROKER_ERRORS as exc:  # gone with the connection
                    log.debug("unbind %s: %s", room, exc)

    # -- replay from the database ----------------------------------------------------

    async def _replay(self, sub: Subscription) -> None:
        cursor = sub.cursor
        cursor.start_replay()
        while True:
            page = await self.messages.history(sub.room, after=cursor.last, limit=REPLAY_PAGE)
            frames = cursor.replayed((m.seq, m.frame().decode()) for m in page)
            sub.connection.push(frames)
            OUT["message"].inc(len(frames))
            if sub.connection.close_code is not None:
                return  # closed (too slow, a full long-poll answer): it resumes from its seq
            if len(page) < REPLAY_PAGE:
                break
        frames = cursor.caught_up()
        sub.connection.push(frames)
        OUT["message"].inc(len(frames))

    def _replay_soon(self, sub: Subscription) -> None:
        if sub.replay is None or sub.replay.done():
            sub.replay = asyncio.create_task(self._replay_guarded(sub))

    async def _replay_guarded(self, sub: Subscription) -> None:
        try:
            await self._replay(sub)
        except PyMongoError as exc:  # database down: the client resumes after a reconnect
            log.warning("replay of %s for %s failed: %s", sub.room, sub.connection.id, exc)
            sub.connection.close(protocol.INTERNAL_ERROR, "could not catch up: resume")

    # -- sends -----------------------------------------------------------------------

    async def send(self, conn: Connection, frame: protocol.SendFrame,
                   arrived: float | None = None) -> None:
        """Publish a send with a confirm; its ack arrives later through ``chat.reply``.

        *arrived* is the ``perf_counter()`` of the frame's arrival (default: now), the
        start of its ``burrow_gateway_ack_seconds``.
        """
        if arrived is None:
            arrived = time.perf_counter()
        await self.check_member(conn, frame.room, frame.client_id)
        await self.ready()
        assert self.ingress is not None
        correlation_id = uuid.uuid4().hex
        pending = PendingSend(conn, frame.client_id, frame.room, arrived)
        self.pending[correlation_id] = pending
        message = aio_pika.Message(
            Send(frame.room, conn.user, frame.client_id, frame.body).to_json(),
            content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex, correlation_id=correlation_id,
            reply_to=self.queue_name, headers={BATCHED_ACKS: 1})
        try:
            await self.ingress.publish(message, ids.message_key(frame.room),
                                                 timeout=self.settings.send_timeout)
        except PUBLISH_FAILED as exc:
            self.pending.pop(correlation_id, None)
            log.warning("send %s of %s not confirmed: %s", frame.client_id, conn.user, exc)
            raise ProtocolError("unavailable", "the message was not accepted; retry with the "
                                "same client_id", client_id=frame.client_id,
                                room=frame.room) from None
        loop = asyncio.get_running_loop()
        # Waiting for the ack (stored) is bounded: the client gets a retryable error and
        # retries with the same client_id, which the sequencer dedups (G3).
        pending.timer = loop.call_later(self.settings.send_timeout, self._send_timed_out,
                                        correlation_id)

    def _send_timed_out(self, correlation_id: str) -> None:
        pending = self.pending.get(correlation_id)
        if pending is None:
            return
        pending.timer = None
        pending.connection.push([protocol.error(
            "timeout", "no ack in time; retry with the same client_id",
            client_id=pending.client_id, room=pending.room)])
        OUT["error"].inc()
        # Keep the entry a while: a late ack is still worth forwarding.
        asyncio.get_running_loop().call_later(
            10 * self.settings.send_timeout, self.pending.pop, correlation_id, None)

    async def pending_acks(self) -> None:
        """Wait until every send that this gateway published has its ack (or timed out)."""
        while any(p.timer is not None for p in self.pending.values()):
            await asyncio.sleep(0.01)

    # -- deliveries from the broker --------------------------------------------------

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        if message.exchange == topology.REPLY:
            self._on_ack(message)
            return
        room = ids.room_of_key(message.routing_key or "")
        if room is None:
            return
        kind = (message.routing_key or "").rsplit(".", 1)[-1]
        if kind == "msg":
            self._on_message(room, message)
        elif kind == "member":
            await self._on_member_event(room, message.body)
        elif kind in ("presence", "typing"):
            self._on_event(room, kind, message.body)

    def _on_ack(self, message: AbstractIncomingMessage) -> None:
        if message.type == ACKS_TYPE:
            for correlation_id, frame in decode_acks(message.body):
                self._answer(correlation_id, frame)
        else:
            self._answer(message.correlation_id or "", message.body.decode())

    def _answer(self, correlation_id: str, ack: str) -> None:
        pending = self.pending.pop(correlation_id, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        pending.connection.push([ack])
        OUT["ack"].inc()
        if log.isEnabledFor(logging.DEBUG):  # per message: only when asked for
            frame = orjson.loads(ack)
            log.debug("send answered", extra={
                "msg_id": frame.get("id"), "seq": frame.get("seq"), "room": pending.room,
                "client_id": pending.client_id, "user": pending.connection.user,
                "conn": pending.connection.id})
        metrics.GATEWAY_ACK_SECONDS.observe(time.perf_counter() - pending.arrived)

    def _on_message(self, room: str, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        seq = headers.get("seq")
        if not isinstance(seq, int):
            log.error("message without a seq header on %s", message.routing_key)
            return
        frame = message.body.decode()  # once, for every local subscriber
        sent = 0
        for sub in tuple(self.subscribers.get(room, ())):
            try:
                frames = sub.cursor.live(seq, frame)
            except TooFarBehind:
                sub.connection.close(protocol.SLOW_CLIENT, "too far behind: resume")
                continue
            if frames:
                sub.connection.push(frames)
                sent += len(frames)
            if sub.cursor.needs_replay:
                self._replay_soon(sub)
        # Once per message, not per client: the metrics cost nothing per subscriber.
        OUT["message"].inc(sent)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("message delivered to %d local frames", sent, extra={
                "msg_id": message.message_id, "room": room, "seq": seq})
        stored_at = headers.get(STORED_AT)
        if sent and isinstance(stored_at, float | int) and not isinstance(stored_at, bool):
            # Wall clocks of two hosts: skew between them shows up here (NTP keeps it
            # well under the buckets that matter on one host; see docs/metrics.md).
            metrics.GATEWAY_FANOUT_SECONDS.observe(max(0.0, time.time() - stored_at))

    def _on_event(self, room: str, kind: str, body: bytes) -> None:
        """Hand a presence or typing event to every local subscriber of the room but the
        user's own connections: they know they are typing, and that they are online."""
        event = protocol.event(kind, room, body)
        if event is None:
            log.warning("malformed %s event on room %s", kind, room)
            return
        frame, user = event
        sent = 0
        for sub in tuple(self.subscribers.get(room, ())):
            if sub.connection.user != user:
                sub.connection.push([frame])
                sent += 1
        OUT[kind].inc(sent)

    async def _on_member_event(self, room: str, body: bytes) -> None:
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or event.get("action") != "removed":
            return
        user = event.get("user")
        self.revocations += 1
        for conn in [c for c in self.local.values() if c.user == user]:
            await self._revoke(conn, room)

    async def _revoke(self, conn: Connection, room: str) -> None:
        """*conn*'s user is no longer in *room*: forget the check, end its stream."""
        conn.member_of.discard(room)
        if room in conn.subscriptions:
            await self.unsubscribe(conn, room)
            conn.push([protocol.unsubscribed(room, "removed")])
            OUT["unsubscribed"].inc()

    async def _revalidate(self) -> None:
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
                    await self._revoke(conn, room)

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

    async def publish_member_event(self, room: str, user: str, action: str) -> None:
        """Tell every gateway that *user* joined or left *room* (they drop its streams)."""
        await self.ready()
        assert self.fanout is not None
        await self.fanout.publish(
            aio_pika.Message(orjson.dumps({"type": "member", "room": room, "user": user,
                                           "action": action}),
                             content_type="application/json"),
            ids.event_key(room, "member"), mandatory=False)
