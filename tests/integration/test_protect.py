"""Users protect themselves (issue 17, item 2) on the real stack: blocks keep a blocked
user's messages out of the blocker's pushes (local APNs server) and digest (capturing
SMTP server) while the other members are told, and keep the blocked user from adding
the blocker to rooms; invitations with ``BURROW_INVITES=strangers``; the routes against
hostile input. The decisions themselves: tests/unit/test_blocks.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pymongo import MongoClient

from burrow.client import ChatClient, ChatError
from tests.conftest import until
from tests.fakes.apns import ApnsRequest, device_token
from tests.fakes.smtp import FakeSmtpServer
from tests.integration.conftest import Stack
from tests.integration.test_mail_jobs import mail_workers, publish, set_email
from tests.integration.test_push_jobs import Providers, find, providers, register

pytestmark = pytest.mark.integration
__all__ = ["providers"]  # the fixture (local FCM and APNs servers)


def body_of(request: ApnsRequest) -> str:
    assert request.payload is not None
    return str(request.payload["aps"]["alert"]["body"])


async def post(stack: Stack, user: str, room: str, body: str, key: str,
               mentions: list[str] | None = None) -> None:
    """Send over HTTP: the sender has no connection that could look active."""
    payload: dict[str, Any] = {"body": body}
    if mentions:
        payload["mentions"] = {"users": mentions}
    async with httpx.AsyncClient() as http:
        answer = await http.post(stack.gateways[0].url(f"/v1/rooms/{room}/messages"),
                                 json=payload, headers={
                                     "Authorization": f"Bearer {stack.token(user)}",
                                     "Idempotency-Key": key})
    assert answer.status_code == 201, answer.text


def members(stack: Stack, room: str) -> set[str]:
    return {m["user"] for m in find(stack, "memberships", {"room": room})}


async def test_a_blocked_user_is_not_pushed_mailed_nor_adding_the_blocker(
        providers: Providers, relay: FakeSmtpServer, stack: Stack) -> None:
    notifier, _ = mail_workers(stack, relay, **{
        **providers.env, "BURROW_IDLE_AFTER": "60", "BURROW_WORKER_CONCURRENCY": "1"})
    # ann (a phone) and fay (an email) block bob; cat (a phone) does not.
    stack.room("team", "cat", "ann", "bob", "fay")
    phones = {user: device_token() for user in ("ann", "cat")}
    for user, phone in phones.items():
        register(stack, user, "apns", phone)
    set_email(stack, "fay")
    for blocker in ("ann", "fay"):
        assert stack.http("PUT", "/v1/me/blocks/bob", blocker) == (
            200, {"user": "bob", "blocked": True})
    assert stack.http("PUT", "/v1/me/blocks/bob", "ann")[0] == 200  # again: the same
    status, listed = stack.http("GET", "/v1/me/blocks", "ann")
    assert status == 200 and [b["user"] for b in listed["blocks"]] == ["bob"]
    assert stack.http("GET", "/v1/me/blocks", "cat") == (200, {"blocks": []})

    await post(stack, "cat", "team", "hello from cat", "c1")
    await post(stack, "bob", "team", "spam from bob", "b1", mentions=["ann", "fay"])
    # ann: no mention push, and her room push tells cat's message alone (not "+1 more")
    expected = {(phones["ann"], "cat: hello from cat"), (phones["cat"], "bob: spam from bob")}
    try:
        pushed = await providers.apns.wait_for_async(2, timeout=60)
    except TimeoutError:
        got = [(r.token, body_of(r)) for r in providers.apns.requests]
        raise AssertionError(f"{got}\n{notifier.log_tail()}") from None
    assert {(r.token, body_of(r)) for r in pushed} == expected
    # every room push has been taken; one job at a time, so a sentinel behind them comes
    # after they all decided: nobody else was pushed (no mention of bob's to ann)
    await until(lambda: not find(stack, "memberships", {"push_pending_at": {"$exists": 1}}),
                timeout=60)
    await publish(stack, "push.due", {"kind": "direct", "user": "cat", "title": "t",
                                      "body": "sentinel"})
    await providers.apns.wait_for_async(3, timeout=60)
    assert {(r.token, body_of(r)) for r in providers.apns.requests} == {
        *expected, (phones["cat"], "sentinel")}

    [mail] = await relay.wait_for_async(1, timeout=60)
    assert mail.rcpt_tos == ("fay@example.test",)
    text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "hello from cat" in text and "spam from bob" not in text
    assert mail.message["Subject"] == "1 unread message in 1 room"

    # bob cannot add ann: not to his room, not in a room he creates (nothing is created)
    stack.room("bobs", "bob", "cat")
    status, refused = stack.http("PUT", "/v1/rooms/bobs/members/ann", "bob")
    assert (status, refused["error"]["code"]) == (403, "forbidden"), refused
    assert "block" not in refused["error"]["message"]
    status, refused = stack.http("POST", "/v1/rooms", "bob",
                                 {"id": "trap", "members": ["cat", "ann"]})
    assert (status, refused["error"]["code"]) == (403, "forbidden"), refused
    assert members(stack, "bobs") == {"bob", "cat"} and members(stack, "trap") == set()
    assert stack.http("PUT", "/v1/rooms/bobs/members/dan", "bob")[0] == 200  # others: yes
    assert stack.http("DELETE", "/v1/me/blocks/bob", "ann")[0] == 204
    assert stack.http("DELETE", "/v1/me/blocks/bob", "ann")[1]["error"]["code"] == "not_found"
    assert stack.http("PUT", "/v1/rooms/bobs/members/ann", "bob") == (
        200, {"room": "bobs", "user": "ann", "added": True})


async def block_routes_refuse_hostile_input(stack: Stack) -> None:
    """The block routes against hostile input, the cap, and the Python client's calls."""
    for method in ("GET", "PUT", "DELETE"):
        path = "/v1/me/blocks" + ("" if method == "GET" else "/bob")
        assert stack.http(method, path, None)[0] == 401
        assert stack.http(method, path, None, token="not.a.token")[0] == 401
    for user in ("ann", quote("new\nline"), quote("\u200b"), "%ff", "x" * 129):
        for method in ("PUT", "DELETE"):
            status, answer = stack.http(method, f"/v1/me/blocks/{user}", "ann")
            assert status == 400 and answer["error"]["code"] == "bad_user", (user, status, answer)
    # 1,000 blocks at most: ann blocks 1,000 (stored as the API would), the next is 409
    now = datetime.now(UTC)
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.get_default_database().blocks.insert_many(
            [{"user": "ann", "blocked": f"u{i:04d}", "at": now} for i in range(1000)])
    status, answer = stack.http("PUT", "/v1/me/blocks/zed", "ann")
    assert (status, answer["error"]["code"]) == (409, "too_many_blocks"), answer
    assert stack.http("PUT", "/v1/me/blocks/u0001", "ann")[0] == 200  # a repeat: fine
    assert len(find(stack, "blocks", {"user": "ann"})) == 1000
    assert stack.http("DELETE", "/v1/me/blocks/u0001", "ann")[0] == 204
    assert stack.http("PUT", "/v1/me/blocks/zed", "ann")[0] == 200
    assert len(stack.http("GET", "/v1/me/blocks", "ann")[1]["blocks"]) == 1000
    assert stack.http("PUT", "/v1/me/blocks/bob", "ann", b"x" * 10_000)[0] == 413
    # an id the client escaped is the id: a@b, not a%40b
    assert stack.http("PUT", f"/v1/me/blocks/{quote('a@b', safe='')}", "bob")[0] == 200
    assert find(stack, "blocks", {"user": "bob"})[0]["blocked"] == "a@b"

    # the Python client's calls: blocks, leave (the owner stays while others are in)
    stack.room("solo", "ann", "bob")
    ann, bob = (ChatClient([stack.gateways[0].ws_url], lambda u=u: stack.token(u))
                for u in ("ann", "bob"))
    assert await bob.blocks() == {"a@b"} and bob.blocked == {"a@b"}
    await bob.block("ann")
    await bob.unblock("a@b")
    assert await bob.blocks() == {"ann"}
    with pytest.raises(ChatError) as refused:
        await bob.block("bob")
    assert refused.value.code == "bad_user"
    with pytest.raises(ChatError) as refused:
        await ann.leave("solo", "ann")
    assert refused.value.code == "owner_stays"
    await bob.leave("solo", "bob")
    assert members(stack, "solo") == {"ann"}
    await ann.leave("solo", "ann")  # alone in it: the owner may leave
    assert members(stack, "solo") == set()


async def test_block_routes_and_invitations_for_strangers(stack: Stack) -> None:
    """One stack for both (the suite's time): users of their own in each part."""
    await block_routes_refuse_hostile_input(stack)
    stack.add_gateway(BURROW_INVITES="strangers")
    invites = 1  # the gateway that invites strangers

    def call(method: str, path: str, user: str | None, body: Any = None) -> tuple[int, Any]:
        return stack.http(method, path, user, body, gateway=invites)

    stack.room("home", "alice", "bob")  # through gateway 0 (BURROW_INVITES=off): members
    stack.room("side", "bob")
    # bob shares a room with alice: added; dan shares none: invited, not a member
    assert call("PUT", "/v1/rooms/side/members/alice", "bob") == (
        200, {"room": "side", "user": "alice", "added": True})
    status, made = call("PUT", "/v1/rooms/home/members/dan", "alice")
    assert status == 202 and set(made) == {"room", "user", "invitation"}, made
    invitation = made["invitation"]
    assert call("PUT", "/v1/rooms/home/members/dan", "alice")[1]["invitation"] == invitation
    assert members(stack, "home") == {"alice", "bob"}
    status, listed = call("GET", "/v1/me/invitations", "dan")
    assert status == 200 and [(i["id"], i["room"], i["by"]) for i in listed[
        "invitations"]] == [(invitation, "home", "alice")]
    assert listed["invitations"][0]["expires_at"] - listed["invitations"][0]["at"] == \
        14 * 86_400_000
    assert call("GET", "/v1/me/invitations", "bob") == (200, {"invitations": []})

    # someone else's id is not found, whatever they try; a malformed one is refused
    for action in ("accept", "decline"):
        status, answer = call("POST", f"/v1/me/invitations/{invitation}/{action}", "bob")
        assert (status, answer["error"]["code"]) == (404, "not_found"), answer
        assert call("POST", f"/v1/me/invitations/{'0' * 32}/{action}", "dan")[0] == 404
        assert call("POST", f"/v1/me/invitations/nothex/{action}", "dan")[0] == 400
        assert call("POST", f"/v1/me/invitations/{invitation}/{action}", None)[0] == 401
    assert call("GET", "/v1/me/invitations", None)[0] == 401

    accept = f"/v1/me/invitations/{invitation}/accept"
    assert call("POST", accept, "dan") == (200, {"room": "home", "user": "dan", "added": True})
    assert members(stack, "home") == {"alice", "bob", "dan"}
    assert call("POST", accept, "dan") == (200, {"room": "home", "user": "dan", "added": False})
    assert call("GET", "/v1/me/invitations", "dan") == (200, {"invitations": []})
    # removed afterwards: accepting again does not bring dan back
    assert call("DELETE", "/v1/rooms/home/members/dan", "alice")[0] == 204
    assert call("POST", accept, "dan")[1]["added"] is False
    assert "dan" not in members(stack, "home")

    # declined: no membership, no invitation left
    status, made = call("PUT", "/v1/rooms/home/members/erin", "alice")
    assert status == 202
    decline = f"/v1/me/invitations/{made['invitation']}/decline"
    assert call("POST", decline, "erin") == (204, None)
    assert call("POST", decline, "erin")[0] == 404
    assert call("POST", f"/v1/me/invitations/{made['invitation']}/accept", "erin")[0] == 404
    assert "erin" not in members(stack, "home")
    assert find(stack, "invitations", {"user": "erin"}) == []

    # banned from the room since the invitation: refused, and it waits for an unban
    status, made = call("PUT", "/v1/rooms/home/members/hal", "alice")
    assert status == 202
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        bans = client.get_default_database().room_bans
        bans.insert_one({"room": "home", "user": "hal", "by": "alice", "reason": "",
                         "at": datetime.now(UTC)})  # as the ban action stores it
        status, refused = call("POST", f"/v1/me/invitations/{made['invitation']}/accept",
                               "hal")
        assert (status, refused["error"]["code"]) == (403, "banned"), refused
        assert "hal" not in members(stack, "home")
        bans.delete_one({"room": "home", "user": "hal"})
    assert call("POST", f"/v1/me/invitations/{made['invitation']}/accept", "hal")[1][
        "added"] is True

    # a created room's strangers are invited; a blocker is refused like an add
    status, created = call("POST", "/v1/rooms", "alice", {"id": "new", "members": [
        "bob", "gus"]})
    assert status == 201 and set(created["invited"]) == {"gus"}, created
    assert members(stack, "new") == {"alice", "bob"}
    assert call("PUT", "/v1/me/blocks/alice", "gus")[0] == 200
    status, refused = call("PUT", "/v1/rooms/home/members/gus", "alice")
    assert (status, refused["error"]["code"]) == (403, "forbidden"), refused
    assert find(stack, "invitations", {"room": "home", "user": "gus"}) == []
