"""burrow.core.ids: the room of a routing key (the gateway routes chat.fanout deliveries by it)."""

from __future__ import annotations

import pytest

from burrow.core import ids


@pytest.mark.parametrize(("key", "room"), [
    ("room.lobby.msg", "lobby"),
    ("room.a-B_9.presence", "a-B_9"),
    (ids.message_key("x" * 64), "x" * 64),
    (ids.event_key("lobby", "typing"), "lobby"),
])
def test_room_of_key_gives_the_room_of_a_room_key(key: str, room: str) -> None:
    assert ids.room_of_key(key) == room


@pytest.mark.parametrize("key", [
    "", "lobby", "room.lobby", "room.lobby.msg.x", "rooms.lobby.msg", "x.lobby.msg",
    "ROOM.lobby.msg", "room..msg", "room.a b.msg", "room.café.msg", "room lobby msg",
])
def test_room_of_key_is_none_for_any_other_key(key: str) -> None:
    assert ids.room_of_key(key) is None
