"""The messages Burrow's processes exchange over RabbitMQ, parsed once into typed values.

A send travels from a gateway (or a backend service) to the sequencer on ``chat.ingress``
as a :class:`Send`; the sequencer stores it as a :class:`Stored` message, publishes the
stored message on ``chat.fanout`` already encoded as the client frame (so gateways never
re-encode it, whatever the number of receivers), and answers the sending gateway with the
ack frame. Bodies are JSON (orjson); nothing is pickled.

A gateway asks for its acks batched (:data:`BATCHED_ACKS` header on its sends): the
sequencer then answers all of one batch's sends from that gateway in one message
(:func:`encode_acks`), one publish and one delivery instead of one per send. Backend
services that do not ask get one ack message per send, as docs/queues.md promises.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from burrow.core import ids
from burrow.core.mentions import Mentions
from burrow.core.mentions import from_document as mentions_of
from burrow.core.mentions import parse as parse_mentions
from burrow.core.moderation_event import (
    MODERATION,
    MODERATION_FIELDS,
    moderation_details,
    moderation_text,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # exact integer ms; float timestamps round down

# The header a gateway puts on its sends to get batched acks, and the AMQP ``type`` of
# a batched ack message.
BATCHED_ACKS = "x-burrow-acks"
#: Header of a message on ``chat.fanout``: when the sequencer stored it, float epoch
#: seconds; the gateway measures store-to-delivery latency against it (fan-out metric).
STORED_AT = "x-burrow-stored-at"
ACKS_TYPE = "burrow.acks"
#: Header of a change event on ``chat.fanout`` (its kind): a gateway shows it to v1
#: receivers as a ``message`` frame (:func:`v1_frame`).
CHANGE_KIND = "x-burrow-kind"


class EnvelopeError(ValueError):
    """A broker message does not have the shape its queue promises."""


#: The kinds of change events (docs/protocol.md, changes); a message has no kind.
CHANGE_KINDS = ("edit", "delete", "reaction")

#: Most attachments one message may reference (docs/attachments.md).
MAX_ATTACHMENTS = 10
_ATTACHMENT_ID = re.compile(r"[0-9a-f]{24}")


class BadAttachments(ValueError):
    """A send's ``attachments`` field is not a list of distinct attachment ids."""


def attachment_ids(value: Any) -> tuple[str, ...]:
    """The ``attachments`` of a send checked: a list of at most :data:`MAX_ATTACHMENTS`
    distinct upload ids (24 lowercase hex digits, as the upload route answers); absent
    (None) is none. Raises :exc:`BadAttachments` saying what is wrong."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadAttachments("attachments must be a list of attachment ids")
    if len(value) > MAX_ATTACHMENTS:
        raise BadAttachments(f"a message has at most {MAX_ATTACHMENTS} attachments")
    if not all(isinstance(v, str) and _ATTACHMENT_ID.fullmatch(v) for v in value):
        raise BadAttachments("an attachment id is the 24 hex digits the upload answered")
    if len(set(value)) != len(value):
        raise BadAttachments("an attachment is named twice")
    return tuple(value)


class BadReply(ValueError):
    """A send's ``reply_to`` is not a message id."""


def reply_to_id(value: Any) -> str | None:
    """The ``reply_to`` of a send checked: absent (None) or a message id (1..64
    printable ASCII characters, like every message id). Whether that message exists,
    is a message (not a change event) and is in the send's room, only the sequencer
    knows: it refuses the send ``not_found`` otherwise. Raises :exc:`BadReply`."""
    if value is None:
        return None
    if not ids.is_client_id(value):
        raise BadReply("reply_to must be the id of a message of the room")
    return str(value)


def message_id_of(room: str, sender: str, client_id: str) -> str:
    """The id of a message with attachments: derived from its dedup key, not random.

    The sequencer claims a send's uploads for this id *before* it numbers and stores
    the send, so a retry of that send (a redelivery after a crash between the claim and
    the store, or the client repeating its client_id) must claim for the very same id:
    :meth:`~burrow.storage.attachments.AttachmentStore.claim` is idempotent only for
    the message the uploads are attached to already. The dedup key names one message
    for good (unique index), so its hash does too; 32 hex digits like the random ids.
    """
    key = f"burrow-message\0{room}\0{sender}\0{client_id}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


@dataclass(frozen=True)
class Send:
    """A message to store: from a client through a gateway, or from a backend service.

    A change event (``kind`` edit, delete or reaction) names its ``target`` message;
    ``admin`` is set by a gateway for a token with the admin role (a backend service
    is trusted to set it). ``edit_count`` is not carried on the wire: the sequencer
    sets it when it accepts an edit (:mod:`burrow.core.lifecycle`).
    """

    room: str
    sender: str
    client_id: str
    body: str
    kind: str | None = None
    target: str | None = None
    emoji: str | None = None
    remove: bool = False
    admin: bool = False
    edit_count: int = 0
    #: Upload ids the message references (a message only), and what the sequencer
    #: read of them when it claimed them (not on the wire): ``{id, name, type, size,
    #: width?, height?}`` each, in the order named.
    attachments: tuple[str, ...] = ()
    claimed: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    #: The message this one answers (a message only), and the root of its thread,
    #: which the sequencer finds (not on the wire): reply_to's own root, else reply_to.
    reply_to: str | None = None
    thread: str | None = None
    #: Who the message mentions (a message only; burrow.core.mentions), None: nobody.
    mentions: Mentions | None = None
    #: A moderation event's details (:func:`moderation_details`), None otherwise.
    moderation: dict[str, Any] | None = field(default=None, hash=False)

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"room": self.room, "sender": self.sender,
                                "client_id": self.client_id, "body": self.body}
        if self.attachments:
            data["attachments"] = list(self.attachments)
        if self.reply_to is not None:
            data["reply_to"] = self.reply_to
        if self.mentions is not None:
            data["mentions"] = self.mentions.to_json()
        if self.kind == MODERATION:
            data.update(kind=self.kind, moderation=self.moderation)
        elif self.kind is not None:
            data.update(kind=self.kind, target=self.target)
            if self.emoji is not None:
                data.update(emoji=self.emoji, remove=self.remove)
        if self.admin:
            data["admin"] = True
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes, max_body_bytes: int) -> Send:
        """Parse and check a ``chat.ingress`` body; raises :exc:`EnvelopeError`."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EnvelopeError("not a JSON object")
        room, sender = data.get("room"), data.get("sender")
        client_id, body = data.get("client_id"), data.get("body")
        if not ids.is_room_id(room):
            raise EnvelopeError("room must match [A-Za-z0-9_-]{1,64}")
        if not ids.is_user_id(sender):
            raise EnvelopeError("sender must be a printable string of 1..128 characters")
        if not ids.is_client_id(client_id):
            raise EnvelopeError("client_id must be 1..64 printable ASCII characters")
        if not isinstance(body, str) or len(body.encode()) > max_body_bytes:
            raise EnvelopeError(f"body must be a string of at most {max_body_bytes} bytes")
        kind = data.get("kind")
        if kind is None or kind == "message":
            try:
                attached = attachment_ids(data.get("attachments"))
                reply_to = reply_to_id(data.get("reply_to"))
                mentioned = data.get("mentions")  # a dict lookup is all a plain send pays
                if mentioned is not None:
                    mentioned = parse_mentions(mentioned)
            except ValueError as exc:
                raise EnvelopeError(str(exc)) from None
            return cls(room, sender, client_id, body, admin=data.get("admin") is True,
                       attachments=attached, reply_to=reply_to,
                       mentions=None if mentioned is None else mentioned.without(sender))
        if data.get("attachments") is not None:
            raise EnvelopeError("only a message carries attachments")
        if data.get("reply_to") is not None:
            raise EnvelopeError("only a message replies to another")
        if data.get("mentions") is not None:
            raise EnvelopeError("only a message mentions users")
        if kind == MODERATION:
            try:
                details = moderation_details(data.get("moderation"))
            except ValueError as exc:
                raise EnvelopeError(str(exc)) from None
            return cls(room, sender, client_id, "", kind=kind, moderation=details,
                       admin=data.get("admin") is True)
        target, emoji, remove = data.get("target"), data.get("emoji"), data.get("remove", False)
        if kind not in CHANGE_KINDS:
            raise EnvelopeError(f"kind must be one of message, {', '.join(CHANGE_KINDS)}")
        if not ids.is_client_id(target):
            raise EnvelopeError("target must be a message id")
        if kind == "reaction" and (not isinstance(emoji, str) or len(emoji) > 256
                                   or not isinstance(remove, bool)):
            raise EnvelopeError("a reaction needs an emoji string and a boolean remove")
        return cls(room, sender, client_id, body, kind=kind, target=target,
                   emoji=emoji if kind == "reaction" else None,
                   remove=bool(remove) if kind == "reaction" else False,
                   admin=data.get("admin") is True)


@dataclass(frozen=True)
class Stored:
    """A message with its place in the room: ``seq`` is 1, 2, 3, ... per room, no gaps."""

    id: str
    room: str
    seq: int
    sender: str
    client_id: str
    body: str
    ts: int  # milliseconds since the epoch, UTC, when the sequencer stored it
    # A change event: its kind (None: a message), target message, and what it did.
    kind: str | None = None
    target: str | None = None
    emoji: str | None = None
    op: str | None = None          # reaction: "add" or "remove"
    edit_count: int = 0            # a message: edits applied; an edit: its number
    # A message's current state (history, replay), once changed.
    edited_at: int | None = None   # ms
    deleted_at: int | None = None  # ms
    deleted_by: str | None = None
    #: A message's attachments ``{id, name, type, size, width?, height?}`` (none once
    #: deleted); a frame has the field only when there are some.
    attachments: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    #: A reply: the message it answers and its thread's root (docs/protocol.md,
    #: replies). A root: how many replies its thread has and the last one
    #: ``{seq, id, sender, ts}`` (history only; maintained by the sequencer).
    reply_to: str | None = None
    thread: str | None = None
    reply_count: int = 0
    last_reply: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    #: Who a message mentions (never changed by an edit; not shown once deleted).
    mentions: Mentions | None = None
    #: A moderation event's details ``{action, user?, seconds?, until?, reason?}``.
    moderation: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    @property
    def dedup_key(self) -> tuple[str, str, str]:
        return (self.room, self.sender, self.client_id)

    @property
    def text(self) -> str:
        """The body for a push or a digest: "sent a photo" / "sent a file" (or
        "sent N ...") for a message of attachments and no body."""
        if self.body or not self.attachments:
            return self.body
        n = len(self.attachments)
        photos = all(str(a.get("type", "")).startswith("image/") for a in self.attachments)
        what = "photo" if photos else "file"
        return f"sent a {what}" if n == 1 else f"sent {n} {what}s"

    def frame(self, v: int = 2) -> bytes:
        """The client frame for this message, encoded once for every receiver.

        A change event is its own frame for a v2 receiver, and a ``message`` frame
        with a fallback body for a v1 one (:func:`v1_frame`).
        """
        if self.kind is None and self.edit_count == 0 and self.deleted_at is None:
            frame = {"type": "message", "room": self.room, "seq": self.seq, "id": self.id,
                     "sender": self.sender, "client_id": self.client_id, "ts": self.ts,
                     "body": self.body}
            if self.attachments:
                frame["attachments"] = list(self.attachments)
            self._thread_fields(frame)
            return orjson.dumps(frame)
        data = self.fields()
        return orjson.dumps(data if v >= 2 else v1_frame(data))

    def fields(self) -> dict[str, Any]:
        """The v2 frame of a changed message or of a change event, as a dict."""
        data: dict[str, Any] = {
            "type": self.kind or "message", "room": self.room, "seq": self.seq,
            "id": self.id, "sender": self.sender, "client_id": self.client_id,
            "ts": self.ts}
        if self.kind is None:
            data["body"] = self.body
            if self.attachments:
                data["attachments"] = list(self.attachments)
            self._thread_fields(data)
            if self.edit_count:
                data.update(edited_at=self.edited_at, edit_count=self.edit_count)
            if self.deleted_at is not None:
                data.update(deleted_at=self.deleted_at, deleted_by=self.deleted_by)
            return data
        if self.kind == MODERATION:
            data.update(self.moderation or {})
            return data
        data["target"] = self.target
        if self.kind == "edit":
            data.update(body=self.body, edit_count=self.edit_count)
        elif self.kind == "delete":
            data["deleted_by"] = self.sender
        else:
            data.update(emoji=self.emoji, op=self.op)
        return data

    def _thread_fields(self, data: dict[str, Any]) -> None:
        """A message's reply, thread and mention fields, only those it has."""
        if self.mentions is not None:
            data["mentions"] = self.mentions.to_json()
        if self.reply_to is not None:
            data.update(reply_to=self.reply_to, thread=self.thread)
        if self.reply_count:
            data.update(reply_count=self.reply_count, last_reply=self.last_reply)

    def ack_frame(self) -> bytes:
        """The frame that tells the sender its message is stored, and where."""
        return orjson.dumps({"type": "ack", "client_id": self.client_id, "room": self.room,
                             "seq": self.seq, "id": self.id})

    def to_document(self) -> dict[str, Any]:
        doc = {"_id": self.id, "room": self.room, "seq": self.seq, "sender": self.sender,
               "client_id": self.client_id, "body": self.body,
               "ts": datetime.fromtimestamp(self.ts / 1000, UTC)}
        if self.attachments:
            doc["attachments"] = list(self.attachments)
        if self.reply_to is not None:
            doc.update(reply_to=self.reply_to, thread=self.thread)
        if self.mentions is not None:
            doc["mentions"] = self.mentions.to_json()
        if self.kind == MODERATION:
            doc.update(kind=self.kind, moderation=self.moderation)
        elif self.kind is not None:
            doc.update(kind=self.kind, target=self.target)
            if self.kind == "edit":
                doc["edit_count"] = self.edit_count
            elif self.kind == "reaction":
                doc.update(emoji=self.emoji, op=self.op)
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Stored:
        if "kind" not in doc and "edit_count" not in doc and "deleted_at" not in doc:
            return cls(id=doc["_id"], room=doc["room"], seq=doc["seq"],
                       sender=doc["sender"], client_id=doc["client_id"], body=doc["body"],
                       ts=_ms(doc["ts"]), attachments=tuple(doc.get("attachments", ())),
                       reply_to=doc.get("reply_to"), thread=doc.get("thread"),
                       reply_count=doc.get("reply_count", 0),
                       last_reply=_last_reply(doc.get("last_reply")),
                       mentions=mentions_of(doc["mentions"]) if "mentions" in doc else None)
        edited, deleted = doc.get("edited_at"), doc.get("deleted_at")
        return cls(id=doc["_id"], room=doc["room"], seq=doc["seq"], sender=doc["sender"],
                   client_id=doc["client_id"], body=doc["body"], ts=_ms(doc["ts"]),
                   kind=doc.get("kind"), target=doc.get("target"), emoji=doc.get("emoji"),
                   op=doc.get("op"), edit_count=doc.get("edit_count", 0),
                   edited_at=None if edited is None else _ms(edited),
                   deleted_at=None if deleted is None else _ms(deleted),
                   deleted_by=doc.get("deleted_by"),
                   attachments=tuple(doc.get("attachments", ())),
                   reply_to=doc.get("reply_to"), thread=doc.get("thread"),
                   reply_count=doc.get("reply_count", 0),
                   last_reply=_last_reply(doc.get("last_reply")),
                   mentions=None if deleted is not None else mentions_of(doc.get("mentions")),
                   moderation=doc.get("moderation"))


def _last_reply(value: Any) -> dict[str, Any] | None:
    """A root's stored ``last_reply`` as history shows it (ts in ms)."""
    if not isinstance(value, dict):
        return None
    ts = value.get("ts")
    return {"seq": value.get("seq"), "id": value.get("id"), "sender": value.get("sender"),
            "ts": _ms(ts) if isinstance(ts, datetime) else ts}


def _ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


#: The body a v1 receiver is shown for a change event (docs/protocol.md).
EDIT_PREFIX = "* "


def v1_frame(data: dict[str, Any]) -> dict[str, Any]:
    """A v2 change-event frame as the ``message`` frame a v1 receiver gets (same seq).

    A changed message's frame keeps its extra fields (v1 clients ignore them).
    """
    kind = data.get("type")
    if kind == "message":
        return data
    if kind == MODERATION:
        return {"type": "message", "room": data.get("room"), "seq": data.get("seq"),
                "id": data.get("id"), "sender": data.get("sender"),
                "client_id": data.get("client_id"), "ts": data.get("ts"),
                "body": EDIT_PREFIX + moderation_text(data), "kind": kind, "target": None,
                **{k: data[k] for k in MODERATION_FIELDS if k in data}}
    body = EDIT_PREFIX + str(data.get("body", "")) if kind == "edit" else ""
    return {"type": "message", "room": data.get("room"), "seq": data.get("seq"),
            "id": data.get("id"), "sender": data.get("sender"),
            "client_id": data.get("client_id"), "ts": data.get("ts"), "body": body,
            "kind": kind, "target": data.get("target")}


def encode_acks(acks: list[tuple[str, bytes]]) -> bytes:
    """One message for many acks: a line ``<correlation id> <ack frame>`` per send.

    Lines, not a JSON array: the gateway hands each ack frame to its client as it is,
    so it splits the body without parsing a byte of JSON. Correlation ids are the
    gateway's own hex ids; ack frames are compact JSON (no newline).
    """
    return b"\n".join(cid.encode() + b" " + frame for cid, frame in acks)


def decode_acks(body: bytes) -> list[tuple[str, str]]:
    """(correlation id, ack frame) of each line of :func:`encode_acks`; bad lines skipped."""
    found = []
    for line in body.split(b"\n"):
        cid, space, frame = line.partition(b" ")
        if space and cid and frame.startswith(b"{"):
            found.append((cid.decode(errors="replace"), frame.decode(errors="replace")))
    return found
