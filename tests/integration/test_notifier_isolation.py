"""Acceptance: with the notifier's push provider down, chat delivery stays within its normal
bound while push jobs wait.

The notifier is a process of its own behind its own queues (``notify.messages``,
``push.due``): a provider that never answers, or a database the notifier cannot reach,
backs up those queues and nothing else. Each test stalls the notifier one way, then has
alice send a run of messages to carol through the real gateway and sequencer, and holds
every one of them to the chat's bound (ack and delivery each within :data:`BOUND` seconds
of the send, in order, seqs contiguous); then it lifts the outage and shows the waiting
work was done rather than lost: the held pushes are confirmed, the queued messages
scheduled their push.

- :func:`test_a_hung_push_provider_does_not_delay_chat_and_its_jobs_wait`: the APNs fake
  holds every request for bob's phone (a provider outage as the notifier sees it: requests
  hang), so the notifier's push jobs are stuck in flight.
- :func:`test_an_unreachable_notifier_database_does_not_delay_chat`: the notifier reaches
  the database through a relay that the test cuts once the notifier is ready (the chat
  path keeps its own, direct link); ``notify.messages`` accumulates until the relay is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

import pytest

from burrow.client import ChatClient
from tests.conftest import until
from tests.fakes.apns import ApnsRequest, device_token
from tests.integration import test_push_jobs
from tests.integration.conftest import Stack
from tests.integration.test_mail_jobs import scrape
from tests.integration.test_push_jobs import Providers, find, notifier, register

pytestmark = pytest.mark.integration

providers = test_push_jobs.providers  # the fixture: local FCM and APNs fakes

BOUND = 5.0  # seconds from send to ack, and from send to delivery, for every message
MESSAGES = 30  # sent while the notifier is stalled
WAIT = 30.0  # how long a step may take before the test fails instead of hanging
SENT_APNS = ("burrow_pushes_total", (("outcome", "sent"), ("platform", "apns")))


@dataclass(frozen=True)
class Timing:
    seq: int
    acked: float  # seconds from send to ack
    received: float  # seconds from send to carol's copy


async def chat_run(sender: ChatClient, reader: ChatClient, room: str, first_seq: int,
                   count: int, label: str) -> list[Timing]:
    """*sender* sends *count* messages one after the other, *reader* (subscribed) gets
    each; every one is acked and delivered in order, with contiguous seqs from
    *first_seq*, within :data:`BOUND` seconds of its send."""
    timings: list[Timing] = []
    for n in range(count):
        body = f"{label} {n}"
        sent = time.monotonic()
        ack = await asyncio.wait_for(sender.send(room, body), WAIT)
        acked = time.monotonic() - sent
        got = await asyncio.wait_for(reader.messages.get(), WAIT)
        received = time.monotonic() - sent
        assert (ack.room, ack.seq) == (room, first_seq + n), ack
        assert (got.room, got.seq, got.id, got.sender, got.body) == (
            room, first_seq + n, ack.id, "alice", body), got
        assert acked < BOUND, f"{body}: acked after {acked:.2f}s"
        assert received < BOUND, f"{body}: delivered after {received:.2f}s"
        timings.append(Timing(ack.seq, acked, received))
    assert reader.violations == []
    assert reader.messages.empty()  # nothing repeated, nothing extra
    return timings


def notification_id(request: ApnsRequest) -> str:
    return str((request.payload or {}).get("notification_id"))


def push_log_ids(stack: Stack) -> set[str]:
    return {str(record["_id"]) for record in find(stack, "push_log", {})}


async def test_a_hung_push_provider_does_not_delay_chat_and_its_jobs_wait(
        providers: Providers, stack: Stack) -> None:
    worker = notifier(stack, providers)
    stack.room("general", "alice", "bob", "carol")
    phone = device_token()
    device = register(stack, "bob", "apns", phone)  # bob is offline: he is pushed
    providers.apns.hold(phone)  # APNs takes the request for bob's phone and never answers
    alice = await stack.client("alice")
    carol = await stack.client("carol")
    assert await asyncio.wait_for(carol.subscribe("general"), WAIT) == 0

    await chat_run(alice, carol, "general", 1, 1, "before")
    [stuck] = await providers.apns.wait_for_async(1, timeout=60)
    assert stuck.token == phone
    first = notification_id(stuck)
    assert first == "room:general:bob:1"
    # the job for message 1 is in flight and hangs; its slot stays taken meanwhile

    timings = await chat_run(alice, carol, "general", 2, MESSAGES, "during")
    assert len(timings) == MESSAGES

    # The messages sent meanwhile scheduled the next push job (job 1 had cleared bob's
    # pending flag before it called APNs): it comes due and hangs too.
    [later] = await providers.apns.wait_for_async(
        1, timeout=60, where=lambda r: notification_id(r) != first)
    assert later.token == phone
    assert later.payload is not None
    later_seq = int(later.payload["seq"])
    assert later_seq >= 2  # covers messages sent while job 1 hung
    assert later.payload["unread"] == str(later_seq)  # bob read nothing, was pushed nothing
    # both jobs wait: no push was confirmed, none recorded as sent
    assert push_log_ids(stack) == set()
    assert scrape(worker)[SENT_APNS] == 0

    providers.apns.release()  # the provider is back: the held requests are answered
    want = {f"{first}|{device}", f"{notification_id(later)}|{device}"}
    await until(lambda: want <= push_log_ids(stack), timeout=60)
    assert want <= push_log_ids(stack)
    assert all(r.token == phone and r.status == 200 for r in providers.apns.requests)
    await until(lambda: scrape(worker)[SENT_APNS] >= 2)
    assert scrape(worker)[SENT_APNS] >= 2
    assert worker.app.exited is None


class Relay:
    """A TCP relay to *target* in its own thread (so the test's blocking calls cannot
    stall it). :meth:`cut` resets every relayed connection and from then on closes new
    ones at once (a database that went away) until :meth:`restore`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._cut = False
        self._links: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="relay", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the relay did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def cut(self) -> None:
        """Reset every open connection and refuse new ones; returns when they are gone."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop).result(30)

    def restore(self) -> None:
        self._cut = False

    async def _cut_all(self) -> None:
        self._cut = True
        for writer in list(self._links):
            writer.transport.abort()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._links):
                writer.transport.abort()
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                self._links.discard(end)
                end.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        writer.transport.abort()  # one side is gone: so is the other


@pytest.fixture
def relay_to_db(mongo_url: str) -> Iterator[Relay]:
    """A relay to the test's database server (asked for before the stack, so it stops
    after the processes that use it)."""
    address = urllib.parse.urlsplit(mongo_url)
    assert address.hostname is not None and address.port is not None
    with Relay(address.hostname, address.port) as relay:
        yield relay


def through(relay: Relay, mongo_url: str) -> str:
    """*mongo_url* with its server replaced by *relay*."""
    address = urllib.parse.urlsplit(mongo_url)
    return urllib.parse.urlunsplit(address._replace(netloc=f"127.0.0.1:{relay.port}"))


def queue_depth(stack: Stack, queue: str) -> Any:
    """Messages in *queue* (ready + unacked) as the management API last counted them
    (its statistics are refreshed every few seconds)."""
    info = stack.vhost.api("GET", f"/api/queues/{{vhost}}/{queue}")
    assert isinstance(info, dict)
    return info.get("messages")


async def test_an_unreachable_notifier_database_does_not_delay_chat(
        providers: Providers, relay_to_db: Relay, stack: Stack) -> None:
    worker = notifier(stack, providers,
                      BURROW_MONGO_URL=through(relay_to_db, stack.mongo_url))  # ready: db up
    stack.room("general", "alice", "bob", "carol")
    phone = device_token()
    register(stack, "bob", "apns", phone)
    alice = await stack.client("alice")
    carol = await stack.client("carol")
    assert await asyncio.wait_for(carol.subscribe("general"), WAIT) == 0
    await until(lambda: queue_depth(stack, "notify.messages") == 0)

    relay_to_db.cut()  # the notifier's database is gone; the chat path's is not
    await asyncio.to_thread(worker.wait, "up", "down")
    timings = await chat_run(alice, carol, "general", 1, MESSAGES, "during")
    assert len(timings) == MESSAGES
    # every stored message waits for the notifier: held in its batch or still queued
    await until(lambda: queue_depth(stack, "notify.messages") == MESSAGES)
    assert queue_depth(stack, "notify.messages") == MESSAGES
    done = ("burrow_jobs_total", (("outcome", "done"), ("queue", "notify.messages")))
    assert scrape(worker).get(done, 0.0) == 0  # the series appears at the first batch done
    assert providers.apns.requests == []

    relay_to_db.restore()
    await asyncio.to_thread(worker.wait, "up", "up")
    # the waiting messages are scheduled: bob gets one push for all of them
    [pushed] = await providers.apns.wait_for_async(1, timeout=60)
    assert pushed.token == phone and pushed.status == 200
    assert pushed.payload is not None
    assert (pushed.payload["seq"], pushed.payload["unread"]) == (str(MESSAGES), str(MESSAGES))
    await until(lambda: queue_depth(stack, "notify.messages") == 0)
    assert worker.app.exited is None
