"""One-time tickets (``POST /v1/ws-ticket``) against a hostile client: a ticket opens one
WebSocket or SSE stream of the user who bought it with a header token, once, briefly,
on any gateway; everything else that looks like a ticket gets the 401 of a bad token.

Expiry is tested without waiting for it: an expired record is written through the
store with a clock in the past, and the store's own check is tested with a clock in the
future against the real embedded server (whose TTL monitor cannot have removed a record
that is not expired in real time).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from burrow.storage import database
from burrow.storage.tickets import TicketStore, digest
from tests.integration.conftest import Raw, Running, Stack, raw_ws
from tests.integration.test_request_bounds import HUGE, answer_while_uploading

pytestmark = pytest.mark.integration
T = 30
Db = AsyncDatabase[dict[str, Any]]


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): each
    test has rooms of its own, and what it adds is stopped after it."""
    return shared_stack


@pytest.fixture
def mongo_url(module_mongo_url: str) -> str:
    """The module stack's database, where its gateway keeps the tickets (``db`` too)."""
    return module_mongo_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=T) as client:
        yield client


async def buy(http: httpx.AsyncClient, gateway: Running, token: str) -> dict[str, Any]:
    answer = await http.post(gateway.url("/v1/ws-ticket"),
                             headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body: dict[str, Any] = answer.json()
    return body


async def refusal(gateway: Running, query: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and error of a WebSocket handshake that must be refused."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{gateway.ws_url}?{query}", open_timeout=10):
            pass
    response = refused.value.response
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    return response.status_code, json.loads(response.body or b"{}").get("error", {})


async def sent(ws: Raw, room: str, client_id: str) -> dict[str, Any]:
    await ws.send({"type": "send", "room": room, "client_id": client_id, "body": "x"})
    return await ws.recv_until_any(("ack", "error"), T)


def assert_clean_log(gateway: Running, *secrets_: str) -> None:
    log = gateway.log.read_text(errors="replace")
    assert "Traceback" not in log and '"level":"ERROR"' not in log, log[-3000:]
    for secret in secrets_:
        assert secret not in log


async def test_a_ticket_opens_one_websocket_of_its_user_once(
        stack: Stack, http: httpx.AsyncClient) -> None:
    stack.room("lobby0", "alice")
    gateway = stack.gateways[0]
    bought = await buy(http, gateway, stack.token("alice"))
    assert bought["expires_in"] == 30  # BURROW_WS_TICKET_TTL
    async with raw_ws(f"{gateway.ws_url}?ticket={bought['ticket']}", None) as ws:
        ack = await sent(ws, "lobby0", "by-ticket")
        assert ack["type"] == "ack", ack
        # the second use, while the first connection is still open
        status, error = await refusal(gateway, f"ticket={bought['ticket']}")
        assert (status, error["code"], error["reason"]) == (401, "unauthorized", "ticket")
    _, history = stack.http("GET", "/v1/rooms/lobby0/messages", "alice")
    assert [(m["sender"], m["client_id"]) for m in history["messages"]] == [
        ("alice", "by-ticket")]
    assert_clean_log(gateway, bought["ticket"])


async def test_a_ticket_opens_one_sse_stream_once(stack: Stack,
                                                  http: httpx.AsyncClient) -> None:
    stack.room("lobby1", "alice")
    gateway = stack.gateways[0]
    ticket = (await buy(http, gateway, stack.token("alice")))["ticket"]
    url = gateway.url(f"/v1/sse?rooms=lobby1&ticket={ticket}")
    async with http.stream("GET", url) as sse:
        assert sse.status_code == 200
        async for line in sse.aiter_lines():
            if line.startswith("event: subscribed"):
                break
    again = await http.get(url)
    assert again.status_code == 401
    assert again.json()["error"]["reason"] == "ticket"


async def test_the_ticket_route_takes_a_header_token_only(
        stack: Stack, http: httpx.AsyncClient) -> None:
    gateway = stack.gateways[0]
    url = gateway.url("/v1/ws-ticket")
    token = stack.token("alice")
    assert (await http.post(url)).status_code == 401
    assert (await http.post(url, headers={"Authorization": "Bearer forged"})).status_code == 401
    in_url = await http.post(f"{url}?access_token={token}")
    assert in_url.status_code == 401 and "Authorization header" in in_url.text
    # a ticket does not buy another ticket, and is not spent by trying
    ticket = (await buy(http, gateway, token))["ticket"]
    assert (await http.post(f"{url}?ticket={ticket}")).status_code == 401
    async with raw_ws(f"{gateway.ws_url}?ticket={ticket}", None) as ws:
        await ws.send({"type": "ping", "id": 1})
        assert (await ws.recv_until("pong", T))["id"] == 1
    # nor does a ticket work on any other route
    ticket = (await buy(http, gateway, token))["ticket"]
    rooms = await http.get(gateway.url(f"/v1/rooms?ticket={ticket}"))
    assert rooms.status_code == 401 and "Authorization header" in rooms.text
    assert (await http.get(url, headers={"Authorization": f"Bearer {token}"})).status_code \
        == 405
    # the route takes no body: an upload is refused while it is still coming, unread
    auth = {"Authorization": f"Bearer {token}"}
    assert await answer_while_uploading(gateway.port, "POST", "/v1/ws-ticket",
                                        {**HUGE, **auth}) == 413
    small = {"Content-Type": "application/json", "Content-Length": "200000", **auth}
    assert await answer_while_uploading(gateway.port, "POST", "/v1/ws-ticket", small) == 413
    # and an empty one, which a browser's fetch announces, is no error of the gateway's
    empty = await http.post(url, headers={**auth, "Content-Length": "0"})
    assert empty.status_code == 200
    assert_clean_log(gateway)


async def test_the_ticket_route_is_rate_limited_per_address(stack: Stack,
                                                            http: httpx.AsyncClient) -> None:
    gateway = stack.add_gateway(BURROW_RATE_IP="3/1")
    headers = {"Authorization": f"Bearer {stack.token('alice')}"}
    codes = [(await http.post(gateway.url("/v1/ws-ticket"), headers=headers)).status_code
             for _ in range(8)]
    assert codes[:3] == [200, 200, 200] and 429 in codes, codes


FORGED = {
    "random": secrets.token_urlsafe(32),
    "one character more": secrets.token_urlsafe(32) + "A",
    "too short": secrets.token_urlsafe(16),
    "oversized": "A" * 4000,
    "invalid UTF-8": "%FF%FE%80" + "A" * 40,
    "NUL": "%00" + "A" * 42,
    "a JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
    "spaces": "%20" * 43,
}


async def test_forged_tickets_get_the_refusal_of_a_bad_token(
        stack: Stack, http: httpx.AsyncClient) -> None:
    stack.room("lobby4", "alice")
    gateway = stack.gateways[0]
    bad_token_status, bad_token_error = await refusal(gateway, "access_token=forged")
    assert bad_token_status == 401
    for name, forged in FORGED.items():
        status, error = await refusal(gateway, f"ticket={forged}")
        assert (status, error["code"]) == (bad_token_status, bad_token_error["code"]), name
        assert error["reason"] == "ticket", (name, error)
        sse = await http.get(gateway.url(f"/v1/sse?rooms=lobby4&ticket={forged}"))
        assert sse.status_code == 401, (name, sse.text)
    # a real ticket next to a token: which would it be? Neither (and it is not spent).
    ticket = (await buy(http, gateway, stack.token("alice")))["ticket"]
    status, error = await refusal(gateway, f"ticket={ticket}&access_token={stack.token('bob')}")
    assert (status, error["reason"]) == (401, "malformed")
    async with raw_ws(f"{gateway.ws_url}?ticket={ticket}", None) as ws:
        assert (await sent(ws, "lobby4", "still-good"))["type"] == "ack"
    assert_clean_log(gateway, ticket)


async def test_an_expired_ticket_is_refused(stack: Stack, db: Db,
                                            http: httpx.AsyncClient) -> None:
    stack.room("lobby5", "alice")
    gateway = stack.gateways[0]
    # written 60 s ago with a 30 s life: expired whether or not the TTL index removed it
    past = TicketStore(db, clock=lambda: time.time() - 60)
    ticket, _ = await past.issue("alice", (), time.time() + 3600, ttl=30)
    status, error = await refusal(gateway, f"ticket={ticket}")
    assert (status, error["reason"]) == (401, "ticket")
    # the store's own check, not the TTL index: a record still there in real time is
    # refused by a reader whose clock is past its expiry, and spent all the same
    now = TicketStore(db)
    ticket, valid = await now.issue("alice", (), time.time() + 3600, ttl=30)
    assert valid == pytest.approx(30, abs=1)
    later = TicketStore(db, clock=lambda: time.time() + 31)
    assert await later.redeem(ticket) is None
    assert await db["ws_tickets"].find_one({"_id": digest(ticket)}) is None
    assert await now.redeem(ticket) is None


async def test_a_ticket_never_outlives_its_token(stack: Stack, db: Db,
                                                 http: httpx.AsyncClient) -> None:
    """The ticket expires with the token, and so does the connection it opens (4401)."""
    stack.room("lobby6", "alice")
    gateway = stack.gateways[0]
    token = stack.token("alice", ttl=4)
    bought = await buy(http, gateway, token)
    assert 1 <= bought["expires_in"] <= 4
    record = await db["ws_tickets"].find_one({"_id": digest(bought["ticket"])})
    assert record is not None and record["user"] == "alice"
    assert record["expires_at"].timestamp() <= record["token_exp"] < time.time() + 5
    assert bought["ticket"] not in str(record)  # kept under its hash only
    async with raw_ws(f"{gateway.ws_url}?ticket={bought['ticket']}", None) as ws:
        assert await ws.closed(T) == 4401
    # a token within the last second of its life buys no ticket
    dying = stack.token("alice", ttl=0.5)
    answer = await http.post(gateway.url("/v1/ws-ticket"),
                             headers={"Authorization": f"Bearer {dying}"})
    assert (answer.status_code, answer.json()["error"]["reason"]) == (401, "expired")


async def test_a_ticket_of_alice_acts_as_alice_only(stack: Stack,
                                                   http: httpx.AsyncClient) -> None:
    stack.room("hers7", "alice")
    stack.room("his7", "bob")
    gateway = stack.gateways[0]
    ticket = (await buy(http, gateway, stack.token("alice")))["ticket"]
    async with raw_ws(f"{gateway.ws_url}?ticket={ticket}", None) as ws:
        refused = await sent(ws, "his7", "intruding")
        assert (refused["type"], refused["code"]) == ("error", "forbidden")
        await ws.send({"type": "subscribe", "room": "his7", "since": 0})
        assert (await ws.recv_until_any(("subscribed", "error"), T))["code"] == "forbidden"
        assert (await sent(ws, "hers7", "mine"))["type"] == "ack"
    _, his = stack.http("GET", "/v1/rooms/his7/messages", "bob")
    assert his["messages"] == []
    _, hers = stack.http("GET", "/v1/rooms/hers7/messages", "alice")
    assert [m["sender"] for m in hers["messages"]] == ["alice"]
    # and an SSE stream of bob's room with alice's ticket is refused before it starts
    ticket = (await buy(http, gateway, stack.token("alice")))["ticket"]
    answer = await http.get(gateway.url(f"/v1/sse?rooms=his7&ticket={ticket}"))
    assert answer.status_code == 403


async def test_a_ticket_from_one_gateway_opens_a_connection_on_another(
        stack: Stack, http: httpx.AsyncClient) -> None:
    stack.room("lobby8", "alice")
    other = stack.add_gateway()
    ticket = (await buy(http, stack.gateways[0], stack.token("alice")))["ticket"]
    async with raw_ws(f"{other.ws_url}?ticket={ticket}", None) as ws:
        assert (await sent(ws, "lobby8", "elsewhere"))["type"] == "ack"
    status, error = await refusal(stack.gateways[0], f"ticket={ticket}")
    assert (status, error["reason"]) == (401, "ticket")


async def test_concurrent_redemptions_succeed_exactly_once(
        stack: Stack, db: Db, mongo_url: str, http: httpx.AsyncClient) -> None:
    """Against the real embedded server, whose find_one_and_update was once not atomic:
    eight clients (own connections) redeem each ticket at once; then two gateways."""
    clients = [database.open_client(mongo_url, 10) for _ in range(4)]
    try:
        stores = [TicketStore(database.database(c)) for c in clients for _ in range(2)]
        for _ in range(20):
            ticket, _ = await stores[0].issue("alice", ["admin"], time.time() + 3600, 30)
            won = await asyncio.gather(*(store.redeem(ticket) for store in stores))
            assert sum(w is not None for w in won) == 1, won
            winner = next(w for w in won if w is not None)
            assert (winner.user, winner.roles) == ("alice", frozenset({"admin"}))
    finally:
        for client in clients:
            await client.close()

    stack.room("lobby9", "alice")
    gateways = [stack.gateways[0], stack.add_gateway()]

    async def attempt(gateway: Running, ticket: str) -> int:
        try:
            async with connect(f"{gateway.ws_url}?ticket={ticket}", open_timeout=10):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    for _ in range(5):
        ticket = (await buy(http, gateways[0], stack.token("alice")))["ticket"]
        results = await asyncio.gather(*(attempt(g, ticket) for g in gateways * 2))
        assert sorted(results) == [101, 401, 401, 401], results


async def test_a_member_connected_by_ticket_loses_the_room_when_removed(
        stack: Stack, http: httpx.AsyncClient) -> None:
    """G6 holds whatever opened the connection: the removal reaches it like any other."""
    stack.room("team10", "alice", "bob")
    ticket = (await buy(http, stack.gateways[0], stack.token("bob")))["ticket"]
    async with raw_ws(f"{stack.gateways[0].ws_url}?ticket={ticket}", None) as bob:
        await bob.send({"type": "subscribe", "room": "team10", "since": 0})
        await bob.recv_until("subscribed", T)
        assert (await sent(bob, "team10", "before"))["type"] == "ack"
        assert stack.http("DELETE", "/v1/rooms/team10/members/bob", "alice")[0] == 204
        ended = await bob.recv_until("unsubscribed", T)
        assert (ended["room"], ended["reason"]) == ("team10", "removed")
        refused = await sent(bob, "team10", "after")
        assert (refused["type"], refused["code"]) == ("error", "forbidden")
