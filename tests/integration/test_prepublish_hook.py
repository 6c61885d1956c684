"""Pre-publish moderation on the real stack (issue 17 item 4, docs/moderation.md): the
moderation service (examples/moderation_hook.py, as the docs run it) rejects and
replaces; a silent service fails open (stored) or closed (refused, retryable); with the
hook off nothing is asked; a room's own filter refuses in that room only."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aio_pika
import pytest

from tests.conftest import ROOT, Vhost, until
from tests.integration.conftest import Stack, Start, raw_ws

pytestmark = pytest.mark.integration


def hooked(vhost: Vhost, mongo_url: str, start: Start, **env: str) -> Stack:
    """A gateway and a sequencer, both with *env* (the gateway checks room filters'
    ``hook`` against BURROW_MODERATION_HOOK)."""
    stack = Stack(start, vhost, mongo_url)
    stack.add_sequencer(**env)
    stack.add_gateway(**env)
    return stack


def post(stack: Stack, room: str, user: str, body: str, key: str,
         path: str = "") -> tuple[int, Any]:
    """POST a message (or, with *path*, a change) with its Idempotency-Key; the error
    answers carry the Retry-After header as ``retry_after``."""
    return _post(stack, f"/v1/rooms/{room}/messages{path}", user, {"body": body}, key)


def _post(stack: Stack, path: str, user: str, body: Any, key: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        stack.gateways[0].url(path), data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {stack.token(user)}", "Idempotency-Key": key,
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {**json.loads(exc.read()), "retry_after": exc.headers.get(
            "Retry-After")}


def history(stack: Stack, room: str, user: str) -> list[tuple[int, str]]:
    status, body = stack.http("GET", f"/v1/rooms/{room}/messages", user)
    assert status == 200, body
    return [(m["seq"], m["body"]) for m in body["messages"]]


@contextmanager
def service(vhost: Vhost) -> Iterator[subprocess.Popen[str]]:
    """examples/moderation_hook.py as the backend user, answering until stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "moderation_hook.py")],
        env={**env, "BURROW_BACKEND_URL": vhost.url("burrow-backend")}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until it consumes, or it exits
        assert first == "answering moderation.hook\n", first + process.stdout.read()
        yield process
    finally:
        process.terminate()
        process.wait(30)
        assert process.stdout is not None
        process.stdout.close()


@asynccontextmanager
async def spy(vhost: Vhost) -> AsyncIterator[list[dict[str, Any]]]:
    """Every request published on moderation.ask, seen through a queue of the test's
    own bound beside moderation.hook (the requests expire quickly: consumed at once)."""
    seen: list[dict[str, Any]] = []
    connection = await aio_pika.connect(vhost.url("burrow-admin"))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind("moderation.ask", "moderation.hook")

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            seen.append(json.loads(message.body))
        await queue.consume(take, no_ack=True)
        yield seen


async def test_the_service_rejects_and_replaces_and_silence_fails_open(
        vhost: Vhost, mongo_url: str, start: Start) -> None:
    stack = hooked(vhost, mongo_url, start, BURROW_MODERATION_HOOK="on",
                   BURROW_MODERATION_HOOK_TIMEOUT_MS="300",
                   BURROW_MODERATION_HOOK_FAILURE="open")
    stack.room("hk", "alice", "bob")
    async with spy(vhost) as asked:
        # nobody answers yet: after the timeout, stored (fail-open)
        status, first = post(stack, "hk", "alice", "anyone there?", "k1")
        assert (status, first["seq"]) == (201, 1), first
        await until(lambda: asked)  # (the HTTP calls block this loop: the spy reads now)
        assert [m["body"] for m in asked[0]["messages"]] == ["anyone there?"]
        with service(vhost):
            async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob:
                await bob.send({"type": "subscribe", "room": "hk", "since": 1, "v": 2})
                await bob.recv_until("subscribed")
                # rejected: the reason, nothing stored, no seq used; a retry asks again
                status, refused = post(stack, "hk", "alice", "cheap SPAM here", "k2")
                assert (status, refused.get("error", {}).get("code")) == (422, "rejected"), refused
                assert refused["error"]["message"] == "advertising is not allowed here"
                status, again = post(stack, "hk", "alice", "cheap SPAM here", "k2")
                assert (status, again.get("error", {}).get("code")) == (422, "rejected"), again
                # replaced: stored and delivered with the service's body, the next seq
                status, replaced = post(stack, "hk", "alice", "oh darn", "k3")
                assert (status, replaced["seq"]) == (201, 2), replaced
                delivered = await bob.recv_until("message")
                assert (delivered["seq"], delivered["body"]) == (2, "oh d*rn")
                # an edit carries new text: asked too
                status, edit = post(stack, "hk", "alice", "spam now", "k4",
                                     f"/{replaced['id']}/edit")
                assert (status, edit.get("error", {}).get("code")) == (422, "rejected"), edit
                # over WebSocket: the error frame in place of the ack
                async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as alice:
                    await alice.send({"type": "send", "room": "hk", "client_id": "w1",
                                      "body": "spam spam"})
                    error = await alice.recv_until_any(("error", "ack"))
                    assert (error["type"], error["code"], error["client_id"]) == (
                        "error", "rejected", "w1"), error
                    assert error["message"] == "advertising is not allowed here"
    assert history(stack, "hk", "alice") == [(1, "anyone there?"), (2, "oh d*rn")]
    await until(lambda: len(asked) == 6)
    # one request per batch, each naming only what needed asking
    assert all(r["schema"] == "burrow.moderation/1" for r in asked)
    assert sorted(m["body"] for r in asked for m in r["messages"]) == sorted([
        "anyone there?", "cheap SPAM here", "cheap SPAM here", "oh darn", "spam now",
        "spam spam"])


async def test_silence_fails_closed_retryably(vhost: Vhost, mongo_url: str,
                                              start: Start) -> None:
    stack = hooked(vhost, mongo_url, start, BURROW_MODERATION_HOOK="on",
                   BURROW_MODERATION_HOOK_TIMEOUT_MS="300",
                   BURROW_MODERATION_HOOK_FAILURE="closed")
    stack.room("fc", "alice")
    status, refused = post(stack, "fc", "alice", "hello", "k1")
    assert (status, refused.get("error", {}).get("code")) == (503, "moderation_unavailable"), refused
    assert refused["retry_after"] == "1"
    assert history(stack, "fc", "alice") == []
    with service(vhost):  # the same request again, now answered: stored, seq 1
        status, stored = post(stack, "fc", "alice", "hello", "k1")
    assert (status, stored["seq"]) == (201, 1), stored
    assert history(stack, "fc", "alice") == [(1, "hello")]


async def test_hook_off_asks_nothing_and_a_room_filter_refuses_in_its_room(
        vhost: Vhost, mongo_url: str, start: Start) -> None:
    vhost.load_topology()  # as rabbitmq/definitions.json does: the sequencer comes later
    stack = Stack(start, vhost, mongo_url)
    stack.add_gateway()
    stack.room("rf", "olga", "bob")
    stack.room("other", "bob")
    path = "/v1/rooms/rf/filter"
    # who may: the owner; a member 403, a stranger 404; bad entries 400 naming them
    assert stack.http("PUT", path, "bob", {"entries": ["darn"]})[0] == 403
    assert stack.http("PUT", path, "carol", {"entries": ["darn"]})[0] == 404
    status, bad = stack.http("PUT", path, "olga", {"entries": ["ok", "re:(a+)+$"]})
    assert (status, bad.get("error", {}).get("code")) == (400, "bad_filter"), bad
    assert "entry 2" in bad["error"]["message"]
    status, off = stack.http("PUT", path, "olga", {"entries": ["darn"], "hook": True})
    assert (status, off.get("error", {}).get("code")) == (409, "hook_off"), off
    status, set_ = stack.http("PUT", path, "olga", {"entries": ["darn", "re:fr[e3]{2}"]})
    assert status == 200 and set_["action"] == "reject", set_
    assert stack.http("GET", path, "olga")[1]["entries"] == ["darn", "re:fr[e3]{2}"]
    # the sequencer reads the filters when it starts, then every BURROW_FILTER_REFRESH s
    stack.add_sequencer(BURROW_FILTER_REFRESH="0.3")
    async with spy(vhost) as asked:
        status, refused = post(stack, "rf", "bob", "DARN it", "k1")
        assert (status, refused.get("error", {}).get("code")) == (422, "rejected"), refused
        assert post(stack, "rf", "bob", "fr33 stuff", "k2")[0] == 422
        assert post(stack, "other", "bob", "darn it", "k1")[0] == 201  # not this room's
        status, fine = post(stack, "rf", "bob", "darning socks", "k3")
        assert (status, fine["seq"]) == (201, 1), fine
        # removed: within a refresh, the same words pass (each refused try stores nothing)
        assert stack.http("DELETE", path, "olga")[0] == 204
        assert stack.http("DELETE", path, "olga")[0] == 404
        for attempt in range(100):
            status, _ = post(stack, "rf", "bob", "darn", f"retry-{attempt}")
            if status == 201:
                break
            assert status == 422
            await asyncio.sleep(0.1)
        assert status == 201
        assert history(stack, "rf", "bob") == [(1, "darning socks"), (2, "darn")]
    await asyncio.sleep(0)  # (were a request published, the spy has it by now)
    assert asked == []  # the hook is off: no request ever published
    queues = vhost.api("GET", "/api/queues/{vhost}")
    assert isinstance(queues, list)
    assert not [q["name"] for q in queues if q["name"].startswith("moderation.answers.")]
