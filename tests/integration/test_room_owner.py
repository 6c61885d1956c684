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
