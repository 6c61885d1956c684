"""Replies and threads, the pure parts: ``reply_to`` checked the same way in the
gateway frame, the envelope and the HTTP send; carried from the send to the stored
message, its frames and its document; a root's counters read back from MongoDB."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from burrow.core.envelopes import EnvelopeError, Send, Stored, reply_to_id
from burrow.core.sequencing import Numbering
from gateway import protocol

NOW = 1_767_225_600_000


@pytest.mark.parametrize("bad", [7, "", "x" * 65, ["id"], {"id": "x"}, "a b", True])
def test_a_reply_to_is_a_message_id(bad: object) -> None:
    with pytest.raises(ValueError):
        reply_to_id(bad)
    frame = {"type": "send", "room": "r", "client_id": "c", "body": "x", "reply_to": bad}
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.parse(orjson.dumps(frame).decode(), 100)
    assert exc.value.code == "bad_frame"
    with pytest.raises(EnvelopeError):
        Send.from_json(orjson.dumps({"room": "r", "sender": "a", "client_id": "c",
                                     "body": "x", "reply_to": bad}), 100)


def test_a_reply_travels_from_frame_to_envelope() -> None:
    assert reply_to_id(None) is None
    frame = protocol.parse(orjson.dumps({"type": "send", "room": "r", "client_id": "c",
                                         "body": "x", "reply_to": "m1"}).decode(), 100)
    assert isinstance(frame, protocol.SendFrame) and frame.reply_to == "m1"
    send = Send("r", "alice", "c", "x", reply_to="m1", thread="root")
    back = Send.from_json(send.to_json(), 100)
    assert back.reply_to == "m1" and back.thread is None  # thread: the sequencer's
    assert b"reply_to" not in Send("r", "alice", "c", "x").to_json()


def test_only_a_message_replies() -> None:
    with pytest.raises(EnvelopeError):
        Send.from_json(orjson.dumps({"room": "r", "sender": "a", "client_id": "c",
                                     "body": "x", "kind": "edit", "target": "m",
                                     "reply_to": "m"}), 100)


def test_the_plan_stores_reply_and_thread() -> None:
    numbering = Numbering()
    numbering.learn({"r": 4})
    plan = numbering.plan([(Send("r", "a", "c", "x", reply_to="m1", thread="m0"), None)],
                          {}, NOW, lambda: "id1")
    stored = plan.new[0]
    assert (stored.reply_to, stored.thread, stored.seq) == ("m1", "m0", 5)
    for v in (1, 2):
        frame = orjson.loads(stored.frame(v))
        assert (frame["reply_to"], frame["thread"]) == ("m1", "m0")
    assert stored.fields()["thread"] == "m0"
    doc = stored.to_document()
    assert (doc["reply_to"], doc["thread"]) == ("m1", "m0")
    assert Stored.from_document(doc) == stored
    plain = Stored("i", "r", 1, "a", "c", "x", NOW)
    assert "thread" not in plain.to_document()
    assert "reply_to" not in orjson.loads(plain.frame())


def test_a_root_reads_back_its_counters() -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    doc = {"_id": "root", "room": "r", "seq": 1, "sender": "a", "client_id": "c",
           "body": "x", "ts": ts, "reply_count": 2,
           "last_reply": {"seq": 9, "id": "m9", "sender": "b", "ts": ts}}
    for d in (doc, {**doc, "edit_count": 1, "edited_at": ts}):  # plain and changed
        root = Stored.from_document(d)
        assert root.reply_count == 2
        assert root.last_reply == {"seq": 9, "id": "m9", "sender": "b", "ts": NOW}
        assert root.fields()["last_reply"]["id"] == "m9"
    assert "reply_count" not in Stored.from_document(
        {k: v for k, v in doc.items() if k not in ("reply_count", "last_reply")}).fields()
