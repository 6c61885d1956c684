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

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from burrow.core import ids

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # exact integer ms; float timestamps round down

# The header a gateway puts on its sends to get batched acks, and the AMQP ``type`` of
# a batched ack message.
BATCHED_ACKS = "x-burrow-acks"
#: Header of a message on ``chat.fanout``: when the sequencer stored it, float epoch
#: seconds; the gateway measures store-to-delivery latency against it (fan-out metric).
STORED_AT = "x-burrow-stored-at"
ACKS_TYPE = "burrow.acks"


class EnvelopeError(ValueError):
    """A broker message does not have the shape its queue promises."""


@dataclass(frozen=True)
class Send:
    """A message to store: from a client through a gateway, or from a backend service."""

    room: str
    sender: str
    client_id: str
    body: str

    def to_json(self) -> bytes:
        return orjson.dumps({"room": self.room, "sender": self.sender,
                             "client_id": self.client_id, "body": self.body})

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
        return cls(room, sender, client_id, body)


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

    @property
    def dedup_key(self) -> tuple[str, str, str]:
        return (self.room, self.sender, self.client_id)

    def frame(self) -> bytes:
        """The client frame for this message, encoded once for every receiver."""
        return orjson.dumps({"type": "message", "room": self.room, "seq": self.seq,
                             "id": self.id, "sender": self.sender,
                             "client_id": self.client_id, "ts": self.ts, "body": self.body})

    def ack_frame(self) -> bytes:
        """The frame that tells the sender its message is stored, and where."""
        return orjson.dumps({"type": "ack", "client_id": self.client_id, "room": self.room,
                             "seq": self.seq, "id": self.id})

    def to_document(self) -> dict[str, Any]:
        return {"_id": self.id, "room": self.room, "seq": self.seq, "sender": self.sender,
                "client_id": self.client_id, "body": self.body,
                "ts": datetime.fromtimestamp(self.ts / 1000, UTC)}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Stored:
        return cls(id=doc["_id"], room=doc["room"], seq=doc["seq"], sender=doc["sender"],
                   client_id=doc["client_id"], body=doc["body"],
                   ts=(doc["ts"] - EPOCH) // timedelta(milliseconds=1))


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
