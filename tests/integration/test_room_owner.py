"""A room is never left without an owner: the owner can neither leave nor be removed (by
an admin either) while other members remain; alone, they may leave."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


async def test_the_owner_stays_while_the_room_has_members(stack: Stack) -> None:
    stack.room("club", "alice", "bob")
    admin = stack.token("root", roles=("admin",))
    status, body = stack.http("DELETE", "/v1/rooms/club/members/alice", "alice")
    assert (status, body["error"]["code"]) == (409, "owner_stays")
    status, body = stack.http("DELETE", "/v1/rooms/club/members/alice", None, token=admin)
    assert (status, body["error"]["code"]) == (409, "owner_stays")
    status, body = stack.http("GET", "/v1/rooms/club/members", "alice")
    assert [m["user"] for m in body["members"]] == ["alice", "bob"]
    # the others may go; then the owner alone may leave too
    assert stack.http("DELETE", "/v1/rooms/club/members/bob", "bob")[0] == 204
    assert stack.http("DELETE", "/v1/rooms/club/members/alice", "alice")[0] == 204


async def test_adding_others_to_rooms_is_rate_limited_per_user(stack: Stack) -> None:
    """Anyone may add anyone to a room, so how many members one user adds is limited
    (spam, presence amplification): past the burst, 429 and nothing added."""
    stack.add_gateway(BURROW_RATE_MEMBERS="5/0.1")
    index = len(stack.gateways) - 1
    assert stack.http("POST", "/v1/rooms", "alice", {"id": "spam", "members": ["u1", "u2"]},
                      gateway=index)[0] == 201  # 3 of 5: the room and its two members
    answers = [stack.http("PUT", f"/v1/rooms/spam/members/v{n}", "alice", gateway=index)[0]
               for n in range(4)]
    assert answers[:2] == [200, 200] and answers[2:] == [429, 429]
    status, body = stack.http("POST", "/v1/rooms", "alice",
                              {"id": "spam2", "members": [f"w{n}" for n in range(20)]},
                              gateway=index)
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    members = stack.http("GET", "/v1/rooms/spam/members", "alice", gateway=index)[1]["members"]
    assert sorted(m["user"] for m in members) == ["alice", "u1", "u2", "v0", "v1"]
    # another user has a bucket of their own; an admin is not limited
    assert stack.http("POST", "/v1/rooms", "bob", {"id": "fine", "members": ["x"]},
                      gateway=index)[0] == 201
    admin = stack.token("root", roles=("admin",))
    for n in range(8):
        assert stack.http("PUT", f"/v1/rooms/spam/members/a{n}", None, gateway=index,
                          token=admin)[0] == 200
