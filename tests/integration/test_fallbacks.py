"""SSE, long-polling and HTTP send against real gateways: the same guarantees as the
WebSocket (resume with no gap and no duplicate, also on another gateway; idempotent sends;
members only), and clear 4xx answers for malformed parameters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from pymongo import MongoClient

from burrow.core.envelopes import Stored
from gateway.members import MEMBER_EVENTS
from tests.conftest import eventually
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): each
    test has rooms of its own (the bad requests' table: general and private), and the
    gateways it adds stop after it."""
    return shared_stack
T = 30  # seconds: every wait is bounded


@dataclass
class Event:
    kind: str
    data: dict[str, Any]
    id: str | None = None


@dataclass
class SseReader:
    """Parses a ``text/event-stream`` body into events (and counts comment lines)."""

    lines: AsyncIterator[str]
    comments: int = 0
    retry: int | None = None
    last_id: str | None = field(default=None)

    async def next(self) -> Event:
        kind, data, event_id = "message", "", None
        async for line in self.lines:
            if line == "":
                if data:
                    if event_id is not None:
                        self.last_id = event_id
                    return Event(kind, orjson.loads(data), event_id)
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                self.comments += 1
            elif name == "event":
                kind = value
            elif name == "data":
                data += value
            elif name == "id":
                event_id = value
            elif name == "retry":
                self.retry = int(value)
        raise EOFError("the stream ended")

    async def until(self, kind: str) -> Event:
        while True:
            event = await self.next()
            if event.kind == kind:
                return event


def headers(stack: Stack, user: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.token(user)}", **extra}


async def post(http: httpx.AsyncClient, stack: Stack, user: str, room: str, body: Any,
               key: str | None, gateway: int = 0) -> httpx.Response:
    extra = {} if key is None else {"Idempotency-Key": key}
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await http.post(stack.gateways[gateway].url(f"/v1/rooms/{room}/messages"),
                           content=content, headers=headers(stack, user, **extra))


async def test_sse_streams_and_resumes_on_another_gateway_with_no_gap(stack: Stack) -> None:
    stack.add_gateway()
    stack.room("general0", "alice", "bob")
    async with httpx.AsyncClient(timeout=30) as http:
        for n in (1, 2):
            answer = await post(http, stack, "alice", "general0", {"body": f"m{n}"}, f"k{n}")
            assert answer.status_code == 201, answer.text
            assert answer.json()["seq"] == n
        url = stack.gateways[0].url("/v1/sse?rooms=general0&since=general0:0")
        async with http.stream("GET", url, headers=headers(stack, "bob")) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            reader = SseReader(stream.aiter_lines())
            assert (await reader.until("subscribed")).data["since"] == 0
            got = [await reader.until("message") for _ in range(2)]
            assert [(e.data["seq"], e.id) for e in got] == [(1, "general0:1"), (2, "general0:2")]
            await post(http, stack, "alice", "general0", {"body": "m3"}, "k3")
            live = await reader.until("message")
            assert (live.data["seq"], live.data["body"], live.id) == (3, "m3", "general0:3")
            assert reader.retry is not None
            last = reader.last_id
        for n in (4, 5):  # while bob is away
            await post(http, stack, "alice", "general0", {"body": f"m{n}"}, f"k{n}")
        url = stack.gateways[1].url("/v1/sse?rooms=general0")
        async with http.stream("GET", url, headers=headers(
                stack, "bob", **{"Last-Event-ID": str(last)})) as stream:
            reader = SseReader(stream.aiter_lines())
            resumed = [await reader.until("message") for _ in range(2)]
            assert [e.data["seq"] for e in resumed] == [4, 5]
            await post(http, stack, "alice", "general0", {"body": "m6"}, "k6", gateway=1)
            assert (await reader.until("message")).data["seq"] == 6


async def test_long_polling_continues_exactly_where_the_last_poll_stopped(
        stack: Stack) -> None:
    stack.add_gateway()
    stack.room("general1", "alice", "bob")
    async with httpx.AsyncClient(timeout=60) as http:
        def poll(gateway: int, cursor: str | None, timeout: float) -> Any:
            query = f"/v1/poll?rooms=general1&timeout={timeout}"
            if cursor is not None:
                query += f"&cursor={cursor}"
            return http.get(stack.gateways[gateway].url(query), headers=headers(stack, "bob"))

        first = await poll(0, None, 0)
        assert first.status_code == 200, first.text
        assert first.json() == {"events": [], "cursor": "general1:0"}
        for n in (1, 2):
            await post(http, stack, "alice", "general1", {"body": f"m{n}"}, f"k{n}")
        pending = (await poll(0, first.json()["cursor"], 30)).json()
        assert [e["seq"] for e in pending["events"]] == [1, 2]
        assert pending["cursor"] == "general1:2"

        waiting = asyncio.ensure_future(poll(1, pending["cursor"], 30))  # the other gateway
        await post(http, stack, "alice", "general1", {"body": "m3"}, "k3")
        live = (await waiting).json()
        assert [(e["seq"], e["body"]) for e in live["events"]] == [(3, "m3")]
        assert live["cursor"] == "general1:3"
        empty = (await poll(0, live["cursor"], 0)).json()
        assert empty == {"events": [], "cursor": "general1:3"}


async def test_a_poll_leaves_nothing_bound_on_the_gateway(stack: Stack) -> None:
    stack.room("general2", "bob")

    def bindings() -> list[str]:
        found = stack.vhost.api("GET", "/api/exchanges/{vhost}/chat.fanout/bindings/source")
        assert isinstance(found, list)
        return [b["routing_key"] for b in found if b["destination"].startswith("gateway.")
                and b["routing_key"] != MEMBER_EVENTS]  # bound for good (G6)

    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(stack.gateways[0].url("/v1/poll?rooms=general2&timeout=1"),
                                headers=headers(stack, "bob"))
        assert answer.status_code == 200
    assert eventually(lambda: bindings() == [])


async def test_http_sends_are_idempotent_by_key(stack: Stack) -> None:
    stack.room("general3", "alice")
    async with httpx.AsyncClient(timeout=30) as http:
        first = await post(http, stack, "alice", "general3", {"body": "once"}, "same-key")
        again = await post(http, stack, "alice", "general3", {"body": "once"}, "same-key")
        other = await post(http, stack, "alice", "general3", {"body": "twice"}, "other-key")
    assert first.status_code == again.status_code == other.status_code == 201
    assert first.json() == again.json()
    assert first.json()["client_id"] == "same-key"
    assert other.json()["seq"] == first.json()["seq"] + 1


BAD_SENDS: list[tuple[str, Any, str | None, int, str]] = [
    ("general", {"body": "x"}, None, 400, "Idempotency-Key"),
    ("general", {"body": "x"}, "k" * 65, 400, "Idempotency-Key"),
    ("general", {"body": 5}, "k", 400, "body must be a string"),
    ("general", {"body": "x", "extra": 1}, "k", 400, "unknown field"),
    ("general", b"{not json", "k", 400, "not valid JSON"),
    ("general", [1], "k", 400, "JSON object"),
    ("general", {"body": "x" * 20000}, "k", 413, "larger than"),
    ("general", b"x" * 200000, "k", 413, "larger than"),
    ("no.such", {"body": "x"}, "k", 400, "room ids"),
    ("private", {"body": "x"}, "k", 403, "not a member"),
]

BAD_STREAMS: list[tuple[str, dict[str, str], int, str]] = [
    ("/v1/sse", {}, 400, "rooms is required"),
    ("/v1/sse?rooms=a.b", {}, 400, "not a room id"),
    ("/v1/sse?rooms=general,general", {}, 400, "twice"),
    ("/v1/sse?rooms=general&since=general", {}, 400, "room:seq"),
    ("/v1/sse?rooms=general&since=other:1", {}, 400, "not among rooms"),
    ("/v1/sse?rooms=general&since=general:-1", {}, 400, "room:seq"),
    ("/v1/sse?rooms=general", {"Last-Event-ID": "garbage"}, 400, "Last-Event-ID"),
    ("/v1/sse?rooms=" + ",".join(f"r{n}" for n in range(51)), {}, 400, "at most"),
    ("/v1/sse?rooms=private", {}, 403, "not a member"),
    ("/v1/poll", {}, 400, "rooms is required"),
    ("/v1/poll?rooms=general&cursor=general:x", {}, 400, "room:seq"),
    ("/v1/poll?rooms=general&timeout=61", {}, 400, "timeout"),
    ("/v1/poll?rooms=general&timeout=soon", {}, 400, "timeout"),
    ("/v1/poll?rooms=private", {}, 403, "not a member"),
]


async def test_bad_requests_get_clear_errors_and_change_nothing(stack: Stack) -> None:
    """Every malformed send, SSE or poll request on one stack: status, message, no effect."""
    stack.room("general", "alice", "bob")
    stack.room("private", "carol")
    async with httpx.AsyncClient(timeout=30) as http:
        for room, body, key, status, words in BAD_SENDS:
            answer = await post(http, stack, "alice", room, body, key)
            assert answer.status_code == status, (room, body, key, answer.text)
            assert words in answer.json()["error"]["message"], (room, body, key)
        for path, extra, status, words in BAD_STREAMS:
            answer = await http.get(stack.gateways[0].url(path),
                                    headers=headers(stack, "bob", **extra))
            assert answer.status_code == status, (path, answer.text)
            assert words in answer.json()["error"]["message"], path
            anonymous = await http.get(stack.gateways[0].url(path))
            assert anonymous.status_code == 401, path
        # nothing was stored, and the gateway still serves
        fine = await post(http, stack, "alice", "general", {"body": "fine"}, "fine")
        assert fine.status_code == 201 and fine.json()["seq"] == 1


async def test_an_idle_sse_stream_gets_heartbeats_and_a_close_event_at_token_expiry(
        stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_SSE_HEARTBEAT="0.5")
    stack.room("general5", "bob")
    # A request slower than the token's short life (a busy machine) is refused 401, as
    # it should be: then the same again with a longer-lived token.
    for ttl in (3, 6, 12, 24):
        token = stack.token("bob", ttl=ttl)
        async with httpx.AsyncClient(timeout=30 + ttl) as http, http.stream(
                "GET", gateway.url("/v1/sse?rooms=general5"),
                headers={"Authorization": f"Bearer {token}"}) as stream:
            if stream.status_code == 401:
                continue
            reader = SseReader(stream.aiter_lines())
            await reader.until("subscribed")
            closing = await reader.until("close")  # nothing else happens: only heartbeats
            assert closing.data["code"] == 4401
            assert reader.comments >= 1  # every 0.5 s over the token's life
            with pytest.raises(EOFError):
                await reader.next()  # and the stream ends
            return
    pytest.fail("every token expired before its stream opened")


async def test_a_long_backlog_comes_in_bounded_polls_with_no_gap(stack: Stack) -> None:
    stack.room("busy6", "bob")
    backlog = 520  # more than one answer takes (500)
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.get_default_database().messages.insert_many([
            Stored(f"m{n}", "busy6", n, "alice", f"c{n}", f"old {n}", 1_700_000_000_000 + n)
            .to_document() for n in range(1, backlog + 1)])
    seqs: list[int] = []
    cursor = "busy6:0"
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(100):  # each answer takes what is pending at once, at most 500
            answer = (await http.get(
                stack.gateways[0].url(f"/v1/poll?rooms=busy6&cursor={cursor}&timeout=0"),
                headers=headers(stack, "bob"))).json()
            assert len(answer["events"]) <= 500
            seqs += [e["seq"] for e in answer["events"]]
            cursor = answer["cursor"]
            if cursor == f"busy6:{backlog}":
                break
    assert seqs == list(range(1, backlog + 1))
    assert cursor == f"busy6:{backlog}"


def seed(stack: Stack, room: str, count: int) -> None:
    """*count* stored messages in *room*, written as the sequencer writes them."""
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.get_default_database().messages.insert_many([
            Stored(f"{room}-{n}", room, n, "alice", f"c{n}", f"old {n}", 1_700_000_000_000 + n)
            .to_document() for n in range(1, count + 1)])


BACKLOG = 1_200  # the replay reads pages of 500: two page boundaries and a partial page


@pytest.mark.parametrize("since", [0, 499, 500, 501])
async def test_a_resume_over_several_replay_pages_on_websocket(stack: Stack,
                                                               since: int) -> None:
    """Every message after *since* once, in order, across the replay's page boundaries,
    then the live ones sent while the replay ran, with no gap and no duplicate."""
    room = f"deep-{since}"  # the module's stack: a room per case
    stack.room(room, "alice", "bob")
    seed(stack, room, BACKLOG)
    alice = await stack.client("alice")
    bob = await stack.client("bob")
    subscribed = asyncio.ensure_future(bob.subscribe(room, since=since))
    live = await asyncio.wait_for(asyncio.gather(
        *(alice.send(room, f"live {n}") for n in range(20))), T)
    assert sorted(a.seq for a in live) == list(range(BACKLOG + 1, BACKLOG + 21))
    assert await asyncio.wait_for(subscribed, T) == since
    got = [await asyncio.wait_for(bob.messages.get(), T) for _ in range(BACKLOG + 20 - since)]
    assert [m.seq for m in got] == list(range(since + 1, BACKLOG + 21))
    assert bob.messages.empty() and not bob.violations


async def test_a_resume_over_several_replay_pages_on_sse(stack: Stack) -> None:
    stack.room("deep8", "alice", "bob")
    seed(stack, "deep8", BACKLOG)
    async with httpx.AsyncClient(timeout=30) as http:
        url = stack.gateways[0].url("/v1/sse?rooms=deep8")
        async with http.stream("GET", url, headers=headers(
                stack, "bob", **{"Last-Event-ID": "deep8:499"})) as stream:
            reader = SseReader(stream.aiter_lines())
            assert (await reader.until("subscribed")).data["since"] == 499
            for n in range(20):  # while the replay runs
                answer = await post(http, stack, "alice", "deep8", {"body": f"live {n}"},
                                    f"k{n}")
                assert answer.status_code == 201, answer.text
            got = [(await reader.until("message")).data["seq"]
                   for _ in range(BACKLOG + 20 - 499)]
    assert got == list(range(500, BACKLOG + 21))
