"""Replies and threads (issue 16 item 5, docs/protocol.md "Replies and threads"), on the
real stack: the sequencer threads a reply under its root, refuses a reply to what is no
message of the room (nothing stored), and keeps the root's ``reply_count`` and
``last_reply`` right however often a reply is sent again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.integration.conftest import Raw, Stack, raw_ws

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): each
    test has rooms of its own."""
    return shared_stack


@pytest.fixture
def mongo(stack: Stack) -> Iterator[Database[dict[str, Any]]]:
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        yield client.get_default_database()


async def send(ws: Raw, room: str, client_id: str, body: str,
               **extra: Any) -> dict[str, Any]:
    """Send; the ack or error frame that answers it."""
    await ws.send({"type": "send", "room": room, "client_id": client_id, "body": body,
                   **extra})
    return await ws.recv_until_any(("ack", "error"))


async def test_replies_thread_under_one_root(stack: Stack,
                                             mongo: Database[dict[str, Any]]) -> None:
    stack.room("th", "alice", "bob", "dan")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as alice, \
            raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob, \
            raw_ws(stack.gateways[0].ws_url, stack.token("dan")) as dan:
        await dan.send({"type": "subscribe", "room": "th", "v": 1})
        await dan.recv_until("subscribed")
        root = await send(alice, "th", "r", "root")
        other = await send(alice, "th", "o", "not in the thread")
        first = await send(bob, "th", "b1", "reply", reply_to=root["id"])
        second = await send(alice, "th", "a2", "reply to the reply", reply_to=first["id"])
        # retried (same client_id): the same ack, not counted twice
        again = await send(alice, "th", "a2", "reply to the reply", reply_to=first["id"])
        assert (again["type"], again["seq"], again["id"]) == ("ack", 4, second["id"]), again
        frames = [await dan.recv_until("message") for _ in range(4)]
    assert [f["seq"] for f in frames] == [1, 2, 3, 4]
    assert "reply_to" not in frames[0] and "thread" not in frames[1]
    assert (frames[2]["reply_to"], frames[2]["thread"]) == (root["id"], root["id"])
    assert (frames[3]["reply_to"], frames[3]["thread"]) == (first["id"], root["id"])
    # thread history: the root's replies in seq order, not the root, not the others
    status, body = stack.http("GET", f"/v1/rooms/th/messages?thread={root['id']}", "bob")
    assert status == 200, body
    assert [m["id"] for m in body["messages"]] == [first["id"], second["id"]]
    status, body = stack.http(
        "GET", f"/v1/rooms/th/messages?thread={root['id']}&after=3", "bob")
    assert [m["id"] for m in body["messages"]] == [second["id"]], body
    # the root in history, v1 and v2: counted once, the last reply named
    for query in ("", "?v=2"):
        status, body = stack.http("GET", f"/v1/rooms/th/messages{query}", "bob")
        assert status == 200, body
        by_id = {m["id"]: m for m in body["messages"]}
        top = by_id[root["id"]]
        assert top["reply_count"] == 2, top
        assert {k: top["last_reply"][k] for k in ("seq", "id", "sender")} == {
            "seq": 4, "id": second["id"], "sender": "alice"}
        assert top["last_reply"]["ts"] == by_id[second["id"]]["ts"]
        assert "reply_count" not in by_id[other["id"]]
    assert mongo.messages.count_documents({"room": "th", "thread": root["id"]}) == 2
    # members only, as history
    stack.room("else", "carol")
    status, _ = stack.http("GET", f"/v1/rooms/th/messages?thread={root['id']}", "carol")
    assert status == 403
    status, _ = stack.http("GET", "/v1/rooms/th/messages?thread=" + "x" * 65, "bob")
    assert status == 400


async def test_a_retried_reply_after_others_leaves_the_count(
        stack: Stack, mongo: Database[dict[str, Any]]) -> None:
    """A retry of an older reply recounts: still 2, last_reply stays the newest."""
    stack.room("rc", "alice")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as alice:
        root = await send(alice, "rc", "r", "root")
        one = await send(alice, "rc", "1", "one", reply_to=root["id"])
        two = await send(alice, "rc", "2", "two", reply_to=root["id"])
        again = await send(alice, "rc", "1", "one", reply_to=root["id"])
        assert again["seq"] == one["seq"]
    doc = mongo.messages.find_one({"_id": root["id"]})
    assert doc is not None
    assert (doc["reply_count"], doc["last_reply"]["id"]) == (2, two["id"]), doc


async def test_replies_to_no_message_of_the_room_are_refused(
        stack: Stack, mongo: Database[dict[str, Any]]) -> None:
    stack.room("rr", "alice")
    stack.room("ro", "alice")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as alice:
        root = await send(alice, "rr", "r", "root")
        elsewhere = await send(alice, "ro", "x", "in another room")
        await alice.send({"type": "edit", "room": "rr", "client_id": "e",
                          "id": root["id"], "body": "edited"})
        edit = await alice.recv_until_any(("ack", "error"))
        assert edit["type"] == "ack", edit
        for client_id, target in [("u", "no-such-message"), ("o", elsewhere["id"]),
                                  ("c", edit["id"])]:
            refused = await send(alice, "rr", client_id, "lost", reply_to=target)
            assert (refused["type"], refused["code"], refused["client_id"]) == (
                "error", "not_found", client_id), refused
        for client_id, bad in [("b1", 7), ("b2", ""), ("b3", "x" * 65), ("b4", ["id"])]:
            refused = await send(alice, "rr", client_id, "bad", reply_to=bad)
            assert (refused["type"], refused["code"]) == ("error", "bad_frame"), refused
        # a later send takes the next seq: the refusals took none
        after = await send(alice, "rr", "n", "next")
        assert after["seq"] == 3, after
    assert mongo.messages.count_documents({"room": "rr", "reply_to": {"$exists": True}}) == 0
    assert "reply_count" not in (mongo.messages.find_one({"_id": root["id"]}) or {})


def test_http_send_replies(stack: Stack) -> None:
    stack.room("hr", "alice")

    def post(body: Any, key: str) -> tuple[int, Any]:
        answer = httpx.post(stack.gateways[0].url("/v1/rooms/hr/messages"), json=body,
                            timeout=30, headers={
                                "Authorization": f"Bearer {stack.token('alice')}",
                                "Idempotency-Key": key})
        return answer.status_code, answer.json()
    status, root = post({"body": "root"}, "k1")
    assert status == 201, root
    status, reply = post({"body": "reply", "reply_to": root["id"]}, "k2")
    assert status == 201 and reply["seq"] == 2, reply
    status, refused = post({"body": "lost", "reply_to": "nope"}, "k3")
    assert (status, refused["error"]["code"]) == (404, "not_found"), refused
    status, refused = post({"body": "bad", "reply_to": 5}, "k4")
    assert (status, refused["error"]["code"]) == (400, "bad_request"), refused
    status, body = stack.http("GET", f"/v1/rooms/hr/messages?thread={root['id']}&v=2",
                              "alice")
    assert [(m["id"], m["thread"]) for m in body["messages"]] == [(reply["id"], root["id"])]
