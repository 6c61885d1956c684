"""Backend events (issue 17 item 6, docs/events.md) on the real stack: a backend
service (examples/backend_events.py, as ``burrow-backend``) gets ``user.offline`` once a
client has gone for the grace period and ``report.filed`` after a report; a stored
message is a ``message.stored`` event with the documented fields; a room's creation and a
moderator's ban are ``member.*`` events; the webhooks worker POSTs signed events,
retries a failing receiver into ``webhook.dead``, and a replay from there delivers;
examples/webhook_receiver.py takes signed events only. (Every process here publishes
``message.*`` too: ``process_env``.)"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import aio_pika
import orjson
import pytest

from burrow.core import webhook_signing
from tests.conftest import ROOT, until
from tests.integration.conftest import Stack
from tests.integration.test_admin_procedures import replay
from tests.integration.test_mail_jobs import dead_letters
from tests.integration.test_moderation import act

pytestmark = pytest.mark.integration
T = 30.0
SECRET = "webhook-secret-for-the-tests-0123456789"


@pytest.fixture
def process_env(process_env: dict[str, str]) -> dict[str, str]:
    """Every process publishes every event type, message.* too (off by default)."""
    return {**process_env, "BURROW_EVENTS": "#"}


@pytest.fixture
async def message_events(stack: Stack) -> AsyncIterator[asyncio.Queue[Any]]:
    """What a backend queue bound to ``message.*`` receives, as ``burrow-backend``."""
    async with backend_queue(stack, "message.*") as received:
        yield received


@pytest.fixture
async def member_events(stack: Stack) -> AsyncIterator[asyncio.Queue[Any]]:
    async with backend_queue(stack, "member.*") as received:
        yield received


@asynccontextmanager
async def backend_queue(stack: Stack, key: str) -> AsyncIterator[asyncio.Queue[Any]]:
    """A ``backend.*`` queue of ours bound to burrow.events with *key*: what it gets."""
    received: asyncio.Queue[Any] = asyncio.Queue()
    connection = await aio_pika.connect(stack.vhost.url("burrow-backend"))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"backend.test-{key.split('.')[0]}",
                                            exclusive=True)
        await queue.bind(await channel.get_exchange("burrow.events", ensure=False),
                         routing_key=key)

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                await received.put(message)
        await queue.consume(take)
        yield received


async def line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    raw = await asyncio.wait_for(process.stdout.readline(), T)
    assert raw, "the example ended early"
    return raw.decode().rstrip("\n")


async def test_a_backend_gets_offline_report_and_message_events(
        stack: Stack, message_events: asyncio.Queue[Any]) -> None:
    stack.room("lobby", "alice", "bob")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    example = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "backend_events.py"), "2",
        env={**clean, "BURROW_BACKEND_URL": stack.vhost.url("burrow-backend")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert await line(example) == (
            "listening for user.offline, report.filed on backend.events-example")
        alice = await stack.client("alice")
        bob = await stack.client("bob")
        ack = await alice.send("lobby", "hello bob")

        delivered = await asyncio.wait_for(message_events.get(), T)
        assert (delivered.type, delivered.message_id, delivered.delivery_mode) == (
            "message.stored", f"message.stored:lobby:{ack.seq}", 2)
        event = orjson.loads(delivered.body)
        assert event.pop("at") > 0
        assert event == {"schema": "burrow.event/1", "id": f"message.stored:lobby:{ack.seq}",
                         "type": "message.stored", "room": "lobby", "seq": ack.seq,
                         "message": ack.id, "sender": "alice", "body": "hello bob"}

        await bob.close()  # offline once the grace period (5 s) is over
        status, report = stack.http("POST", f"/v1/rooms/lobby/messages/{ack.id}/report",
                                    "bob", {"reason": "spam"})
        assert status == 201, report
        got = {await line(example), await line(example)}
        assert got == {
            f"report.filed: bob reported message {ack.id} in lobby as spam",
            "user.offline: bob went offline (presence version 2)"}
        assert await asyncio.wait_for(example.wait(), T) == 0
    finally:
        if example.returncode is None:
            example.kill()
            await example.wait()


async def test_membership_and_moderation_are_member_events(
        stack: Stack, member_events: asyncio.Queue[Any]) -> None:
    stack.room("mod", "olga", "eve")
    added = [orjson.loads((await asyncio.wait_for(member_events.get(), T)).body)
             for _ in range(2)]
    assert sorted((e["type"], e["user"], e["by"]) for e in added) == [
        ("member.added", "eve", "olga"), ("member.added", "olga", "olga")]
    status, body = act(stack, "mod", "olga", {"action": "ban", "user": "eve",
                                              "reason": "spam"})
    assert status in (200, 201), body
    banned = orjson.loads((await asyncio.wait_for(member_events.get(), T)).body)
    assert (banned["type"], banned["room"], banned["user"], banned["by"], banned["reason"]) == (
        "member.banned", "mod", "eve", "olga", "spam")
    assert banned["id"] == f"member.banned:mod:eve:{body['audit']}"  # the audit record's


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver on loopback: records each request, answers ``status``."""

    status = 204
    requests: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    arrived = threading.Condition()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.arrived:
            self.requests.append((dict(self.headers), body))
            self.arrived.notify_all()
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[Receiver]]]:
    handler = type("TestReceiver", (Receiver,), {"requests": [], "status": 204})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/burrow", handler
    finally:
        server.shutdown()
        server.server_close()


def requests_for(handler: type[Receiver], seq: int) -> list[tuple[dict[str, str], bytes]]:
    """The requests (headers, raw body) that carried the event of *seq*."""
    return [(h, b) for h, b in list(handler.requests) if orjson.loads(b).get("seq") == seq]


async def test_webhooks_are_signed_retried_parked_and_replayed(
        stack: Stack, receiver: tuple[str, type[Receiver]]) -> None:
    url, handler = receiver
    worker = stack.add_worker("webhooks", BURROW_WEBHOOK_URL=url,
                              BURROW_WEBHOOK_SECRET=SECRET,
                              BURROW_WEBHOOK_EVENTS="message.stored,report.*",
                              BURROW_WEBHOOK_RETRIES="1,2")
    stack.room("lobby", "alice", "bob")
    alice = await stack.client("alice")

    # A receiver that answers 2xx gets each event once, signed over the exact body.
    first = await alice.send("lobby", "first")
    await until(lambda: requests_for(handler, first.seq), timeout=T)
    [(headers, raw)] = requests_for(handler, first.seq)
    event = orjson.loads(raw)
    assert webhook_signing.verify(SECRET.encode(), headers["Burrow-Signature"], raw,
                                  now=time.time())
    assert not webhook_signing.verify(b"x" * 32, headers["Burrow-Signature"], raw,
                                      now=time.time())
    assert (headers["Burrow-Event-Id"], headers["Burrow-Event-Type"]) == (
        f"message.stored:lobby:{first.seq}", "message.stored")
    assert headers["Content-Type"] == "application/json"
    assert (event["type"], event["sender"], event["body"]) == ("message.stored", "alice",
                                                               "first")

    # A failing receiver: the event is tried, retried after 1 s and 2 s, then parked.
    handler.status = 500
    second = await alice.send("lobby", "second")
    await until(lambda: dead_letters(stack, "webhook.dead"), timeout=T)
    assert len(requests_for(handler, second.seq)) == 3
    [parked] = dead_letters(stack, "webhook.dead")
    assert parked["properties"]["message_id"] == f"message.stored:lobby:{second.seq}"
    assert "HTTP 500" in parked["properties"]["headers"]["x-burrow-error"]

    # Fixed: a replay from the management UI (a shovel) delivers it.
    handler.status = 204
    await replay(stack, "webhook.dead", exchange="burrow.jobs", key="webhook.due")
    await until(lambda: len(requests_for(handler, second.seq)) == 4, timeout=T)
    assert worker.metric("burrow_webhooks_total", outcome="delivered") == 2
    assert worker.metric("burrow_webhooks_total", outcome="retry") == 3


async def test_the_receiver_example_takes_signed_events_only() -> None:
    """examples/webhook_receiver.py, as docs/events.md runs it: 204 for a signed event
    (printed once, however often it comes), 401 for a wrong or stale signature."""
    import httpx

    from burrow.core import events

    clean = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    example = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "webhook_receiver.py"), "0",
        env={**clean, "BURROW_WEBHOOK_SECRET": SECRET},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        listening = await line(example)
        assert listening.startswith("listening on http://127.0.0.1:")
        url = listening.removeprefix("listening on ")
        body = orjson.dumps(events.presence("alice", False, 4, 1))
        now = int(time.time())
        async with httpx.AsyncClient(timeout=T) as client:
            async def post(signature: str) -> int:
                answer = await client.post(url, content=body, headers={
                    "Content-Type": "application/json", "Burrow-Signature": signature})
                return answer.status_code
            good = webhook_signing.header(SECRET.encode(), now, body)
            assert await post(good) == 204
            assert await post(good) == 204  # a redelivery: not printed again
            assert await post(webhook_signing.header(b"w" * 32, now, body)) == 401
            assert await post(webhook_signing.header(SECRET.encode(), now - 600, body)) == 401
            assert await post("t=1,v1=zz") == 401
        assert await line(example) == "user.offline user.offline:alice:4"
    finally:
        example.kill()
        await example.wait()
    assert example.stdout is not None
    assert await example.stdout.read() == b""  # nothing else was printed
