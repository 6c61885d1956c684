"""The client protocol: parse client frames into typed values, build server frames.

Frames are JSON text, one object per WebSocket message, with a ``type``. Parsing never
raises anything but :exc:`ProtocolError`, whose ``code`` goes to the client in an
``error`` frame; the connection survives every such error (only an oversized frame,
1009, and auth failures, 4401/4403, close it). docs/protocol.md is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from burrow.core import ids
from burrow.core.envelopes import attachment_ids, reply_to_id
from burrow.core.lifecycle import MAX_EMOJI_BYTES, valid_emoji
from burrow.core.mentions import Mentions
from burrow.core.mentions import parse as parse_mentions

# Close codes (RFC 6455 reserves 4000-4999 for applications). A client reconnects and
# resumes after 1001, 1011, 4008; after 4401 only with a fresh token; never after 4403.
GOING_AWAY = 1001
POLICY_VIOLATION = 1008  # too many open connections (gateway.caps)
INTERNAL_ERROR = 1011
TOO_BIG = 1009
SLOW_CLIENT = 4008
UNAUTHORIZED = 4401
FORBIDDEN = 4403
FLOODING = 4429


class ProtocolError(Exception):
    """A frame the gateway refuses; ``code`` and ``message`` go back in an error frame."""

    def __init__(self, code: str, message: str, client_id: str | None = None,
                 room: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id
        self.room = room

    def frame(self) -> str:
        return error(self.code, self.message, client_id=self.client_id, room=self.room)


@dataclass(frozen=True)
class Subscribe:
    room: str
    since: int | None  # None: only what comes after the subscription
    v: int = 1         # 2: change events come as their own frames (docs/protocol.md)


@dataclass(frozen=True)
class Unsubscribe:
    room: str


@dataclass(frozen=True)
class SendFrame:
    """A ``send``, or a change (``edit``, ``delete``, ``react``) of message *target*:
    a change travels and is acked like a send (kind: edit, delete, reaction)."""

    room: str
    client_id: str
    body: str
    kind: str | None = None
    target: str | None = None
    emoji: str | None = None
    remove: bool = False
    attachments: tuple[str, ...] = ()  # a send's upload ids (docs/attachments.md)
    reply_to: str | None = None  # the message a send answers (docs/protocol.md)
    mentions: Mentions | None = None  # who a send mentions (docs/protocol.md, mentions)


@dataclass(frozen=True)
class Read:
    room: str
    seq: int


@dataclass(frozen=True)
class Ping:
    id: str | int | None


@dataclass(frozen=True)
class Typing:
    room: str


ClientFrame = Subscribe | Unsubscribe | SendFrame | Read | Ping | Typing
TYPES = ("subscribe", "unsubscribe", "send", "read", "typing", "ping", "edit", "delete",
         "react")
CHANGES = {"edit": "edit", "delete": "delete", "react": "reaction"}
VERSIONS = (1, 2)
STATUSES = ("online", "offline")


def parse(raw: str | bytes, max_body_bytes: int) -> ClientFrame:
    """Parse one client frame; raises :exc:`ProtocolError` naming what is wrong."""
    if isinstance(raw, bytes):
        raise ProtocolError("bad_frame", "frames are JSON text, not binary")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("bad_json", "the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_frame", "a frame is a JSON object with a type")
    kind = data.get("type")
    client_id = data.get("client_id") if ids.is_client_id(data.get("client_id")) else None
    if kind == "ping":
        ping_id = data.get("id")
        if ping_id is not None and not (isinstance(ping_id, str | int)
                                        and not isinstance(ping_id, bool)
                                        and len(str(ping_id)) <= 64):
            raise ProtocolError("bad_frame", "ping id must be a string or integer")
        return Ping(ping_id)
    if kind not in TYPES:
        shown = kind if isinstance(kind, str) and len(kind) <= 32 else "?"
        raise ProtocolError("unknown_type", f"unknown frame type {shown!r}; "
                            f"known: {', '.join(TYPES)}", client_id=client_id)
    room = data.get("room")
    if not ids.is_room_id(room):
        raise ProtocolError("bad_room", "room must match [A-Za-z0-9_-]{1,64}",
                            client_id=client_id)
    if kind == "subscribe":
        since = data.get("since")
        if since is not None and not _is_seq(since):
            raise ProtocolError("bad_frame", "since must be a non-negative integer", room=room)
        version = data.get("v", 1)
        if version not in VERSIONS or isinstance(version, bool):
            raise ProtocolError("bad_frame", "v must be 1 or 2", room=room)
        return Subscribe(room, since, version)
    if kind == "unsubscribe":
        return Unsubscribe(room)
    if kind == "typing":
        return Typing(room)
    if kind == "read":
        seq = data.get("seq")
        if not _is_seq(seq):
            raise ProtocolError("bad_frame", "seq must be a non-negative integer", room=room)
        return Read(room, seq)
    # send, or a change
    if client_id is None:
        raise ProtocolError("bad_frame", f"{kind} needs a client_id of 1..64 printable "
                            "ASCII characters", room=room)
    if kind in CHANGES:
        return _change(data, CHANGES[kind], room, client_id, max_body_bytes)
    body = _body(data, room, client_id, max_body_bytes)
    try:
        attached = attachment_ids(data.get("attachments"))
    except ValueError as exc:
        raise ProtocolError("bad_attachments", str(exc), client_id=client_id,
                            room=room) from None
    try:
        reply_to = reply_to_id(data.get("reply_to"))
    except ValueError as exc:
        raise ProtocolError("bad_frame", str(exc), client_id=client_id, room=room) from None
    mentioned = data.get("mentions")
    if mentioned is not None:
        try:
            mentioned = parse_mentions(mentioned)
        except ValueError as exc:
            raise ProtocolError("bad_frame", str(exc), client_id=client_id,
                                room=room) from None
    return SendFrame(room, client_id, body, attachments=attached, reply_to=reply_to,
                     mentions=mentioned)


def _body(data: dict[str, Any], room: str, client_id: str, max_body_bytes: int) -> str:
    """The ``body`` of a send or an edit: a string of at most *max_body_bytes* (UTF-8)."""
    body = data.get("body")
    if not isinstance(body, str):
        raise ProtocolError("bad_frame", "body must be a string", client_id=client_id,
                            room=room)
    if len(body.encode()) > max_body_bytes:
        raise ProtocolError("too_large", f"body is over {max_body_bytes} bytes",
                            client_id=client_id, room=room)
    return body


def _change(data: dict[str, Any], kind: str, room: str, client_id: str,
            max_body_bytes: int) -> SendFrame:
    """An ``edit`` {id, body}, ``delete`` {id} or ``react`` {id, emoji, remove} frame."""
    target = data.get("id")
    if not ids.is_client_id(target):
        raise ProtocolError("bad_frame", "id must name a message (1..64 printable ASCII "
                            "characters)", client_id=client_id, room=room)
    if kind == "edit":
        return SendFrame(room, client_id, _body(data, room, client_id, max_body_bytes),
                         kind, target)
    if kind == "delete":
        return SendFrame(room, client_id, "", kind, target)
    emoji, remove = data.get("emoji"), data.get("remove", False)
    if not valid_emoji(emoji):
        raise ProtocolError("bad_frame", f"emoji must be 1..{MAX_EMOJI_BYTES} bytes of text "
                            "without control characters", client_id=client_id, room=room)
    if not isinstance(remove, bool):
        raise ProtocolError("bad_frame", "remove must be true or false", client_id=client_id,
                            room=room)
    return SendFrame(room, client_id, "", kind, target, emoji, remove)


def _is_seq(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _dumps(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


def error(code: str, message: str, *, client_id: str | None = None, room: str | None = None,
          retry_after_ms: int | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if client_id is not None:
        frame["client_id"] = client_id
    if room is not None:
        frame["room"] = room
    if retry_after_ms is not None:
        frame["retry_after_ms"] = retry_after_ms
    return _dumps(frame)


def subscribed(room: str, since: int) -> str:
    """Sent first: the messages that follow are those with seq > *since*, in order."""
    return _dumps({"type": "subscribed", "room": room, "since": since})


def unsubscribed(room: str, reason: str) -> str:
    return _dumps({"type": "unsubscribed", "room": room, "reason": reason})


def pong(ping_id: str | int | None) -> str:
    return _dumps({"type": "pong"} if ping_id is None else {"type": "pong", "id": ping_id})


def presence(room: str, user: str, status: str, version: int) -> str:
    """*user*'s current status, not a toggle: the highest ``version`` per user is the truth."""
    return _dumps({"type": "presence", "room": room, "user": user, "status": status,
                   "version": version})


def typing(room: str, user: str) -> str:
    return _dumps({"type": "typing", "room": room, "user": user})


def event(kind: str, room: str, body: bytes) -> tuple[str, str] | None:
    """A ``presence`` or ``typing`` event from ``chat.fanout`` as the client frame, and its
    user; None if the body is not such an event of *room*.

    The frame is rebuilt from the checked fields, so nothing but them reaches clients
    whoever published on the exchange.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("type") != kind or data.get("room") != room:
        return None
    user = data.get("user")
    if not ids.is_user_id(user):
        return None
    if kind == "typing":
        return typing(room, user), user
    status, version = data.get("status"), data.get("version")
    if kind == "presence" and status in STATUSES and _is_seq(version):
        return presence(room, user, status, version), user
    return None
