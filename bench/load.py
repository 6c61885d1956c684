"""The load generator: C WebSocket clients in R rooms of S, M sends/s for D seconds.

One asyncio process (uvloop when installed, GC frozen during the run). Client ``i`` is
user ``u<i>``, a member of room ``i // S`` (created over ``POST /v1/rooms`` with
``members``), connected to gateway ``i % G`` and subscribed to its room. Sends go
round-robin over the clients at a fixed total rate; each body is 100 bytes and starts
with the send time. Every ``message`` frame a client receives is recorded with its
receive time; every ``ack`` with its latency. :mod:`bench.report` reads the records.

Each client behaves as docs/protocol.md asks of a real one, so the same load survives
the fault mode (:mod:`bench.faults`): when its connection ends (a killed gateway, a 1001
or 1011 close) it reconnects with exponential backoff and jitter to the next gateway,
subscribes its room again with ``since`` = the highest seq it received, and sends again
every send that has no ack yet, with the same ``client_id``; an ``error`` frame
``timeout``/``unavailable``/``rate_limited`` for a send means: send it again a little later,
with the same ``client_id`` (the sequencer stores it once). None of this adds work per
frame on the normal path: one comparison per message and one list append per send.

The rooms, phones and e-mails are set up by :mod:`bench.accounts`; the mixed workload
(sends, reactions, edits, deletes) is :mod:`bench.mix`, a :class:`Workload` whose
clients subclass :class:`Client`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from bench import accounts, driver
from bench.accounts import room_id
from burrow.core import tokens

BODY_BYTES = 100
HANDSHAKES = 100  # concurrent handshakes (Sanic's listen backlog is 100)
# Error codes after which a send is sent again, same client_id (docs/protocol.md).
RETRYABLE = frozenset({"timeout", "unavailable", "rate_limited"})
# The wait before such a resend: doubling per refusal of the same send, with jitter
# (x 0.5-1.5). Resending every refused send at once after an outage floods the stack
# with duplicates just when it is catching up.
RESEND_FIRST = 0.5
RESEND_MAX = 8.0
BACKOFF_FIRST = 0.1             # seconds before the first reconnect attempt (x 0.5-1 jitter)
BACKOFF_MAX = 2.0               # doubling per failed attempt, up to this
RECONNECT_OPEN_TIMEOUT = 10.0   # one reconnect attempt's handshake
SUBSCRIBED_WITHIN = 15.0        # no `subscribed` after a reconnect: reconnect again


@dataclass(frozen=True)
class LoadConfig:
    connections: int = 200
    room_size: int = 10
    rate: float = 200.0      # sends per second, all clients together
    duration: float = 10.0   # seconds of sending
    drain: float = 15.0      # seconds to wait for the last deliveries
    # Burrow only (the peers have no members, devices or emails): members per room who
    # never connect, and the share of all users with a phone and an hourly digest, so
    # that the notifier schedules and sends pushes and the digester sends emails.
    offline: int = 2
    devices: float = 0.5
    # The mixed workload (bench.mix): (kind, weight) pairs; empty: sends only.
    mix: tuple[tuple[str, int], ...] = ()

    @property
    def rooms(self) -> int:
        return -(-self.connections // self.room_size)

    def room_of(self, client: int) -> int:
        return client // self.room_size

    def members(self, room: int) -> range:
        return range(room * self.room_size,
                     min((room + 1) * self.room_size, self.connections))


@dataclass
class Delivery:
    client: int
    room: str
    seq: int
    client_id: str
    sent: float      # from the body (time.time() at send)
    received: float  # time.time() when the frame was parsed


@dataclass
class Reconnect:
    """One reconnect of one client: closed (time.time()) until open again elsewhere."""

    client: int
    closed: float            # when the client saw its connection end
    code: int | None         # the close code it got (1006: no close frame, e.g. kill -9)
    opened: float            # when the new connection was open (0.0: never, run over)
    attempts: int            # connection attempts it took
    gateway: int             # index of the gateway it reached
    resent: int              # unacked sends it sent again on the new connection


@dataclass
class LoadResult:
    config: LoadConfig
    gateways: int
    sent: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    acks: dict[str, float] = field(default_factory=dict)   # client_id -> ack latency (s)
    acked_seq: dict[str, tuple[str, int]] = field(default_factory=dict)  # client_id -> (room, seq)
    sent_room: dict[str, str] = field(default_factory=dict)  # client_id -> room
    # the mix only: client_id -> kind of each change sent, and -> error code of each
    # change the sequencer refused (not stored, no seq: nothing to deliver)
    kinds: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)    # error code -> count
    closed: int = 0          # connections that ended (server close, kill, or ours at the end)
    reconnects: list[Reconnect] = field(default_factory=list)
    resent: int = 0          # send frames sent again (same client_id): reconnects and errors
    deferred: int = 0        # sends made while the client was reconnecting (sent on reconnect)
    unacked: list[str] = field(default_factory=list)  # client_ids without an ack at the end
    faults: list[dict[str, Any]] = field(default_factory=list)  # bench.faults' records
    # per client at the end: gateway, connected, subscribed, last_seq, unacked (diagnosis)
    final: dict[int, dict[str, Any]] = field(default_factory=dict)
    send_started: float = 0.0
    send_ended: float = 0.0
    last_received: float = 0.0
    connect_seconds: float = 0.0
    setup_seconds: float = 0.0
    load_cpu_seconds: float = 0.0

    def expected(self) -> int:
        """Deliveries that must arrive: each sent message (or change not refused) to
        every member of its room."""
        size = {room: 0 for room in set(self.sent_room.values())}
        for room in size:
            index = int(room.rsplit("-", 1)[1])
            size[room] = len(self.config.members(index))
        refused = self.refused
        return sum(size[room] for cid, room in self.sent_room.items() if cid not in refused)


def body_for(client_id: str, sent: float) -> str:
    head = f"{sent:.6f} {client_id} "
    return head + "x" * (BODY_BYTES - len(head))


def send_frame(room: str, client_id: str) -> str:
    """The ``send`` frame of *client_id* (``<client>-<k>:<send time>``), byte for byte the
    one first sent: the body is rebuilt from the send time's text in the client_id."""
    prefix, sent = client_id.split(":", 1)
    head = f"{sent} {prefix} "
    return orjson.dumps({"type": "send", "room": room, "client_id": client_id,
                         "body": head + "x" * (BODY_BYTES - len(head))}).decode()


class Client:
    """One user's connection, its room, and what it must resume after a reconnect."""

    def __init__(self, index: int, room: str, result: LoadResult, urls: Sequence[str],
                 token: str, handshakes: asyncio.Semaphore) -> None:
        self.index, self.room, self.result = index, room, result
        self.urls, self.token, self.handshakes = urls, token, handshakes
        self.gateway = index % len(urls)
        self.ws: ClientConnection | None = None   # None while reconnecting
        self.subscribed = asyncio.Event()
        self.last_seq = 0          # the highest seq received in the room (resume point)
        self.sent: list[str] = []  # this client's client_ids, in send order
        self.refusals: dict[str, int] = {}  # client_id -> retryable errors it got
        self._acked_upto = 0       # self.sent[:_acked_upto] are all acked
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, url: str, token: str) -> None:
        self.ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                compression=None, ping_interval=None, open_timeout=60,
                                max_size=2**22)

    def subscribe_frame(self, since: int) -> str:
        """The ``subscribe`` of this client's room (:mod:`bench.mix` asks for v2)."""
        return orjson.dumps({"type": "subscribe", "room": self.room, "since": since}).decode()

    def frame_of(self, client_id: str) -> str:
        """The frame to send again for *client_id* (a send: rebuilt from it)."""
        return send_frame(self.room, client_id)

    async def run(self) -> None:
        """Read frames; when the connection ends, reconnect elsewhere and resume."""
        while True:
            await self.read()
            if self.stopping:
                return
            await self._reconnect()
            if self.ws is None:
                return

    async def read(self) -> None:
        ws = self.ws
        assert ws is not None
        result, index, loads, now = self.result, self.index, orjson.loads, time.time
        deliveries = result.deliveries
        last = self.last_seq
        try:
            async for raw in ws:
                frame = loads(raw)
                kind = frame["type"]
                if kind == "message":
                    received = now()
                    body = frame["body"]
                    seq = frame["seq"]
                    deliveries.append(Delivery(index, frame["room"], seq, frame["client_id"],
                                               float(body[:body.index(" ")]), received))
                    result.last_received = received
                    if seq > last:  # noqa: PLR1730 - cheaper than max() per frame
                        last = seq
                elif kind == "ack":
                    client_id = frame["client_id"]
                    sent = float(client_id.split(":", 1)[1])
                    result.acks[client_id] = now() - sent
                    result.acked_seq[client_id] = (frame["room"], frame["seq"])
                elif kind == "subscribed":
                    self.subscribed.set()
                elif kind == "error":
                    self.last_seq = last
                    self._on_error(frame)
        except ConnectionClosed:
            pass
        finally:
            self.last_seq = last
        result.closed += 1

    # -- the fault path (nothing here runs per frame) ---------------------------------

    def _later(self, delay: float, action: Callable[[], Awaitable[None]]) -> None:
        async def run_later() -> None:
            await asyncio.sleep(delay)
            if not self.stopping:
                await action()

        task = asyncio.create_task(run_later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_error(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code"))
        result = self.result
        result.errors[code] = result.errors.get(code, 0) + 1
        if code not in RETRYABLE:
            return
        client_id = frame.get("client_id")
        refused = 1
        if isinstance(client_id, str):
            refused = self.refusals[client_id] = self.refusals.get(client_id, 0) + 1
        delay = min(RESEND_MAX, RESEND_FIRST * 2 ** (refused - 1)) * random.uniform(0.5, 1.5)
        retry_ms = frame.get("retry_after_ms")
        if isinstance(retry_ms, (int, float)):
            delay = max(delay, retry_ms / 1000)
        if isinstance(client_id, str):
            self._later(delay, lambda: self._resend([client_id]))
        elif not self.subscribed.is_set():
            # a subscribe failed (the error names no send): subscribe again
            self._later(delay, self._resubscribe)
        else:
            # a send failed without saying which: send every unacked one again
            self._later(delay, lambda: self._resend(self.unacked()))

    def unacked(self) -> list[str]:
        """This client's sends without an ack, oldest first."""
        acks, sent = self.result.acks, self.sent
        i = self._acked_upto
        while i < len(sent) and sent[i] in acks:
            i += 1
        self._acked_upto = i
        return [client_id for client_id in sent[i:] if client_id not in acks]

    async def _resend(self, client_ids: Sequence[str]) -> None:
        ws = self.ws
        if ws is None:
            return  # reconnecting: the reconnect sends every unacked one
        acks = self.result.acks
        try:
            for client_id in client_ids:
                if client_id not in acks:
                    await ws.send(self.frame_of(client_id))
                    self.result.resent += 1
        except ConnectionClosed:
            pass  # the reader reconnects and sends them again

    async def _resubscribe(self) -> None:
        ws = self.ws
        if ws is None or self.subscribed.is_set():
            return
        try:
            await ws.send(self.subscribe_frame(self.last_seq))
        except ConnectionClosed:
            pass

    async def _watch_subscribed(self, ws: ClientConnection) -> None:
        """No ``subscribed`` on the new connection in time: drop it, reconnect again."""
        try:
            await asyncio.wait_for(self.subscribed.wait(), SUBSCRIBED_WITHIN)
        except TimeoutError:
            if self.ws is ws and not self.stopping:
                self.result.errors["subscribe_timeout"] = (
                    self.result.errors.get("subscribe_timeout", 0) + 1)
                ws.transport.abort()

    async def _reconnect(self) -> None:
        """Connect to the next gateway (backoff with jitter), resubscribe, resend."""
        old = self.ws
        closed = time.time()
        code = None if old is None else old.close_code
        self.ws = None
        self.subscribed.clear()
        attempts, delay = 0, BACKOFF_FIRST
        ws: ClientConnection | None = None
        while ws is None and not self.stopping:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            self.gateway = (self.gateway + 1) % len(self.urls)
            attempts += 1
            try:
                async with self.handshakes:
                    ws = await connect(self.urls[self.gateway], additional_headers={
                        "Authorization": f"Bearer {self.token}"}, compression=None,
                        ping_interval=None, open_timeout=RECONNECT_OPEN_TIMEOUT,
                        max_size=2**22)
            except (OSError, TimeoutError, WebSocketException):
                delay = min(BACKOFF_MAX, delay * 2)
        record = Reconnect(self.index, closed, code, 0.0, attempts, self.gateway, 0)
        self.result.reconnects.append(record)
        if ws is None:
            return
        if self.stopping:
            await ws.close()
            return
        record.opened = time.time()
        # From here on new sends go to the new connection; the snapshot of the unacked
        # ones is taken before any await, so each send goes out at least once more.
        self.ws = ws
        unacked = self.unacked()
        record.resent = len(unacked)
        try:
            await ws.send(self.subscribe_frame(self.last_seq))
            for client_id in unacked:
                await ws.send(self.frame_of(client_id))
            self.result.resent += len(unacked)
        except ConnectionClosed:
            pass  # the read loop sees it and reconnects again
        task = asyncio.create_task(self._watch_subscribed(ws))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        if self.ws is not None:
            await self.ws.close()


class Workload(Protocol):
    """Another workload than plain sends (:class:`bench.mix.MixWorkload`): its clients
    and what operation k of the schedule is."""

    def client(self, index: int, room: str, result: LoadResult, urls: Sequence[str],
               token: str, handshakes: asyncio.Semaphore) -> Client: ...
    async def send(self, client: Any, k: int) -> None: ...


async def run_load(config: LoadConfig, gateway_http: Sequence[str], gateway_ws: Sequence[str],
                   jwt_secret: str, run: str | None = None,
                   on_connected: Callable[[], Awaitable[None]] | None = None,
                   during_send: Callable[[LoadResult], Coroutine[Any, Any, None]] | None = None,
                   mongo_url: str | None = None, workload: Workload | None = None
                   ) -> LoadResult:
    """Create the rooms, connect and subscribe every client, send, drain; return records.

    *on_connected* is awaited once every client is subscribed, before the first send (the
    caller samples process memory there and waits for the stack to settle).
    *during_send* (the fault schedule) starts with the first send, runs alongside the
    send phase and is awaited before the drain, whose time starts after it.
    *mongo_url* (the stack's database): the users' e-mail addresses are marked verified
    there, as if each had followed its link, so that digests are sent.
    *workload* makes the clients and the operations (None: :class:`Client`, sends).
    """
    run = run or time.strftime("%H%M%S")
    result = LoadResult(config, len(gateway_ws))
    cpu_start = time.process_time()
    setup_start = time.monotonic()
    token = {i: tokens.mint(jwt_secret, f"u{i}", 3600) for i in range(config.connections)}

    limit = asyncio.Semaphore(8)
    await accounts.create_rooms(config, run, gateway_http, token, limit)
    await accounts.phones_and_emails(config, run, gateway_http, jwt_secret, limit, mongo_url)

    handshakes = asyncio.Semaphore(HANDSHAKES)
    make = Client if workload is None else workload.client
    clients = [make(i, room_id(run, config.room_of(i)), result, gateway_ws, token[i],
                    handshakes)
               for i in range(config.connections)]
    readers: list[asyncio.Task[None]] = []

    async def open_one(client: Client) -> None:
        async with handshakes:
            await client.open(gateway_ws[client.gateway], token[client.index])
        readers.append(asyncio.create_task(client.run()))
        assert client.ws is not None
        await client.ws.send(client.subscribe_frame(0))
        # Connecting is bounded by the database (presence and membership, ~7 queries per
        # client): on the embedded one ~50 clients/s, and subscribes queue behind that.
        await asyncio.wait_for(client.subscribed.wait(), max(60.0, config.connections / 8))

    async def load() -> None:
        faults: asyncio.Task[None] | None = None
        try:
            if during_send is not None:
                faults = asyncio.create_task(during_send(result), name="faults")
            if workload is None:
                await driver.paced(config, result, lambda k: send_message(
                    clients[k % len(clients)], k, result))
            else:
                await driver.paced(config, result, lambda k: workload.send(
                    clients[k % len(clients)], k))
            if faults is not None:
                await faults
            await _drain(config, result)
        finally:
            if faults is not None and not faults.done():
                faults.cancel()
                await asyncio.gather(faults, return_exceptions=True)

    try:
        await driver.measure(result, setup_start,
                             lambda: asyncio.gather(*(open_one(c) for c in clients)),
                             on_connected, load)
    finally:
        for client in clients:
            client.stopping = True
        for client in clients:
            unacked = client.unacked()
            result.unacked += unacked
            result.final[client.index] = {
                "gateway": client.gateway, "connected": client.ws is not None,
                "subscribed": client.subscribed.is_set(), "unacked": len(unacked)}
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for client in clients:  # the read loops keep it in a local until they end
            result.final[client.index]["last_seq"] = client.last_seq
        result.load_cpu_seconds = time.process_time() - cpu_start
    return result


async def send_message(client: Client, k: int, result: LoadResult) -> None:
    """Send k of the schedule, from *client*."""
    sent = time.time()
    client_id = f"{client.index}-{k}:{sent:.6f}"
    frame = {"type": "send", "room": client.room, "client_id": client_id,
             "body": body_for(client_id.split(":", 1)[0], sent)}
    await write(client, result, client_id, orjson.dumps(frame).decode())


async def write(client: Client, result: LoadResult, client_id: str, frame: str) -> None:
    """Send *frame* (of *client_id*, in *client*'s room), or leave it to the reconnect."""
    result.sent_room[client_id] = client.room
    client.sent.append(client_id)  # before the write: a reconnect resends it
    ws = client.ws
    if ws is None:
        result.deferred += 1  # reconnecting: it goes out with the unacked ones
        return
    try:
        await ws.send(frame)
    except ConnectionClosed:  # the reconnect sends it again
        result.errors["send_on_closed"] = result.errors.get("send_on_closed", 0) + 1


async def _drain(config: LoadConfig, result: LoadResult) -> None:
    """Until every expected delivery and ack arrived (no delivery, no ack for a while
    also ends it: :func:`bench.driver.drain`)."""
    expected, refused = result.expected(), len(result.refused)

    def done() -> bool:
        nonlocal expected, refused
        if len(result.refused) != refused:  # a refused change has nothing to deliver
            expected, refused = result.expected(), len(result.refused)
        return (len(result.deliveries) >= expected
                and len(result.acks) + len(result.refused) >= result.sent
                # enough frames: done unless duplicates hide a missing one
                and len({(d.client, d.room, d.seq) for d in result.deliveries}) >= expected)

    await driver.drain(config, lambda: (len(result.deliveries) + len(result.acks)
                                        + len(result.refused)), done)
