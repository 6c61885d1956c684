"""The client protocol (gateway/protocol.py): parsing client frames, building server frames.

Every malformed or hostile frame must come back as a :class:`ProtocolError` with the right
code (the connection survives it), never as another exception.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import protocol
from gateway.protocol import (
    TYPES,
    Ping,
    ProtocolError,
    Read,
    SendFrame,
    Subscribe,
    Typing,
    Unsubscribe,
    parse,
)

LIMIT = 64  # max_body_bytes in these tests
CODES = {"bad_json", "bad_frame", "unknown_type", "bad_room", "too_large"}


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def refused(raw: str | bytes, max_body_bytes: int = LIMIT) -> ProtocolError:
    """The ProtocolError *raw* is refused with (fails the test if it parses)."""
    with pytest.raises(ProtocolError) as info:
        parse(raw, max_body_bytes)
    return info.value


def error_frame(exc: ProtocolError) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(exc.frame())
    return decoded


# --- every frame type ------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    (frame(type="subscribe", room="lobby"), Subscribe("lobby", None)),
    (frame(type="subscribe", room="lobby", since=None), Subscribe("lobby", None)),
    (frame(type="subscribe", room="lobby", since=0), Subscribe("lobby", 0)),
    (frame(type="subscribe", room="a-B_9", since=2**63 - 1), Subscribe("a-B_9", 2**63 - 1)),
    (frame(type="unsubscribe", room="lobby"), Unsubscribe("lobby")),
    (frame(type="send", room="lobby", client_id="c-1", body="hello"),
     SendFrame("lobby", "c-1", "hello")),
    (frame(type="send", room="lobby", client_id="!~" * 32, body=""),
     SendFrame("lobby", "!~" * 32, "")),
    (frame(type="read", room="lobby", seq=0), Read("lobby", 0)),
    (frame(type="read", room="lobby", seq=42), Read("lobby", 42)),
    (frame(type="ping"), Ping(None)),
    (frame(type="ping", id=None), Ping(None)),
    (frame(type="ping", id="abc"), Ping("abc")),
    (frame(type="ping", id=7), Ping(7)),
    (frame(type="ping", id=-7), Ping(-7)),
    (frame(type="ping", id="x" * 64), Ping("x" * 64)),
    (frame(type="ping", id=2**64 - 1), Ping(2**64 - 1)),
    (frame(type="send", room="x" * 64, client_id="c", body="b", extra=[1, {"a": 2}]),
     SendFrame("x" * 64, "c", "b")),
])
def test_each_frame_type_parses_into_its_dataclass(raw: str, expected: object) -> None:
    """Well-formed frames of every type (and their edge values) parse to the right value."""
    assert parse(raw, LIMIT) == expected


def test_pong_answers_any_accepted_ping_id() -> None:
    """The id of any ping that parses can be echoed back in a pong."""
    for raw in (frame(type="ping", id=2**64 - 1), frame(type="ping", id=-(2**63)),
                frame(type="ping", id="é" * 64)):
        ping = parse(raw, LIMIT)
        assert isinstance(ping, Ping)
        assert json.loads(protocol.pong(ping.id)) == {"type": "pong", "id": ping.id}


# --- malformed and hostile input -------------------------------------------------------


@pytest.mark.parametrize("raw", [
    "", " ", "{", "{'type': 'ping'}", '{"type": "ping",}', "NaN", "undefined",
    '{"type": "ping"} trailing', '"\\ud800"',
    '{"type": "send", "room": "r", "client_id": "c", "body": "\\udc00"}',
    "[" * 5000 + "]" * 5000,
])
def test_invalid_json_is_bad_json(raw: str) -> None:
    """Text that is not JSON (including lone surrogates and deep nesting) is bad_json."""
    assert refused(raw).code == "bad_json"


@pytest.mark.parametrize("raw", [b'{"type": "ping"}', b"", b"\xff\xfe"])
def test_binary_frames_are_refused(raw: bytes) -> None:
    """Binary WebSocket frames are refused even when they hold valid JSON."""
    assert refused(raw).code == "bad_frame"


@pytest.mark.parametrize("raw", ['[{"type": "ping"}]', "[]", '"ping"', "1", "1.5", "null",
                                 "true", "18446744073709551616"])
def test_json_that_is_not_an_object_is_bad_frame(raw: str) -> None:
    """A JSON array, string, number, boolean or null is not a frame."""
    assert refused(raw).code == "bad_frame"


@pytest.mark.parametrize("raw", [
    "{}", frame(room="lobby"), frame(type=None), frame(type=1), frame(type=True),
    frame(type=["ping"]), frame(type={"ping": 1}), frame(type="PING"), frame(type="ping "),
    frame(type="Typing", room="lobby"), frame(type="message", room="lobby"),
])
def test_missing_or_unknown_type_is_unknown_type(raw: str) -> None:
    """A frame without a known type (exact, case-sensitive) is unknown_type."""
    assert refused(raw).code == "unknown_type"


def test_unknown_type_names_a_short_type_and_the_known_ones() -> None:
    """The message shows a short unknown type so a client developer sees the mistake."""
    exc = refused(frame(type="subscrbe", room="lobby"))
    assert "'subscrbe'" in exc.message
    for kind in TYPES:
        assert kind in exc.message


def test_very_long_type_is_not_echoed() -> None:
    """A hostile huge type string is not reflected into the error frame."""
    hostile = "A" * 100_000
    exc = refused(frame(type=hostile))
    assert exc.code == "unknown_type"
    assert "AAAA" not in exc.message
    assert len(exc.frame()) < 300


@pytest.mark.parametrize("room", [
    "", "x" * 65, "a.b", "room.*", "*", "#", "a b", " a", "a\n", "a\x00", "café", "ルーム",
    "１", "a/b", None, 5, True, ["lobby"], {"id": "lobby"},
])
@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "send", "read", "typing"])
def test_bad_room_ids_are_bad_room(kind: str, room: object) -> None:
    """Every room-carrying frame refuses ids outside [A-Za-z0-9_-]{1,64}."""
    exc = refused(frame(type=kind, room=room, client_id="c", body="b", since=1, seq=1))
    assert exc.code == "bad_room"
    assert exc.room is None


def test_missing_room_is_bad_room() -> None:
    assert refused(frame(type="subscribe")).code == "bad_room"


@pytest.mark.parametrize("since", [-1, 1.0, 1.5, True, False, "3", [], {}, 2**63, 2**64 - 1])
def test_bad_since_is_bad_frame(since: object) -> None:
    """since must be a non-negative integer below 2**63 (or absent/null)."""
    exc = refused(frame(type="subscribe", room="lobby", since=since))
    assert exc.code == "bad_frame"
    assert exc.room == "lobby"


@pytest.mark.parametrize("seq", [None, -1, 2.0, True, "1", 2**63])
def test_bad_read_seq_is_bad_frame(seq: object) -> None:
    """read needs a seq that is a non-negative integer."""
    exc = refused(frame(type="read", room="lobby", seq=seq))
    assert exc.code == "bad_frame"
    assert exc.room == "lobby"


def test_read_without_seq_is_bad_frame() -> None:
    assert refused(frame(type="read", room="lobby")).code == "bad_frame"


@pytest.mark.parametrize("client_id", [None, "", "a b", " a", "x" * 65, "é", "a\t", 5, True,
                                       ["c"]])
def test_send_needs_a_valid_client_id(client_id: object) -> None:
    """A send without a valid client_id (1..64 printable ASCII, no space) is bad_frame."""
    fields: dict[str, Any] = {"type": "send", "room": "lobby", "body": "hi"}
    if client_id is not None:
        fields["client_id"] = client_id
    exc = refused(json.dumps(fields))
    assert exc.code == "bad_frame"
    assert (exc.room, exc.client_id) == ("lobby", None)
    assert set(error_frame(exc)) == {"type", "code", "message", "room"}


@pytest.mark.parametrize("body", [None, 1, 1.5, True, ["hi"], {"text": "hi"}])
def test_send_body_must_be_a_string(body: object) -> None:
    exc = refused(frame(type="send", room="lobby", client_id="c1", body=body))
    assert exc.code == "bad_frame"
    assert (exc.client_id, exc.room) == ("c1", "lobby")


def test_send_without_body_is_bad_frame() -> None:
    assert refused(frame(type="send", room="lobby", client_id="c1")).code == "bad_frame"


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_body_limit_counts_utf8_bytes(char: str) -> None:
    """A body of exactly max_body_bytes UTF-8 bytes passes; one more byte is too_large."""
    width = len(char.encode())
    limit = 12  # a multiple of 1, 2, 3 and 4
    at_limit = char * (limit // width)
    ok = parse(frame(type="send", room="lobby", client_id="c1", body=at_limit), limit)
    assert ok == SendFrame("lobby", "c1", at_limit)
    # The same text sent with \u escapes counts the same.
    escaped = json.dumps({"type": "send", "room": "lobby", "client_id": "c1",
                          "body": at_limit}, ensure_ascii=True)
    assert parse(escaped, limit) == ok
    exc = refused(frame(type="send", room="lobby", client_id="c1", body=at_limit + "a"),
                  limit)
    assert exc.code == "too_large"
    assert (exc.client_id, exc.room) == ("c1", "lobby")


def test_body_limit_is_bytes_not_characters() -> None:
    """Seven 2-byte characters are over a 12-byte limit although they are 7 characters."""
    exc = refused(frame(type="send", room="lobby", client_id="c1", body="é" * 7), 12)
    assert exc.code == "too_large"


@pytest.mark.parametrize("ping_id", [{"a": 1}, [], True, False, 1.5, "x" * 65,
                                     "é" * 65])
def test_bad_ping_id_is_bad_frame(ping_id: object) -> None:
    """A ping id is a string or integer of at most 64 characters, or absent."""
    assert refused(frame(type="ping", id=ping_id)).code == "bad_frame"


# --- what error frames carry -----------------------------------------------------------


def test_error_frames_carry_client_id_and_room_when_known() -> None:
    """The error frame names the send it refuses so the client can match it."""
    too_large = error_frame(refused(frame(type="send", room="lobby", client_id="c1",
                                          body="x" * (LIMIT + 1))))
    assert too_large == {"type": "error", "code": "too_large", "client_id": "c1",
                         "room": "lobby", "message": f"body is over {LIMIT} bytes"}

    bad_room = error_frame(refused(frame(type="send", room="a.b", client_id="c1",
                                         body="x")))
    assert bad_room["code"] == "bad_room"
    assert bad_room["client_id"] == "c1"
    assert "room" not in bad_room  # the refused room is not echoed

    unknown = error_frame(refused(frame(type="sned", room="lobby", client_id="c1")))
    assert (unknown["code"], unknown["client_id"]) == ("unknown_type", "c1")

    bad_since = error_frame(refused(frame(type="subscribe", room="lobby", since=-1)))
    assert (bad_since["code"], bad_since["room"]) == ("bad_frame", "lobby")


def test_invalid_client_id_is_not_echoed() -> None:
    """A client_id that fails the check never appears in an error frame."""
    exc = refused(frame(type="sned", room="lobby", client_id="a b"))
    assert "client_id" not in error_frame(exc)
    exc = refused(frame(type="send", room="a.b", client_id="x" * 65, body="b"))
    assert "client_id" not in error_frame(exc)


def test_errors_without_context_carry_only_code_and_message() -> None:
    for raw in ("nope", "[]", frame(type="ping", id=True)):
        assert set(error_frame(refused(raw))) == {"type", "code", "message"}


@pytest.mark.parametrize(("raw", "expected"), [
    (b"{}", {"code": "bad_frame", "message": "frames are JSON text, not binary"}),
    ("{", {"code": "bad_json", "message": "the frame is not valid JSON"}),
    ("[]", {"code": "bad_frame", "message": "a frame is a JSON object with a type"}),
    (frame(type="ping", id=True),
     {"code": "bad_frame", "message": "ping id must be a string or integer"}),
    (frame(type="typing", room="a.b"),
     {"code": "bad_room", "message": "room must match [A-Za-z0-9_-]{1,64}"}),
    (frame(type="subscribe", room="lobby", since=-1),
     {"code": "bad_frame", "room": "lobby", "message": "since must be a non-negative integer"}),
    (frame(type="read", room="lobby", seq="1"),
     {"code": "bad_frame", "room": "lobby", "message": "seq must be a non-negative integer"}),
    (frame(type="send", room="lobby", body="x"),
     {"code": "bad_frame", "room": "lobby",
      "message": "send needs a client_id of 1..64 printable ASCII characters"}),
    (frame(type="send", room="lobby", client_id="c1", body=1),
     {"code": "bad_frame", "client_id": "c1", "room": "lobby",
      "message": "body must be a string"}),
    (frame(type="x" * 32), {"code": "unknown_type", "message": f"unknown frame type {'x' * 32!r}; "
                            "known: subscribe, unsubscribe, send, read, typing, ping, edit, "
                            "delete, react"}),
    (frame(type="x" * 33), {"code": "unknown_type", "message": "unknown frame type '?'; "
                            "known: subscribe, unsubscribe, send, read, typing, ping, edit, "
                            "delete, react"}),
])
def test_each_refusal_has_its_exact_error_frame(raw: str | bytes,
                                                 expected: dict[str, Any]) -> None:
    """The whole error frame a client gets, message included: the message is the only
    explanation a client developer sees, so a change of wording is a deliberate one.
    An unknown type is echoed up to 32 characters, longer ones are shown as '?'."""
    assert error_frame(refused(raw)) == {"type": "error", **expected}


# --- builders --------------------------------------------------------------------------


def test_error_builder_round_trips_with_every_key() -> None:
    built = protocol.error("rate_limited", "slow down — «please»", client_id="c1",
                           room="lobby", retry_after_ms=250)
    assert isinstance(built, str)
    assert json.loads(built) == {"type": "error", "code": "rate_limited",
                                 "message": "slow down — «please»", "client_id": "c1",
                                 "room": "lobby", "retry_after_ms": 250}


def test_error_builder_leaves_out_what_is_not_given() -> None:
    assert json.loads(protocol.error("bad_json", "no")) == {
        "type": "error", "code": "bad_json", "message": "no"}
    assert json.loads(protocol.error("x", "y", retry_after_ms=0)) == {
        "type": "error", "code": "x", "message": "y", "retry_after_ms": 0}


def test_protocol_error_frame_uses_the_error_builder() -> None:
    exc = ProtocolError("bad_frame", "why", client_id="c", room="r")
    assert str(exc) == "why"
    assert exc.frame() == protocol.error("bad_frame", "why", client_id="c", room="r")


def test_subscribed_unsubscribed_and_pong_round_trip() -> None:
    assert json.loads(protocol.subscribed("lobby", 12)) == {
        "type": "subscribed", "room": "lobby", "since": 12}
    assert json.loads(protocol.unsubscribed("lobby", "left")) == {
        "type": "unsubscribed", "room": "lobby", "reason": "left"}
    assert json.loads(protocol.pong(None)) == {"type": "pong"}
    assert json.loads(protocol.pong("p1")) == {"type": "pong", "id": "p1"}
    assert json.loads(protocol.pong(0)) == {"type": "pong", "id": 0}
    for built in (protocol.subscribed("r", 0), protocol.unsubscribed("r", "x"),
                  protocol.pong(None)):
        assert isinstance(built, str)


# --- properties ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16)
near_valid = {
    "room": st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), json_values),
    "client_id": st.one_of(st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True), json_values),
    "body": st.one_of(st.text(max_size=80), json_values),
    "since": st.one_of(st.integers(-2, 2**64), json_values),
    "seq": st.one_of(st.integers(-2, 2**64), json_values),
    "id": json_values,
}
frames = st.builds(
    lambda kind, fields, extra: {**extra, **fields, "type": kind},
    st.one_of(st.sampled_from(TYPES), json_values),
    st.fixed_dictionaries({}, optional=near_valid),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3))


def check_parse(raw: str | bytes) -> None:
    """parse() returns a frame or raises a ProtocolError whose error frame can be built."""
    try:
        parsed = parse(raw, LIMIT)
    except ProtocolError as exc:
        assert exc.code in CODES
        assert json.loads(exc.frame())["code"] == exc.code
    else:
        assert isinstance(parsed, Subscribe | Unsubscribe | SendFrame | Read | Ping | Typing)
        if isinstance(parsed, Ping):
            json.loads(protocol.pong(parsed.id))


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary())
def test_arbitrary_text_only_raises_protocol_error(raw: str | bytes) -> None:
    """Any text or bytes at all: a frame or a ProtocolError, never another exception."""
    check_parse(raw)


@settings(max_examples=300, deadline=None)
@given(json_values | frames, st.booleans())
def test_arbitrary_json_only_raises_protocol_error(value: Any, ascii_only: bool) -> None:
    """Any JSON value, including frames of every type with random fields."""
    check_parse(json.dumps(value, ensure_ascii=ascii_only))
