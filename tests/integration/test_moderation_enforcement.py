"""Mute, lock and slow mode enforced at the gateway (issue 17 item 1, docs/moderation.md
"Enforcement") on the real stack: every transport's sends refused with the documented
codes, typing dropped, the state cached per connection and revoked by the member events
on every gateway, a mute that ends by itself, and nothing of a refused send stored.

The actions go through ``POST /v1/rooms/{room}/moderation``. Waiting is on events, not
time: after each action a probe typing event is published on ``chat.fanout`` behind its
member event (the same queue on each gateway, so it comes after it) and the test waits
until every watching connection has it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from pymongo import MongoClient

from tests.integration.conftest import Raw, Stack, raw_ws

pytestmark = pytest.mark.integration
T = 30


def db(stack: Stack) -> Any:
    return MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000)


def stored(stack: Stack, room: str) -> list[str]:
    """The client_ids of the room's plain messages, in order."""
    with db(stack) as client:
        return [d["client_id"] for d in client.get_default_database().messages.find(
            {"room": room, "kind": None}).sort("seq", 1)]


async def probe(stack: Stack, room: str) -> str:
    """Publish a typing event of a made-up user on ``chat.fanout``; returns that user.

    The moderation API answers after its member event is confirmed, so this probe is
    queued behind it on every gateway: a connection that has the probe's typing frame is
    on a gateway that has acted on the event."""
    user = f"probe-{uuid.uuid4().hex[:6]}"
    connection = await aio_pika.connect(stack.vhost.url("burrow-gateway"))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        fanout = await channel.get_exchange("chat.fanout", ensure=False)
        await fanout.publish(aio_pika.Message(orjson.dumps(
            {"type": "typing", "room": room, "user": user})), f"room.{room}.typing")
    return user


async def moderate(stack: Stack, watchers: list[Raw], room: str, actor: str,
                   action: str, user: str | None = None, seconds: int | None = None) -> None:
    """Take a moderation action through ``POST /v1/rooms/{room}/moderation`` and wait
    until every watcher's gateway has acted on its member event."""
    body: dict[str, Any] = {"action": action}
    if user is not None:
        body["user"] = user
    if seconds is not None:
        body["seconds"] = seconds
    async with httpx.AsyncClient(timeout=T) as client:
        answer = await client.post(
            stack.gateways[0].url(f"/v1/rooms/{room}/moderation"), json=body,
            headers={"Authorization": f"Bearer {stack.token(actor)}",
                     "Idempotency-Key": uuid.uuid4().hex})
    assert answer.status_code == 200, answer.text
    user = await probe(stack, room)
    for ws in watchers:
        while (frame := await ws.recv_until("typing", T))["user"] != user:
            assert frame["user"] != "bob", "a muted member's typing was relayed"


async def subscribed(ws: Raw, room: str) -> Raw:
    await ws.send({"type": "subscribe", "room": room})
    await ws.recv_until("subscribed", T)
    return ws


async def sent(ws: Raw, room: str, client_id: str) -> dict[str, Any]:
    """The answer to one send: its ack or its error (frames in between are skipped)."""
    await ws.send({"type": "send", "room": room, "client_id": client_id, "body": client_id})
    while True:
        frame = await ws.recv(T)
        if frame["type"] in ("ack", "error") and frame.get("client_id") == client_id:
            return frame


def http_send(stack: Stack, room: str, user: str, key: str, path: str = "",
              method: str = "POST", body: Any = None) -> httpx.Response:
    return httpx.request(
        method, stack.gateways[0].url(f"/v1/rooms/{room}/messages{path}"), timeout=T,
        json={"body": key} if body is None and method == "POST" and not path else body,
        headers={"Authorization": f"Bearer {stack.token(user)}", "Idempotency-Key": key})


async def test_a_muted_member_is_refused_everywhere_until_unmuted_or_the_mute_ends(
        stack: Stack) -> None:
    """Bob, on two gateways, sent before (so his membership is cached on both), is muted:
    WebSocket sends on both and HTTP sends and edits are refused with the time left, his
    typing never reaches Carol, deleting his own message still works; unmuted he sends
    again; muted for a moment, he sends again once it ends, without any event; and a
    flood while muted stores nothing."""
    stack.add_gateway()
    stack.room("team", "alice", "bob", "carol")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as here, \
            raw_ws(stack.gateways[1].ws_url, stack.token("bob")) as there, \
            raw_ws(stack.gateways[0].ws_url, stack.token("carol")) as carol:
        watchers = [await subscribed(ws, "team") for ws in (here, there, carol)]
        first = await sent(here, "team", "before-0")
        assert (await sent(there, "team", "before-1"))["type"] == "ack"

        await moderate(stack, watchers, "team", "alice", "mute", "bob", 60)
        for ws, key in ((here, "muted-0"), (there, "muted-1")):
            refused = await sent(ws, "team", key)
            assert (refused["type"], refused["code"], refused["room"]) == (
                "error", "muted", "team"), refused
            assert 50_000 < refused["retry_after_ms"] <= 60_000
        # typing is dropped, without an error: the next frame Bob gets is the pong
        await here.send({"type": "typing", "room": "team"})
        await here.send({"type": "ping", "id": 1})
        assert await here.recv_until_any(("pong", "error", "typing"), T) == {
            "type": "pong", "id": 1}
        # (and Carol never sees it: moderate()'s probe below comes after it, and its
        # wait fails on a typing frame of Bob's)

        answer = http_send(stack, "team", "bob", "muted-http")
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "muted"
        assert 50_000 < answer.json()["error"]["retry_after_ms"] <= 60_000
        assert 50 <= int(answer.headers["Retry-After"]) <= 60
        edit = http_send(stack, "team", "bob", "edit-1", f"/{first['id']}/edit",
                         body={"body": "changed"})
        assert (edit.status_code, edit.json()["error"]["code"]) == (403, "muted")
        # taking one's own words back stays allowed
        assert http_send(stack, "team", "bob", "del-1", f"/{first['id']}",
                         method="DELETE").status_code == 201

        # hostile: a flood while muted is refused at the gateway, nothing reaches the
        # sequencer (the rate limits refuse the rest of the burst as usual)
        for n in range(15):
            await there.send({"type": "send", "room": "team", "client_id": f"flood-{n}",
                              "body": "spam"})
        codes = set()
        for _ in range(15):
            codes.add((await there.recv_until("error", T))["code"])
        assert codes <= {"muted", "rate_limited"} and "muted" in codes, codes

        await moderate(stack, watchers, "team", "alice", "unmute", "bob")
        assert (await sent(here, "team", "unmuted-0"))["type"] == "ack"
        assert (await sent(there, "team", "unmuted-1"))["type"] == "ack"

        # a short mute ends by itself: no event, the clock decides
        await moderate(stack, watchers, "team", "alice", "mute", "bob", 2)
        refused = await sent(here, "team", "short-0")
        assert refused["code"] == "muted" and 0 < refused["retry_after_ms"] <= 2000
        await asyncio.sleep(refused["retry_after_ms"] / 1000)  # the promise is a time
        assert (await sent(here, "team", "expired-0"))["type"] == "ack"
    assert stored(stack, "team") == ["before-0", "before-1", "unmuted-0", "unmuted-1",
                                     "expired-0"]


async def test_lock_and_slow_mode_hold_members_and_not_moderators(stack: Stack) -> None:
    """A locked room refuses Carol (WebSocket and HTTP) and lets Alice, the owner, send;
    unlocked with slow mode, Carol's second message within it is refused with the wait
    (over HTTP too), while Bob, promoted to moderator, sends as he likes; slow mode off,
    Carol sends at once."""
    stack.room("hall", "alice", "bob", "carol")
    gateway = stack.gateways[0]
    async with raw_ws(gateway.ws_url, stack.token("alice")) as alice, \
            raw_ws(gateway.ws_url, stack.token("bob")) as bob, \
            raw_ws(gateway.ws_url, stack.token("carol")) as carol:
        watchers = [await subscribed(ws, "hall") for ws in (alice, bob, carol)]
        assert (await sent(carol, "hall", "open-c"))["type"] == "ack"  # cached: open

        await moderate(stack, watchers, "hall", "alice", "lock")
        refused = await sent(carol, "hall", "locked-c")
        assert (refused["code"], refused.get("retry_after_ms")) == ("locked", None)
        answer = http_send(stack, "hall", "carol", "locked-http")
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, "locked")
        assert (await sent(alice, "hall", "locked-owner"))["type"] == "ack"

        await moderate(stack, watchers, "hall", "alice", "unlock")
        await moderate(stack, watchers, "hall", "alice", "slow_mode", seconds=600)
        await moderate(stack, watchers, "hall", "alice", "promote", "bob")
        assert (await sent(carol, "hall", "slow-1"))["type"] == "ack"
        refused = await sent(carol, "hall", "slow-2")
        assert refused["code"] == "slow_mode", refused
        assert 590_000 < refused["retry_after_ms"] <= 600_000
        answer = http_send(stack, "hall", "carol", "slow-http")
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "slow_mode"
        assert int(answer.headers["Retry-After"]) > 590
        for key in ("mod-1", "mod-2", "mod-3"):
            assert (await sent(bob, "hall", key))["type"] == "ack"

        await moderate(stack, watchers, "hall", "alice", "slow_mode", seconds=0)
        assert (await sent(carol, "hall", "fast-1"))["type"] == "ack"
        assert (await sent(carol, "hall", "fast-2"))["type"] == "ack"
    assert stored(stack, "hall") == ["open-c", "locked-owner", "slow-1", "mod-1", "mod-2",
                                      "mod-3", "fast-1", "fast-2"]
