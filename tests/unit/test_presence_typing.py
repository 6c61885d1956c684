"""The pure parts of presence and typing: the typing frame, the event frames gateways pass
on from ``chat.fanout``, and the typing throttle."""

from __future__ import annotations

import json

import orjson
import pytest

from gateway import protocol
from gateway.ephemeral import Throttle
from gateway.protocol import ProtocolError, Typing, parse


def test_typing_parses_with_its_room_and_ignores_unknown_fields_like_other_frames() -> None:
    assert parse('{"type": "typing", "room": "lobby"}', 64) == Typing("lobby")
    assert parse('{"type": "typing", "room": "lobby", "state": "on"}', 64) == Typing("lobby")


@pytest.mark.parametrize("raw", ['{"type": "typing"}', '{"type": "typing", "room": ""}',
                                 '{"type": "typing", "room": "a.b"}',
                                 '{"type": "typing", "room": ["lobby"]}'])
def test_typing_without_a_valid_room_is_bad_room(raw: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(raw, 64)
    assert info.value.code == "bad_room"


def test_presence_and_typing_frames() -> None:
    assert json.loads(protocol.presence("r", "bob", "online", 3)) == {
        "type": "presence", "room": "r", "user": "bob", "status": "online", "version": 3}
    assert json.loads(protocol.typing("r", "bob")) == {"type": "typing", "room": "r",
                                                       "user": "bob"}


def test_events_from_the_exchange_are_rebuilt_from_their_checked_fields() -> None:
    body = orjson.dumps({"type": "presence", "room": "r", "user": "bob", "status": "offline",
                         "version": 9, "extra": "<script>"})
    assert protocol.event("presence", "r", body) == (
        protocol.presence("r", "bob", "offline", 9), "bob")
    typing = orjson.dumps({"type": "typing", "room": "r", "user": "bob", "x": 1})
    assert protocol.event("typing", "r", typing) == (protocol.typing("r", "bob"), "bob")


@pytest.mark.parametrize(("kind", "body"), [
    ("presence", b"{not json"),
    ("presence", b"[]"),
    ("presence", orjson.dumps({"type": "typing", "room": "r", "user": "bob"})),
    ("presence", orjson.dumps({"type": "presence", "room": "other", "user": "bob",
                               "status": "online", "version": 1})),
    ("presence", orjson.dumps({"type": "presence", "room": "r", "user": "bob",
                               "status": "away", "version": 1})),
    ("presence", orjson.dumps({"type": "presence", "room": "r", "user": "bob",
                               "status": "online", "version": True})),
    ("presence", orjson.dumps({"type": "presence", "room": "r", "user": "bob",
                               "status": "online"})),
    ("typing", orjson.dumps({"type": "typing", "room": "r", "user": ""})),
    ("typing", orjson.dumps({"type": "typing", "room": "r", "user": 5})),
    ("member", orjson.dumps({"type": "member", "room": "r", "user": "bob"})),
])
def test_malformed_or_misrouted_events_are_dropped(kind: str, body: bytes) -> None:
    assert protocol.event(kind, "r", body) is None


def test_the_throttle_lets_one_event_per_interval_per_connection_and_room() -> None:
    throttle = Throttle(3.0)
    assert throttle.allow("c1", "lobby", 100.0)
    assert not throttle.allow("c1", "lobby", 101.0)
    assert not throttle.allow("c1", "lobby", 102.9)
    assert throttle.allow("c1", "other", 101.0)  # another room
    assert throttle.allow("c2", "lobby", 101.0)  # another connection of anyone
    assert throttle.allow("c1", "lobby", 103.0)  # measured from the last allowed one
    assert not throttle.allow("c1", "lobby", 105.0)


def test_the_throttle_forgets_a_closed_connection() -> None:
    throttle = Throttle(3.0)
    throttle.allow("c1", "lobby", 100.0)
    throttle.forget("c1")
    assert throttle.last == {}
    assert throttle.allow("c1", "lobby", 100.5)
