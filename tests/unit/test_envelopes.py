"""Broker envelopes (burrow/core/envelopes.py): Send on chat.ingress, Stored in MongoDB and frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burrow.core.envelopes import EnvelopeError, Send, Stored, decode_acks, encode_acks

LIMIT = 32  # max_body_bytes in these tests
TS = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def raw(**fields: Any) -> bytes:
    body = {"room": "lobby", "sender": "alice", "client_id": "c1", "body": "hi"} | fields
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def message(ts: int = TS, **fields: Any) -> Stored:
    values: dict[str, Any] = {"id": "0f3c", "room": "lobby", "seq": 7, "sender": "alice",
                              "client_id": "c1", "body": "hello", "ts": ts} | fields
    return Stored(**values)


# --- Send ------------------------------------------------------------------------------


@pytest.mark.parametrize("send", [
    Send("lobby", "alice", "c1", "hi"),
    Send("x" * 64, "ü" * 128, "!" * 64, "é" * (LIMIT // 2)),
    Send("a-b_C9", "user@example.com", "~", ""),
    Send("r", "Zoë 🦊", "c", "😀" * (LIMIT // 4)),
    Send("r", "s", "c", 'quotes " and \\ and \n newlines\u2028'),
])
def test_send_round_trips_through_json(send: Send) -> None:
    """from_json(to_json(send)) is the same send, for edge values that are all valid."""
    assert Send.from_json(send.to_json(), LIMIT) == send


def test_send_json_has_exactly_the_four_fields() -> None:
    assert json.loads(Send("lobby", "alice", "c1", "hi").to_json()) == {
        "room": "lobby", "sender": "alice", "client_id": "c1", "body": "hi"}


@pytest.mark.parametrize("data", [b"", b"not json", b"{", b"\xff\xfe", b'"\\ud800"',
                                  b'{"room": "lobby",}', b"[" * 5000])
def test_non_json_is_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError, match="not JSON"):
        Send.from_json(data, LIMIT)


@pytest.mark.parametrize("data", [b"[]", b'["lobby", "alice", "c1", "hi"]', b'"lobby"', b"1",
                                  b"null", b"true"])
def test_non_object_is_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError, match="not a JSON object"):
        Send.from_json(data, LIMIT)


@pytest.mark.parametrize("room", ["", "x" * 65, "a.b", "room.*", "#", "a b", "café", "a\n",
                                  None, 5, ["lobby"], ...])
def test_bad_room_is_refused(room: object) -> None:
    with pytest.raises(EnvelopeError, match="room"):
        Send.from_json(raw(room=room), LIMIT)


@pytest.mark.parametrize("sender", ["", "x" * 129, "a\x00b", "a\nb", "\t", "a\u200bb",
                                    None, 5, True, ["alice"], ...])
def test_bad_sender_is_refused(sender: object) -> None:
    """sender is 1..128 printable characters (no control or format characters)."""
    with pytest.raises(EnvelopeError, match="sender"):
        Send.from_json(raw(sender=sender), LIMIT)


@pytest.mark.parametrize("client_id", ["", "a b", "x" * 65, "é", "a\x7f", None, 5, ...])
def test_bad_client_id_is_refused(client_id: object) -> None:
    with pytest.raises(EnvelopeError, match="client_id"):
        Send.from_json(raw(client_id=client_id), LIMIT)


@pytest.mark.parametrize("body", [None, 5, 1.5, True, ["hi"], {"text": "hi"}, ...])
def test_non_string_body_is_refused(body: object) -> None:
    with pytest.raises(EnvelopeError, match="body"):
        Send.from_json(raw(body=body), LIMIT)


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_body_limit_counts_utf8_bytes(char: str) -> None:
    """A body of exactly max_body_bytes UTF-8 bytes passes, one byte more is refused."""
    limit = 24  # a multiple of 1, 2, 3 and 4
    at_limit = char * (limit // len(char.encode()))
    assert Send.from_json(raw(body=at_limit), limit).body == at_limit
    with pytest.raises(EnvelopeError, match="body"):
        Send.from_json(raw(body=at_limit + "a"), limit)


def test_envelope_error_is_a_value_error() -> None:
    """Callers that catch ValueError catch malformed envelopes too."""
    assert issubclass(EnvelopeError, ValueError)


@pytest.mark.parametrize(("data", "message"), [
    (b"[]", "not a JSON object"),
    (raw(room="a.b"), "room must match [A-Za-z0-9_-]{1,64}"),
    (raw(sender=""), "sender must be a printable string of 1..128 characters"),
    (raw(client_id="a b"), "client_id must be 1..64 printable ASCII characters"),
    (raw(body=None), f"body must be a string of at most {LIMIT} bytes"),
])
def test_each_refusal_says_exactly_what_is_wrong(data: bytes, message: str) -> None:
    """The whole reason, as the logs show it for a dead-lettered send."""
    with pytest.raises(EnvelopeError) as info:
        Send.from_json(data, LIMIT)
    assert str(info.value) == message


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_arbitrary_bytes_give_a_send_or_an_envelope_error(data: bytes) -> None:
    """from_json never raises anything but EnvelopeError."""
    try:
        Send.from_json(data, LIMIT)
    except EnvelopeError:
        pass


# --- Stored ----------------------------------------------------------------------------


def test_message_frame_carries_the_documented_keys() -> None:
    frame = message(body="héllo 😀").frame()
    assert isinstance(frame, bytes)
    assert json.loads(frame) == {"type": "message", "room": "lobby", "seq": 7, "id": "0f3c",
                                 "sender": "alice", "client_id": "c1", "ts": TS,
                                 "body": "héllo 😀"}


def test_ack_frame_carries_the_documented_keys() -> None:
    frame = message().ack_frame()
    assert isinstance(frame, bytes)
    assert json.loads(frame) == {"type": "ack", "client_id": "c1", "room": "lobby", "seq": 7,
                                 "id": "0f3c"}


def test_dedup_key_is_room_sender_client_id() -> None:
    assert message().dedup_key == ("lobby", "alice", "c1")


def test_document_fields_and_utc_datetime() -> None:
    """The document uses the id as _id and a timezone-aware UTC datetime for ts."""
    doc = message().to_document()
    assert set(doc) == {"_id", "room", "seq", "sender", "client_id", "body", "ts"}
    assert (doc["_id"], doc["room"], doc["seq"]) == ("0f3c", "lobby", 7)
    ts = doc["ts"]
    assert isinstance(ts, datetime)
    assert ts.tzinfo is not None and ts.utcoffset() == timedelta(0)
    assert ts == datetime(2026, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC)


@pytest.mark.parametrize("ts", [0, 1, 999, 1_000, TS, 1_700_000_000_001, 1_767_225_599_999])
def test_document_round_trip_keeps_ts_in_ms(ts: int) -> None:
    """from_document(to_document(m)) == m, ts to the millisecond."""
    stored = message(ts=ts)
    assert Stored.from_document(stored.to_document()) == stored


@settings(max_examples=200, deadline=None)
@given(st.builds(Stored, id=st.text(min_size=1), room=st.text(min_size=1),
                 seq=st.integers(1, 2**63 - 1), sender=st.text(min_size=1),
                 client_id=st.text(min_size=1), body=st.text(),
                 # 1970 .. 2100: ms are integer arithmetic, exact everywhere
                 ts=st.integers(0, 4_102_444_800_000)))
def test_document_round_trip_property(stored: Stored) -> None:
    """Every field survives the database document."""
    assert Stored.from_document(stored.to_document()) == stored


@pytest.mark.parametrize("ts", [1_073_753_573_399, 2_148_870_365_042])
def test_document_round_trip_keeps_every_ms(ts: int) -> None:
    """ts survives the document exactly, also as MongoDB returns it (ms datetime)."""
    stored = message(ts=ts)
    assert Stored.from_document(stored.to_document()).ts == ts
    as_read = stored.to_document() | {"ts": EPOCH + timedelta(milliseconds=ts)}
    assert Stored.from_document(as_read).ts == ts


def test_ts_read_from_a_document_is_whole_milliseconds() -> None:
    """ts is an int (not 1767225600123.0) so frames carry ``"ts":1767225600123``."""
    stored = Stored.from_document(message().to_document())
    assert type(stored.ts) is int
    assert f'"ts":{TS},'.encode() in stored.frame()


@settings(max_examples=100)
@given(st.lists(st.tuples(st.text(alphabet="0123456789abcdef", min_size=1, max_size=32),
                          st.builds(Stored, id=st.text(max_size=8), room=st.just("r"),
                                    seq=st.integers(1, 2**40), sender=st.text(max_size=8),
                                    client_id=st.text(max_size=40), body=st.text(max_size=20),
                                    ts=st.just(0))), max_size=20))
def test_batched_acks_round_trip(acks: list[tuple[str, Stored]]) -> None:
    """Every (correlation id, ack frame) comes back as sent, whatever the client ids hold
    (newlines and spaces are escaped inside the JSON frame)."""
    body = encode_acks([(cid, stored.ack_frame()) for cid, stored in acks])
    assert decode_acks(body) == [(cid, stored.ack_frame().decode()) for cid, stored in acks]


def test_batched_acks_skip_malformed_lines() -> None:
    """A damaged message costs its bad lines, not the good ones (nor a crash)."""
    body = b'c1 {"type":"ack"}\n\nnospace\n c2missing {"x":1}\nc3 notjson\nc4 {"type":"ack","seq":2}'
    assert decode_acks(body) == [("c1", '{"type":"ack"}'), ("c4", '{"type":"ack","seq":2}')]
    assert decode_acks(b"\xff\xfe {\xff}") == [("\ufffd\ufffd", "{\ufffd}")]
