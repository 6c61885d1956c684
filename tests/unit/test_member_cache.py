"""The gateway's cache of what a send is enforced with (gateway/members.py): read once,
then served without the database; forgotten by the member events that change it, on
every connection of the user; never filled by a read that an event overtook."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from burrow.core.send_rules import Member, RoomRules
from gateway.connection import Connection
from gateway.members import Members
from gateway.protocol import ProtocolError

UNTIL = datetime(2030, 1, 1, tzinfo=UTC)


class Rooms:
    """A RoomStore stand-in: counts reads; a read may be held open until released."""

    def __init__(self) -> None:
        self.members: dict[tuple[str, str], dict[str, Any]] = {}
        self.rooms: dict[str, dict[str, Any]] = {}
        self.reads: list[tuple[str, str, bool]] = []
        self.hold: asyncio.Event | None = None

    async def standing(self, room: str, user: str, with_room: bool = True
                       ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        self.reads.append((room, user, with_room))
        found = self.members.get((room, user))
        rules = dict(self.rooms.get(room, {})) if with_room else None
        if self.hold is not None:
            await self.hold.wait()
        return None if found is None else (dict(found), rules)


class Transport:
    async def send(self, frame: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


def connection(user: str, name: str) -> Connection:
    return Connection(name, user, False, Transport(), 10)


async def unsubscribe(conn: Connection, room: str) -> None: ...


@pytest.fixture
def setup() -> tuple[Members, Rooms, dict[str, Connection]]:
    rooms = Rooms()
    rooms.members[("hall", "bob")] = {"role": "member"}
    rooms.rooms["hall"] = {"slow_mode_s": 30}
    local = {c.id: c for c in (connection("bob", "b1"), connection("bob", "b2"),
                               connection("carol", "c1"))}
    return Members(rooms, None, local, unsubscribe), rooms, local  # type: ignore[arg-type]


def event(action: str, user: str, **extra: object) -> bytes:
    return orjson.dumps({**extra, "type": "member", "room": "hall", "user": user,
                         "action": action})


async def test_read_once_then_served_from_the_caches(setup: Any) -> None:
    members, rooms, local = setup
    b1, b2 = local["b1"], local["b2"]
    assert await members.standing(b1, "hall") == (Member("member"), RoomRules(30))
    assert await members.standing(b1, "hall") == (Member("member"), RoomRules(30))
    assert await members.check(b1, "hall") == Member("member")
    # another connection reads its membership, the room's rules come from the worker
    assert await members.standing(b2, "hall") == (Member("member"), RoomRules(30))
    assert rooms.reads == [("hall", "bob", True), ("hall", "bob", False)]


async def test_a_mute_forgets_the_users_membership_on_every_connection(setup: Any) -> None:
    members, rooms, local = setup
    for conn in local.values():
        if conn.user == "bob":
            await members.standing(conn, "hall")
    rooms.members[("hall", "bob")]["muted_until"] = UNTIL
    await members.on_event("hall", event("muted", "bob", until=0))
    assert all("hall" not in c.member_of for c in local.values())
    for name in ("b1", "b2"):
        member, _ = await members.standing(local[name], "hall")
        assert member.muted_until_ms == int(UNTIL.timestamp() * 1000)
    assert members.room_rules == {"hall": RoomRules(30)}  # the room's rules stay


async def test_a_room_event_forgets_the_rooms_rules_only(setup: Any) -> None:
    members, rooms, local = setup
    await members.standing(local["b1"], "hall")
    rooms.rooms["hall"] = {"locked": True}
    await members.on_event("hall", event("room", "alice", locked=True, slow_mode_s=0))
    assert "hall" in local["b1"].member_of
    assert await members.standing(local["b1"], "hall") == (Member("member"),
                                                           RoomRules(0, True))


async def test_a_read_an_event_overtook_is_used_but_not_cached(setup: Any) -> None:
    members, rooms, local = setup
    rooms.hold = asyncio.Event()
    reading = asyncio.create_task(members.standing(local["b1"], "hall"))
    await asyncio.sleep(0)  # the read is in flight
    await members.on_event("hall", event("role", "bob", role="moderator"))
    rooms.hold.set()
    assert (await reading)[0] == Member("member")  # answered with what it read
    assert "hall" not in local["b1"].member_of and members.room_rules == {}


async def test_a_reconnect_forgets_everything(setup: Any) -> None:
    members, _, local = setup
    await members.standing(local["b1"], "hall")
    await members.revalidate()
    assert local["b1"].member_of == {} and members.room_rules == {}


async def test_non_members_and_junk_events(setup: Any) -> None:
    members, _, local = setup
    with pytest.raises(ProtocolError) as refused:
        await members.standing(local["c1"], "hall")
    assert refused.value.code == "forbidden"
    await members.standing(local["b1"], "hall")
    for junk in (b"not json", b"[]", orjson.dumps({"action": "muted"}),
                 event("muted", "carol"), event("shouted", "bob")):
        await members.on_event("hall", junk)
    assert "hall" in local["b1"].member_of  # nothing about bob's standing came
