"""Rate limits (G7) on a real gateway: bursts pass up to capacity and refill at the
configured rate, a flooding client is refused (nothing stored) and finally disconnected
while others in the same room go on, HTTP answers 429 with Retry-After, and a limit is
shared by two gateways through Redis.

Timing is asserted only as lower bounds (a refusal's ``retry_after_ms`` is waited out) or
as bounds that hold however slow the machine is (at most capacity + rate x elapsed).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from websockets.exceptions import ConnectionClosed

from tests.integration.conftest import Raw, Stack, raw_ws

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): the
    tests' rooms are their own, and the gateways they add stop after them."""
    return shared_stack


# capacity 5, refill 5/s: a window of 1 s in limits' terms (docs/rate-limits.md)
TIGHT = {"BURROW_RATE_CONNECTION": "5/5", "BURROW_RATE_USER": "100/100",
         "BURROW_RATE_FLOOD": "1000/10"}


def stored(stack: Stack, room: str, sender: str) -> list[dict[str, Any]]:
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        return list(client.get_default_database().messages.find(
            {"room": room, "sender": sender}).sort("seq", 1))


async def send(ws: Raw, room: str, client_id: str) -> dict[str, Any]:
    """Send and return the answer to it: an ack or an error frame for that client_id."""
    await ws.send({"type": "send", "room": room, "client_id": client_id, "body": client_id})
    while True:
        frame = await ws.recv()
        if frame.get("client_id") == client_id and frame["type"] in ("ack", "error"):
            return frame


async def test_a_burst_passes_up_to_capacity_then_refills_at_the_rate(stack: Stack) -> None:
    gateway = stack.add_gateway(**TIGHT)
    stack.room("general0", "alice")
    async with raw_ws(gateway.ws_url, stack.token("alice")) as ws:
        started = time.monotonic()
        answers = [await send(ws, "general0", f"b{n}") for n in range(8)]
        elapsed = time.monotonic() - started
        kinds = [a["type"] for a in answers]
        allowed = kinds.count("ack")
        assert kinds[:5] == ["ack"] * 5  # the burst
        assert allowed <= 5 + 5 * elapsed + 1  # no more than capacity + refill
        refused = next(a for a in answers if a["type"] == "error")
        assert refused["code"] == "rate_limited" and refused["retry_after_ms"] > 0
        await asyncio.sleep(refused["retry_after_ms"] / 1000 + 0.05)  # lower bound only
        assert (await send(ws, "general0", "after-refill"))["type"] == "ack"
    acked = {a["client_id"] for a in answers if a["type"] == "ack"} | {"after-refill"}
    assert {m["client_id"] for m in stored(stack, "general0", "alice")} == acked


async def test_a_flooder_is_refused_then_cut_while_others_go_on(stack: Stack) -> None:
    gateway = stack.add_gateway(**{**TIGHT, "BURROW_RATE_FLOOD": "20/60"})
    stack.room("general1", "alice", "bob", "mallory")
    async with raw_ws(gateway.ws_url, stack.token("bob")) as bob, \
            raw_ws(gateway.ws_url, stack.token("mallory")) as mallory, \
            raw_ws(gateway.ws_url, stack.token("alice")) as alice:
        await bob.send({"type": "subscribe", "room": "general1"})
        assert (await bob.recv())["type"] == "subscribed"
        for n in range(40):  # fire and forget: a flood does not wait for its acks
            await mallory.send({"type": "send", "room": "general1", "client_id": f"f{n}",
                                "body": "spam"})
        for n in range(3):
            assert (await send(alice, "general1", f"a{n}"))["type"] == "ack"
        assert await mallory.closed() == 4429
        got: list[str] = []
        while not {"a0", "a1", "a2"} <= set(got):
            frame = await bob.recv_until("message")
            got.append(frame["client_id"])
    spam = stored(stack, "general1", "mallory")
    assert 5 <= len(spam) < 40  # the burst got through, the rest was refused, not stored
    assert [m["client_id"] for m in stored(stack, "general1", "alice")] == ["a0", "a1", "a2"]


async def test_http_over_the_ip_limit_gets_429_with_retry_after(stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_RATE_IP="3/1")
    token = stack.token("alice")
    async with httpx.AsyncClient(timeout=30) as http:
        answers = [await http.get(gateway.url("/v1/rooms"),
                                  headers={"Authorization": f"Bearer {token}"})
                   for _ in range(6)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited, [a.status_code for a in answers]
        assert int(limited[0].headers["Retry-After"]) >= 1
        assert limited[0].json()["error"]["code"] == "rate_limited"
        probe = await http.get(gateway.url("/healthz"))  # probes are never limited
        assert probe.status_code == 200


async def test_http_sends_over_the_user_limit_get_429_and_are_not_stored(
        stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_RATE_USER="2/1")
    stack.room("general3", "alice")
    token = stack.token("alice")
    async with httpx.AsyncClient(timeout=30) as http:
        codes = [(await http.post(gateway.url("/v1/rooms/general3/messages"),
                                  json={"body": "x"}, headers={
                                      "Authorization": f"Bearer {token}",
                                      "Idempotency-Key": f"k{n}"})).status_code
                 for n in range(5)]
    assert codes[:2] == [201, 201] and 429 in codes
    assert len(stored(stack, "general3", "alice")) == codes.count(201)


async def test_two_gateways_share_a_user_limit_through_redis(stack: Stack,
                                                            redis_url: str) -> None:
    shared = {"BURROW_RATE_STORAGE": redis_url, "BURROW_RATE_USER": "4/1",
              "BURROW_RATE_CONNECTION": "100/100"}
    one, two = stack.add_gateway(**shared), stack.add_gateway(**shared)
    stack.room("general4", "alice")
    async with raw_ws(one.ws_url, stack.token("alice")) as a, \
            raw_ws(two.ws_url, stack.token("alice")) as b:
        started = time.monotonic()
        answers = [await send(ws, "general4", f"s{n}") for n in range(4) for ws in (a, b)]
        elapsed = time.monotonic() - started
    allowed = sum(1 for x in answers if x["type"] == "ack")
    assert 4 <= allowed <= 4 + 4 * elapsed + 1  # one budget for both gateways, not two


FRAMES_TIGHT = {"BURROW_RATE_FRAMES": "5/5", "BURROW_RATE_FLOOD": "1000/10"}
EVERY_FRAME = {
    "subscribe": {"type": "subscribe", "room": "general", "since": 0},
    "unsubscribe": {"type": "unsubscribe", "room": "general"},
    "read": {"type": "read", "room": "general", "seq": 0},
    "typing": {"type": "typing", "room": "general"},
    "ping": {"type": "ping", "id": "p"},
}


@pytest.mark.parametrize("kind", list(EVERY_FRAME))
async def test_a_flood_of_any_other_frame_is_refused_before_its_work(stack: Stack,
                                                                     kind: str) -> None:
    """Subscribe, unsubscribe, read, typing and ping floods: past the burst each frame
    is answered ``rate_limited`` (with the frame's room) and nothing is done for it,
    while the connection's sends, which have limits of their own, still pass."""
    gateway = stack.add_gateway(**FRAMES_TIGHT)
    room = f"general-{kind}"  # the module's stack: a room per kind
    stack.room(room, "alice")
    frame = {**EVERY_FRAME[kind], **({"room": room} if "room" in EVERY_FRAME[kind] else {})}
    async with raw_ws(gateway.ws_url, stack.token("alice")) as ws:
        for _ in range(30):
            await ws.send(frame)
        refused = await ws.recv_until("error")
        assert refused["code"] == "rate_limited", refused
        assert refused["retry_after_ms"] > 0
        assert refused.get("room") == frame.get("room")
        # sends have their own bucket: the flood of other frames does not block them
        assert (await send(ws, room, "still"))["type"] == "ack"
    assert [m["client_id"] for m in stored(stack, room, "alice")] == ["still"]


async def test_a_subscribe_flood_binds_the_room_at_most_burst_times(stack: Stack) -> None:
    """What a refused subscribe would have cost is not spent: the gateway answers at
    most the burst of them with ``subscribed``, then closes the flooder (4429)."""
    gateway = stack.add_gateway(BURROW_RATE_FRAMES="5/1", BURROW_RATE_FLOOD="20/60")
    stack.room("general6", "mallory")
    async with raw_ws(gateway.ws_url, stack.token("mallory")) as mallory:
        for n in range(200):
            await mallory.send({"type": "subscribe", "room": "general6", "since": 0})
        answers: list[str] = []
        code = None
        while code is None:
            try:
                frame = await mallory.recv(timeout=30)
            except ConnectionClosed:  # the close code says why
                code = await mallory.closed()
                break
            answers.append(frame["type"] if frame["type"] != "error" else frame["code"])
        assert code == 4429
        assert answers.count("subscribed") <= 5 + 5  # the burst, and at most a refill
        # the 20th refusal closes it; the frames queued behind the close may not be sent
        assert answers.count("rate_limited") >= 15


async def test_behind_a_trusted_proxy_each_client_address_has_its_own_limit(
        stack: Stack) -> None:
    """With Sanic told how many proxies are in front (``SANIC_PROXIES_COUNT``), the IP
    limit counts the client address the proxy forwards; without it, a forwarded header
    is ignored, so a client cannot pick a fresh address per request."""
    trusting = stack.add_gateway(BURROW_RATE_IP="3/1", SANIC_PROXIES_COUNT="1")
    plain = stack.add_gateway(BURROW_RATE_IP="3/1")
    token = stack.token("alice")

    async def statuses(url: str, forwarded_for: list[str]) -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            return [(await http.get(url, headers={"Authorization": f"Bearer {token}",
                                                  "X-Forwarded-For": address})).status_code
                    for address in forwarded_for]

    # one client behind the proxy floods: it is limited...
    assert 429 in await statuses(trusting.url("/v1/rooms"), ["203.0.113.7"] * 6)
    # ...another client behind the same proxy is not
    assert await statuses(trusting.url("/v1/rooms"), ["198.51.100.9"] * 3) == [200] * 3
    # without the setting, forged addresses are all the one peer address: limited
    assert 429 in await statuses(plain.url("/v1/rooms"),
                                 [f"192.0.2.{n}" for n in range(6)])
