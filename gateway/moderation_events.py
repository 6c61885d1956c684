"""What a moderation action tells others (docs/moderation.md): the member events that
make every gateway act on it at once, and the room event sequenced in the room's order.

The room event is a trusted send: published here straight to ``chat.ingress`` with
``admin`` set, the one flag the sequencer requires of a ``moderation`` send
(burrow.core.lifecycle). It does not go through :meth:`gateway.node.Node.send`: that
path is a client's (a membership check an admin need not pass, and the send checks of
a member: mute, lock, slow mode, which must never hold back the event of a lock or a
mute). It is acked like any send, through this worker's pending table, so the
sequencer's dedup on (room, actor, client_id) makes a retry's event the same event.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import aio_pika
import orjson

from burrow.core import ids
from burrow.core import moderation as rules
from burrow.core.envelopes import BATCHED_ACKS, Send
from burrow.core.moderation_event import MODERATION
from burrow.storage.rooms import MODERATOR, OWNER
from gateway import streams
from gateway.connection import Connection
from gateway.link import PUBLISH_FAILED, Unavailable
from gateway.node import Node
from gateway.sends import PendingSend


class NotSequenced(Exception):
    """The room event was not stored: *code* ``unavailable``/``timeout`` (retry), or
    the sequencer's refusal."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def details(record: dict[str, Any]) -> dict[str, Any]:
    """The room event's fields of audit *record*: action, user, seconds, until, reason
    (those it has)."""
    found: dict[str, Any] = {"action": record["action"]}
    if record.get("user") is not None:
        found["user"] = record["user"]
    if record.get("seconds") is not None:
        found["seconds"] = record["seconds"]
    if record.get("until") is not None:
        found["until"] = ms(record["until"])
    if record.get("reason"):
        found["reason"] = record["reason"]
    return found


async def publish_member_events(node: Node, record: dict[str, Any],
                                room_doc: dict[str, Any] | None) -> None:
    """Tell every gateway what *record* changed (gateway/node.py member events); raises
    one of :data:`~gateway.link.PUBLISH_FAILED`. *room_doc*: the room's settings now."""
    action, room, user = record["action"], record["room"], str(record.get("user") or "")
    event = rules.MEMBER_EVENTS[action]
    if event is None:
        return
    if event == "room":
        doc = room_doc or {}
        await node.publish_member_event(room, record["by"], "room", {
            "slow_mode_s": int(doc.get("slow_mode_s", 0)), "locked": bool(doc.get("locked"))})
    elif action == rules.TRANSFER:
        if record.get("from"):
            await node.publish_member_event(room, record["from"], "role",
                                            {"role": MODERATOR})
        await node.publish_member_event(room, user, "role", {"role": OWNER})
    elif event == "role":
        await node.publish_member_event(room, user, "role", {
            "role": MODERATOR if action == rules.PROMOTE else rules.MEMBER})
    elif event == "muted":
        await node.publish_member_event(room, user, "muted", {"until": ms(record["until"])})
    elif action == rules.BAN:
        await node.publish_member_event(room, user, "removed", {"banned": True})
    else:
        await node.publish_member_event(room, user, event)


async def sequence(node: Node, record: dict[str, Any], client_id: str,
                   buffer: int) -> int:
    """Sequence the room event of *record* (sender: the actor, *client_id*: the request's
    Idempotency-Key) and wait for its ack; returns its seq or raises :exc:`NotSequenced`."""
    room, actor = record["room"], record["by"]
    collector = streams.Collector(4)
    conn = Connection(uuid.uuid4().hex[:12], actor, True, collector, buffer)
    correlation_id = uuid.uuid4().hex
    send = Send(room, actor, client_id, "", kind=MODERATION, admin=True,
                moderation=details(record))
    timeout = node.settings.send_timeout
    node.sends.pending[correlation_id] = PendingSend(conn, client_id, room,
                                                     time.perf_counter())
    try:
        try:
            await node.link.ready()
            await node.link.publish_send(
                aio_pika.Message(send.to_json(), content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 message_id=uuid.uuid4().hex, correlation_id=correlation_id,
                                 reply_to=node.link.queue_name, headers={BATCHED_ACKS: 1}),
                ids.message_key(room))
        except PUBLISH_FAILED as exc:
            reason = str(exc) if isinstance(exc, Unavailable) else "the broker did not confirm"
            raise NotSequenced("unavailable", reason) from None
        try:
            async with asyncio.timeout(timeout + 1):
                answer = orjson.loads(await collector.frames.get())
        except TimeoutError:
            raise NotSequenced("timeout", "the room event was not stored in time") from None
    finally:
        node.sends.pending.pop(correlation_id, None)
        conn.stop_writing()
    if answer.get("type") != "ack":
        raise NotSequenced(str(answer.get("code", "refused")),
                           str(answer.get("message", "refused")))
    return int(answer["seq"])
