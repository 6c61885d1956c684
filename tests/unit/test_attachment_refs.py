"""A message's ``attachments``: checked in the frame and the envelope, carried by the
stored message and its frames, a stable id for claiming, the push and digest text."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from burrow.core.envelopes import (
    MAX_ATTACHMENTS,
    BadAttachments,
    EnvelopeError,
    Send,
    Stored,
    attachment_ids,
    message_id_of,
)
from burrow.core.sequencing import Numbering
from gateway import protocol

A, B = "a" * 24, "0123456789abcdef01234567"
PNG = {"id": A, "name": "a.png", "type": "image/png", "size": 9, "width": 3, "height": 2}
PDF = {"id": B, "name": "b.pdf", "type": "application/pdf", "size": 7}


@pytest.mark.parametrize("value", ["x", A, [A, A], ["xyz"], [A.upper()], [1], [None],
                                   [A] + [f"{n:024x}" for n in range(MAX_ATTACHMENTS)],
                                   {"id": A}])
def test_malformed_attachments_are_refused_everywhere(value: object) -> None:
    with pytest.raises(BadAttachments):
        attachment_ids(value)
    frame = {"type": "send", "room": "r", "client_id": "c", "body": "", "attachments": value}
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.parse(orjson.dumps(frame).decode(), 100)
    assert exc.value.code == "bad_attachments"
    envelope = {"room": "r", "sender": "u", "client_id": "c", "body": "", "attachments": value}
    with pytest.raises(EnvelopeError):
        Send.from_json(orjson.dumps(envelope), 100)


def test_attachments_travel_from_frame_to_envelope() -> None:
    frame = protocol.parse(orjson.dumps({"type": "send", "room": "r", "client_id": "c",
                                         "body": "", "attachments": [A, B]}).decode(), 100)
    assert isinstance(frame, protocol.SendFrame) and frame.attachments == (A, B)
    send = Send("r", "u", "c", "", attachments=frame.attachments)
    assert Send.from_json(send.to_json(), 100) == send
    assert b"attachments" not in Send("r", "u", "c", "hi").to_json()  # unchanged wire
    with pytest.raises(EnvelopeError):  # only a message names attachments
        Send.from_json(orjson.dumps({"room": "r", "sender": "u", "client_id": "c",
                                     "body": "", "kind": "delete", "target": "m",
                                     "attachments": [A]}), 100)
    assert attachment_ids(None) == attachment_ids([]) == ()


def test_a_message_with_attachments_is_numbered_with_its_stable_id() -> None:
    numbering = Numbering()
    numbering.learn({"r": 0})
    send = Send("r", "u", "c", "", attachments=(A,), claimed=(PNG,))
    plan = numbering.plan([(send, None), (Send("r", "u", "d", "x"), None)], {}, 5, lambda: "rnd")
    first, second = plan.new
    assert first.id == message_id_of("r", "u", "c") != message_id_of("r", "u", "d")
    assert first.attachments == (PNG,) and second.id == "rnd" and not second.attachments
    assert len(first.id) == 32 and first.id == message_id_of("r", "u", "c")


def test_frames_documents_and_text_carry_the_attachments() -> None:
    stored = Stored("m", "r", 1, "u", "c", "", 1000, attachments=(PNG, PDF))
    for v in (1, 2):
        assert orjson.loads(stored.frame(v))["attachments"] == [PNG, PDF]
    assert stored.fields()["attachments"] == [PNG, PDF]
    assert Stored.from_document(stored.to_document()) == stored
    assert "attachments" not in orjson.loads(Stored("m", "r", 1, "u", "c", "x", 1).frame())
    assert stored.text == "sent 2 files"
    assert Stored("m", "r", 1, "u", "c", "", 1, attachments=(PNG,)).text == "sent a photo"
    assert Stored("m", "r", 1, "u", "c", "", 1, attachments=(PDF,)).text == "sent a file"
    assert Stored("m", "r", 1, "u", "c", "look", 1, attachments=(PNG,)).text == "look"
    edited = Stored("m", "r", 1, "u", "c", "x", 1, edit_count=1, edited_at=2,
                    attachments=(PNG,))
    assert orjson.loads(edited.frame(1))["attachments"] == [PNG]


def test_an_edited_message_keeps_its_attachments_in_storage() -> None:
    """The document of an edited message (the change store adds edit_count and
    edited_at) is read by another path than a plain one's: it must keep the
    attachments too (history lost them once)."""
    doc = Stored("m", "r", 1, "u", "c", "x", 1000, attachments=(PNG,)).to_document()
    doc.update(edit_count=1, edited_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert Stored.from_document(doc).attachments == (PNG,)
