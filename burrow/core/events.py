"""Backend events (docs/events.md): what the ``burrow.events`` topic exchange carries, as
plain values.

Every event is one JSON object ``{"schema": "burrow.event/1", "id", "type", "at", ...}``
published with the routing key = its ``type`` (``user.offline``, ``message.stored``...).
Its ``id`` is derived from what the event is about (a room and a seq, a user and a
presence version, a report id...), never drawn at random, so the same event published
again (a redelivered batch, a retried job) has the same id and consumers deduplicate on
it. Pure: the publisher is :mod:`queues.events`, the signature of webhooks
:mod:`burrow.core.webhook_signing`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from burrow.core.envelopes import Stored

SCHEMA = "burrow.event/1"

USER_ONLINE, USER_OFFLINE = "user.online", "user.offline"
MEMBER_ADDED, MEMBER_REMOVED = "member.added", "member.removed"
MEMBER_BANNED, MEMBER_MUTED = "member.banned", "member.muted"
MESSAGE_STORED, MESSAGE_EDITED, MESSAGE_DELETED = (
    "message.stored", "message.edited", "message.deleted")
REPORT_FILED, REPORT_RESOLVED = "report.filed", "report.resolved"
PUSH_SENT, PUSH_FAILED = "push.sent", "push.failed"

TYPES: tuple[str, ...] = (
    USER_ONLINE, USER_OFFLINE, MEMBER_ADDED, MEMBER_REMOVED, MEMBER_BANNED, MEMBER_MUTED,
    MESSAGE_STORED, MESSAGE_EDITED, MESSAGE_DELETED, REPORT_FILED, REPORT_RESOLVED,
    PUSH_SENT, PUSH_FAILED)

# Longest body excerpt a message event carries: events are for routing decisions
# (moderation, search indexing, analytics), the full message is in the history API.
BODY_CHARS = 1000


def event(type_: str, id_: str, at: int, **fields: Any) -> dict[str, Any]:
    """One event: the envelope, then *fields* (``None`` values left out).

    *at* is when the thing happened, in milliseconds since the epoch (for a message:
    when the sequencer stored it, so a republished event keeps its time).
    """
    if type_ not in TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    return {"schema": SCHEMA, "id": id_, "type": type_, "at": at,
            **{k: v for k, v in fields.items() if v is not None}}


def presence(user: str, online: bool, version: int, at: int) -> dict[str, Any]:
    """``user.online`` / ``user.offline``: the user's status changed, as the gateways
    settled it (once per change, whichever gateway saw it; the offline one after the
    grace period). *version* orders a user's changes: a consumer that sees an older
    version after a newer one ignores it."""
    type_ = USER_ONLINE if online else USER_OFFLINE
    return event(type_, f"{type_}:{user}:{version}", at, user=user, version=version)


def message(stored: Stored) -> dict[str, Any] | None:
    """The event of one stored message or change, or None for what has no event
    (reactions, and any other kind). The id is ``<type>:<room>:<seq>``: a redelivered
    batch is stored as the same seqs, so it publishes the same ids."""
    common = {"room": stored.room, "seq": stored.seq, "message": stored.id,
              "sender": stored.sender}
    if stored.kind is None:
        body = stored.body
        return event(MESSAGE_STORED, f"{MESSAGE_STORED}:{stored.room}:{stored.seq}",
                     stored.ts, **common, body=body[:BODY_CHARS],
                     truncated=len(body) > BODY_CHARS or None,
                     attachments=len(stored.attachments) or None,
                     reply_to=stored.reply_to, thread=stored.thread,
                     mentions=stored.mentions.to_json() if stored.mentions else None)
    if stored.kind == "edit":
        body = stored.body
        return event(MESSAGE_EDITED, f"{MESSAGE_EDITED}:{stored.room}:{stored.seq}",
                     stored.ts, **common, target=stored.target, body=body[:BODY_CHARS],
                     truncated=len(body) > BODY_CHARS or None)
    if stored.kind == "delete":
        return event(MESSAGE_DELETED, f"{MESSAGE_DELETED}:{stored.room}:{stored.seq}",
                     stored.ts, **common, target=stored.target)
    return None


def member(type_: str, room: str, user: str, at: int, key: str, *, by: str | None = None,
           reason: str | None = None, until: int | None = None) -> dict[str, Any]:
    """``member.*``: *user*'s hold on *room* changed. *key* names the change itself (an
    audit record's id, or the time of a membership write): the id is ``<type>:<room>:
    <user>:<key>``."""
    if not type_.startswith("member."):
        raise ValueError(f"{type_!r} is not a member event")
    return event(type_, f"{type_}:{room}:{user}:{key}", at, room=room, user=user, by=by,
                 reason=reason, until=until)


def report(type_: str, doc: dict[str, Any], at: int) -> dict[str, Any]:
    """``report.filed`` / ``report.resolved`` of a stored report document (no snapshot:
    the moderators' queue and API have it; an event may reach more services). The id
    is ``<type>:<report id>``: filing the same report again publishes the same id."""
    fields: dict[str, Any] = {"report": doc["_id"], "room": doc["room"],
                              "message": doc["message"], "reporter": doc["reporter"],
                              "reason": doc["reason"]}
    resolution = doc.get("resolution")
    if type_ == REPORT_RESOLVED and isinstance(resolution, dict):
        fields.update(action=resolution.get("action"), by=resolution.get("by"))
    elif type_ != REPORT_FILED:
        raise ValueError(f"{type_!r} is not a report event")
    return event(type_, f"{type_}:{doc['_id']}", at, **fields)


def push(sent: bool, notification: str, user: str, device: str, platform: str, at: int,
         *, reason: str | None = None, final: bool | None = None,
         attempt: int = 0) -> dict[str, Any]:
    """``push.sent`` / ``push.failed``: one device's provider answer for one
    notification. A sent one is ``push.sent:<notification>:<device>`` (a device is
    never pushed twice once confirmed); a failure names the attempt, so each try of a
    retried job is its own event, and *final* says whether it is given up."""
    if sent:
        return event(PUSH_SENT, f"{PUSH_SENT}:{notification}:{device}", at,
                     notification=notification, user=user, device=device, platform=platform)
    return event(PUSH_FAILED, f"{PUSH_FAILED}:{notification}:{device}:{attempt}", at,
                 notification=notification, user=user, device=device, platform=platform,
                 reason=reason, final=bool(final), attempt=attempt)


# -- which events are wanted (BURROW_EVENTS, BURROW_WEBHOOK_EVENTS) ---------------------

_WORD = re.compile(r"^[a-z]+$")


@dataclass(frozen=True)
class Selection:
    """Routing-key patterns in AMQP topic syntax (``*`` one word, ``#`` any words):
    which event types a process publishes, or a webhook receives."""

    patterns: tuple[str, ...]

    @classmethod
    def parse(cls, raw: str) -> Selection:
        """``#`` (all), ``none``, or comma-separated patterns such as ``user.*,
        report.filed``; raises :exc:`ValueError` for a pattern no type can match."""
        raw = raw.strip()
        if raw == "none":
            return cls(())
        patterns = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
        if not patterns:
            raise ValueError("give routing-key patterns, # for every event, or none")
        for pattern in patterns:
            words = pattern.split(".")
            if not all(w in ("*", "#") or _WORD.match(w) for w in words):
                raise ValueError(f"{pattern!r} is not a routing-key pattern (words of a-z, "
                                 "* or #, separated by dots)")
            if not any(_matches(words, t.split(".")) for t in TYPES):
                raise ValueError(f"{pattern!r} matches no event type ({', '.join(TYPES)})")
        return cls(patterns)

    def wants(self, type_: str) -> bool:
        words = type_.split(".")
        return any(_matches(p.split("."), words) for p in self.patterns)

    def __str__(self) -> str:
        return ",".join(self.patterns) or "none"


def _matches(pattern: list[str], words: list[str]) -> bool:
    """AMQP topic matching of one pattern against one routing key, both split on dots."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_matches(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _matches(rest, words[1:])
