"""Sends and their acks: publish with a confirm, forward the ack, bound the wait (G3).

A send is published to ``chat.ingress`` with this worker's queue as ``reply_to`` and a
correlation id of its own; the sequencer's ack (one message for a batch of one gateway's
sends) comes back through ``chat.reply``. The table of pending sends is what joins the
two ends, and its timeout is what a client's retry with the same ``client_id`` relies
on: it hears ``timeout`` rather than nothing, and the sequencer dedups the retry.

Before a send is published it is held to the room's moderation state, from the caches of
:mod:`gateway.members` (no database read per send): a muted member is refused
``muted``, a plain member of a locked room ``locked``, and a message within a room's slow
mode ``slow_mode`` (the gateway's limiter); the rules are burrow/core/send_rules.py's,
the whole picture docs/moderation.md's "Enforcement". A refused send never reaches the
broker, so nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from burrow.core import ids, send_rules
from burrow.core.envelopes import ACKS_TYPE, BATCHED_ACKS, Send, decode_acks
from burrow.runtime import metrics
from burrow.runtime.settings import Settings
from gateway import protocol
from gateway.connection import Connection
from gateway.frames_out import OUT
from gateway.limiting import Limits
from gateway.link import NODE_LOGGER, PUBLISH_FAILED, Link
from gateway.members import Members
from gateway.protocol import ProtocolError

log = logging.getLogger(NODE_LOGGER)


class Refused(ProtocolError):
    """A send the room's moderation state refuses (``muted``, ``locked``, ``slow_mode``);
    *retry_after_ms* says when the same send would pass, when waiting helps."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None,
                 client_id: str | None, room: str) -> None:
        super().__init__(code, message, client_id=client_id, room=room)
        self.retry_after_ms = retry_after_ms

    def frame(self) -> str:
        return protocol.error(self.code, self.message, client_id=self.client_id,
                              room=self.room, retry_after_ms=self.retry_after_ms)


@dataclass
class PendingSend:
    connection: Connection
    client_id: str
    room: str
    arrived: float  # perf_counter() when the send frame arrived: burrow_gateway_ack_seconds
    timer: asyncio.TimerHandle | None = None
    expiry: asyncio.TimerHandle | None = None  # drops it a while after it timed out
    # The sends still owed an answer (the ack or a timeout), one entry each: the send
    # itself, then each resend that joined it (Sends._join) since the last timeout.
    owed: list[Connection] = field(default_factory=list)


class Sends:
    """The sends this worker published, by correlation id, until their ack comes."""

    def __init__(self, settings: Settings, link: Link, members: Members) -> None:
        self.settings = settings
        self.link = link
        self.members = members
        self.pending: dict[str, PendingSend] = {}
        # (user, room, client_id) -> correlation id of a send published on this broker
        # connection and confirmed, whose ack has not come: a resend joins it (_join).
        self.in_flight: dict[tuple[str, str, str], str] = {}
        # The gateway's limits (slow mode counts there); set by the app once it has them
        # (gateway/app.py), before the first send.
        self.limits: Limits | None = None

    async def send(self, conn: Connection, frame: protocol.SendFrame,
                   arrived: float | None = None) -> None:
        """Publish a send with a confirm; its ack arrives later through ``chat.reply``.

        *arrived* is the ``perf_counter()`` of the frame's arrival (default: now), the
        start of its ``burrow_gateway_ack_seconds``.
        """
        if arrived is None:
            arrived = time.perf_counter()
        limits = self.limits
        assert limits is not None, "Sends.limits is set by the app before the first send"
        slow = await self.enforce(conn, frame, limits)
        if self._join(conn, frame):
            return
        await self.link.ready()
        assert self.link.ingress is not None
        if slow:
            decision = await limits.slow_mode(conn, frame.room, slow)
            if not decision.allowed:
                raise Refused("slow_mode", f"slow mode: one message per {slow} s per member "
                              "in this room; not stored: retry later with the same client_id",
                              decision.retry_after_ms, frame.client_id, frame.room)
        correlation_id = uuid.uuid4().hex
        pending = PendingSend(conn, frame.client_id, frame.room, arrived, owed=[conn])
        self.pending[correlation_id] = pending
        message = aio_pika.Message(
            Send(frame.room, conn.user, frame.client_id, frame.body, frame.kind,
                 frame.target, frame.emoji, frame.remove,
                 admin=conn.is_admin and frame.kind is not None,
                 attachments=frame.attachments, reply_to=frame.reply_to,
                 mentions=frame.mentions).to_json(),
            content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex, correlation_id=correlation_id,
            reply_to=self.link.queue_name, headers={BATCHED_ACKS: 1})
        try:
            await self.link.publish_send(message, ids.message_key(frame.room))
        except PUBLISH_FAILED as exc:
            self.pending.pop(correlation_id, None)
            if slow:  # not sent: its retry must not wait out the slow mode
                await limits.slow_mode_back(conn, frame.room, slow)
            log.warning("send %s of %s not confirmed: %s", frame.client_id, conn.user, exc)
            raise ProtocolError("unavailable", "the message was not accepted; retry with the "
                                "same client_id", client_id=frame.client_id,
                                room=frame.room) from None
        if correlation_id in self.pending:  # not answered while the confirm came
            self.in_flight[(conn.user, frame.room, frame.client_id)] = correlation_id
        loop = asyncio.get_running_loop()
        # Waiting for the ack (stored) is bounded: the client gets a retryable error and
        # retries with the same client_id, which joins this send while it is on its way
        # (_join) or else is published again and deduplicated by the sequencer (G3).
        pending.timer = loop.call_later(self.settings.send_timeout, self._timed_out,
                                        correlation_id)

    def _join(self, conn: Connection, frame: protocol.SendFrame) -> bool:
        """A resend of a send still on its way (published on this broker connection,
        confirmed, its ack awaited) is not published again: its ack will answer it too
        (each send gets its answer, the ack or a timeout). Without this, a sequencer that falls behind sees
        every send once more per client timeout: each copy costs the broker, a dedup
        lookup and the database, which puts it further behind (a retry storm: the cluster
        fault bench had 50,592 resends for 18,000 sends). The sequencer's dedup stays the
        guarantee; this only spares it the copies. After a broker reconnect the acks of
        earlier sends may be lost, so :meth:`reconnected` lets resends be published."""
        correlation_id = self.in_flight.get((conn.user, frame.room, frame.client_id))
        pending = self.pending.get(correlation_id) if correlation_id is not None else None
        if correlation_id is None or pending is None:
            return False
        pending.owed.append(conn)
        if pending.timer is None:  # it timed out once: the resend waits as long again
            if pending.expiry is not None:
                pending.expiry.cancel()
                pending.expiry = None
            pending.timer = asyncio.get_running_loop().call_later(
                self.settings.send_timeout, self._timed_out, correlation_id)
        metrics.GATEWAY_RESENDS_JOINED.inc()
        return True

    def reconnected(self) -> None:
        """The broker connection was re-made: acks of earlier sends may have gone with
        the old one, so resends of them are published again (and deduplicated)."""
        self.in_flight.clear()

    def _drop(self, correlation_id: str) -> PendingSend | None:
        """Forget a send: its timers stop, a resend no longer joins it."""
        pending = self.pending.pop(correlation_id, None)
        if pending is None:
            return None
        for timer in (pending.timer, pending.expiry):
            if timer is not None:
                timer.cancel()
        key = (pending.connection.user, pending.room, pending.client_id)
        if self.in_flight.get(key) == correlation_id:
            del self.in_flight[key]
        return pending

    async def enforce(self, conn: Connection, frame: protocol.SendFrame,
                      limits: Limits) -> int:
        """Raise ``forbidden`` for a non-member, :exc:`Refused` for a muted member or a
        locked room; else the slow-mode interval the send must respect (0: none)."""
        member, rules = await self.members.standing(conn, frame.room, frame.client_id)
        refusal = send_rules.refuse_send(member, rules, conn.is_admin, frame.kind,
                                         frame.remove, int(time.time() * 1000))
        if refusal is not None:
            limits.refused(conn)  # one who keeps sending into it is closed, as for limits
            raise Refused(refusal.code, refusal.message, refusal.retry_after_ms,
                          frame.client_id, frame.room)
        return send_rules.slow_mode_seconds(member, rules, conn.is_admin, frame.kind)

    def _timed_out(self, correlation_id: str) -> None:
        pending = self.pending.get(correlation_id)
        if pending is None:
            return
        pending.timer = None
        waiting, pending.owed = pending.owed, []
        error = protocol.error("timeout", "no ack in time; retry with the same client_id",
                               client_id=pending.client_id, room=pending.room)
        for conn in waiting:
            conn.push([error])
        OUT["error"].inc(len(waiting))
        # Keep the entry a while: a late ack is still worth forwarding, and a resend
        # meanwhile joins it.
        pending.expiry = asyncio.get_running_loop().call_later(
            10 * self.settings.send_timeout, self._drop, correlation_id)

    async def acked(self) -> None:
        """Wait until every send that this gateway published has its ack (or timed out)."""
        while any(p.timer is not None for p in self.pending.values()):
            await asyncio.sleep(0.01)

    def on_ack(self, message: AbstractIncomingMessage) -> None:
        """A delivery from ``chat.reply``: one ack, or a batch of them."""
        if message.type == ACKS_TYPE:
            for correlation_id, frame in decode_acks(message.body):
                self._answer(correlation_id, frame)
        else:
            self._answer(message.correlation_id or "", message.body.decode())

    def _answer(self, correlation_id: str, ack: str) -> None:
        pending = self._drop(correlation_id)
        if pending is None:
            return
        # every send still waiting; else (all timed out) the first one's connection: a
        # late ack is still worth having
        for conn in pending.owed or [pending.connection]:
            conn.push([ack])
        OUT["ack"].inc()
        if log.isEnabledFor(logging.DEBUG):  # per message: only when asked for
            frame = orjson.loads(ack)
            log.debug("send answered", extra={
                "msg_id": frame.get("id"), "seq": frame.get("seq"), "room": pending.room,
                "client_id": pending.client_id, "user": pending.connection.user,
                "conn": pending.connection.id})
        metrics.GATEWAY_ACK_SECONDS.observe(time.perf_counter() - pending.arrived)

    def forget(self, conn: Connection) -> None:
        """*conn* closed: its acks, should they come, go nowhere; a send that resends on
        other connections joined still answers those."""
        for key in [k for k, p in self.pending.items()
                    if p.connection is conn or conn in p.owed]:
            pending = self.pending[key]
            pending.owed = [c for c in pending.owed if c is not conn]
            if pending.owed:
                pending.connection = pending.owed[0]
            else:
                self._drop(key)

    def stop(self) -> None:
        """Stop every send's timeout (the gateway stops)."""
        for pending in self.pending.values():
            for timer in (pending.timer, pending.expiry):
                if timer is not None:
                    timer.cancel()
