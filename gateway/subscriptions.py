"""Subscriptions: bind, replay from the database, then go live; the resume seam (G2, G4).

Every transport's subscribe comes here. Each subscription follows its room through a
:class:`~burrow.core.seam.Cursor`, where what the fan-out delivers and what the database
replays meet: a client gets every message once and in order, and a gap (messages lost
while the broker restarted) is filled from the database. This is the one place that
feeds cursors, so that the order of bind, replay and live delivery cannot differ between
a subscribe, a catch-up after a reconnect and a gap.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aio_pika.abc import AbstractIncomingMessage
from pymongo.errors import PyMongoError

from burrow.core.envelopes import CHANGE_KIND, STORED_AT, v1_frame
from burrow.core.seam import Cursor, TooFarBehind
from burrow.runtime import metrics
from burrow.storage.messages import MessageStore
from gateway import protocol
from gateway.bindings import Bindings
from gateway.connection import Connection, Subscription
from gateway.frames_out import OUT
from gateway.link import NODE_LOGGER, Link
from gateway.members import Members

log = logging.getLogger(NODE_LOGGER)

REPLAY_PAGE = 500


class Subscriptions:
    """Subscribe and unsubscribe connections; hand them the messages of their rooms."""

    def __init__(self, link: Link, bindings: Bindings, members: Members,
                 messages: MessageStore) -> None:
        self.link = link
        self.bindings = bindings
        self.members = members
        self.messages = messages

    async def subscribe(self, conn: Connection, room: str, since: int | None,
                        v: int = 1) -> None:
        """Bind, then replay what follows *since* from the database, then go live."""
        members = self.members
        seen = members.revocations
        await members.check(conn, room)
        await self.link.ready()
        if room in conn.subscriptions:
            await self.unsubscribe(conn, room)
        await self.bindings.bind(room)
        last = since if since is not None else (await self.messages.last_seqs([room]))[room]
        sub = Subscription(conn, room, Cursor(last), v)
        conn.subscriptions[room] = sub
        self.bindings.add(sub)
        if members.revocations != seen and await members.rooms.role(room, conn.user) is None:
            # removed while this subscription was being set up: its event found
            # nothing to end yet
            await members.revoke(conn, room)
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
        await self.bindings.remove(sub)

    def on_message(self, room: str, message: AbstractIncomingMessage) -> None:
        """A stored message from ``chat.fanout``, to every local subscriber of *room*."""
        headers = message.headers or {}
        seq = headers.get("seq")
        if not isinstance(seq, int):
            log.error("message without a seq header on %s", message.routing_key)
            return
        frame = message.body.decode()  # once, for every local subscriber
        v1 = frame
        if headers.get(CHANGE_KIND) is not None:  # a change event: v1 gets a message frame
            try:
                v1 = orjson.dumps(v1_frame(orjson.loads(frame))).decode()
            except orjson.JSONDecodeError:
                log.error("change event %s is not JSON", message.message_id)
                return
        sent = 0
        for sub in self.bindings.local(room):
            try:
                frames = sub.cursor.live(seq, frame if sub.v >= 2 else v1)
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

    def replay_all(self) -> None:
        """Replay every subscription here (after a broker reconnect: what was fanned out
        meanwhile went with the old connection)."""
        for subscriptions in self.bindings.subscribers.values():
            for sub in subscriptions:
                self._replay_soon(sub)

    async def _replay(self, sub: Subscription) -> None:
        cursor = sub.cursor
        cursor.start_replay()
        while True:
            page = await self.messages.history(sub.room, after=cursor.last, limit=REPLAY_PAGE)
            frames = cursor.replayed((m.seq, m.frame(sub.v).decode()) for m in page)
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
        """Replay *sub* now, or right after the replay that is running: that one may have
        read the database before what this request is for was stored (a catch-up after a
        reconnect while a gap fill was reading: the messages fanned out during the outage
        would otherwise wait for the room's next message to be seen as a gap)."""
        if sub.replay is None or sub.replay.done():
            sub.replay = asyncio.create_task(self._replay_guarded(sub))
        else:
            sub.replay_again = True

    async def _replay_guarded(self, sub: Subscription) -> None:
        try:
            while True:
                sub.replay_again = False
                await self._replay(sub)
                if not sub.replay_again or sub.connection.close_code is not None:
                    return
        except PyMongoError as exc:  # database down: the client resumes after a reconnect
            log.warning("replay of %s for %s failed: %s", sub.room, sub.connection.id, exc)
            sub.connection.close(protocol.INTERNAL_ERROR, "could not catch up: resume")
