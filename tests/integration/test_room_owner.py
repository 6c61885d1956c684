"""A room is never left without an owner: the owner can neither leave nor be removed (by
an admin either) while other members remain; alone, they may leave."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): the
    tests' rooms are their own, and the gateways they add stop after them."""
    return shared_stack


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


async def test_member_ids_in_paths_are_percent_decoded(stack: Stack) -> None:
    """Clients escape user ids in paths (``a@b c`` as ``a%40b%20c``): the member is the
    decoded id, removable by the same escaped path; an escape that is not UTF-8 is 400,
    not a member under a mangled name."""
    stack.room("escapes", "alice")
    status, body = stack.http("PUT", "/v1/rooms/escapes/members/d%C3%A9%40b%20c", "alice")
    assert (status, body["user"], body["added"]) == (200, "dé@b c", True)
    members = stack.http("GET", "/v1/rooms/escapes/members", "alice")[1]["members"]
    assert sorted(m["user"] for m in members) == ["alice", "dé@b c"]
    status, body = stack.http("PUT", "/v1/rooms/escapes/members/a%ffb", "alice")
    assert (status, body["error"]["code"]) == (400, "bad_user")
    assert stack.http("DELETE", "/v1/rooms/escapes/members/d%C3%A9%40b%20c", "alice")[0] == 204
    members = stack.http("GET", "/v1/rooms/escapes/members", "alice")[1]["members"]
    assert [m["user"] for m in members] == ["alice"]
