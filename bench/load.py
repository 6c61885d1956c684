"""The load generator: C WebSocket clients in R rooms of S, M sends/s for D seconds.

One asyncio process (uvloop when installed, GC frozen during the run). Client ``i`` is
user ``u<i>``, a member of room ``i // S`` (created over ``POST /v1/rooms`` with
``members``), connected to gateway ``i % G`` and subscribed to its room. Sends go
round-robin over the clients at a fixed total rate; each body is 100 bytes and starts
with the send time. Every ``message`` frame a client receives is recorded with its
receive time; every ``ack`` with its latency. :mod:`bench.report` reads the records.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from burrow import tokens

BODY_BYTES = 100
HANDSHAKES = 100  # concurrent handshakes (Sanic's listen backlog is 100)


@dataclass(frozen=True)
class LoadConfig:
    connections: int = 200
    room_size: int = 10
    rate: float = 200.0      # sends per second, all clients together
    duration: float = 10.0   # seconds of sending
    drain: float = 15.0      # seconds to wait for the last deliveries

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
class LoadResult:
    config: LoadConfig
    gateways: int
    sent: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    acks: dict[str, float] = field(default_factory=dict)   # client_id -> ack latency (s)
    acked_seq: dict[str, tuple[str, int]] = field(default_factory=dict)  # client_id -> (room, seq)
    sent_room: dict[str, str] = field(default_factory=dict)  # client_id -> room
    errors: dict[str, int] = field(default_factory=dict)    # error code -> count
    closed: int = 0          # connections the server closed during the run
    send_started: float = 0.0
    send_ended: float = 0.0
    last_received: float = 0.0
    connect_seconds: float = 0.0
    setup_seconds: float = 0.0
    load_cpu_seconds: float = 0.0

    def expected(self) -> int:
        """Deliveries that must arrive: each sent message to every member of its room."""
        size = {room: 0 for room in set(self.sent_room.values())}
        for room in size:
            index = int(room.rsplit("-", 1)[1])
            size[room] = len(self.config.members(index))
        return sum(size[room] for room in self.sent_room.values())


def room_id(run: str, index: int) -> str:
    return f"bench{run}-{index}"


def body_for(client_id: str, sent: float) -> str:
    head = f"{sent:.6f} {client_id} "
    return head + "x" * (BODY_BYTES - len(head))


def _post(url: str, token: str, body: object) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class _Client:
    def __init__(self, index: int, room: str, result: LoadResult) -> None:
        self.index, self.room, self.result = index, room, result
        self.ws: ClientConnection | None = None
        self.subscribed = asyncio.Event()

    async def open(self, url: str, token: str) -> None:
        self.ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                compression=None, ping_interval=None, open_timeout=60,
                                max_size=2**22)

    async def read(self) -> None:
        assert self.ws is not None
        result, index, loads, now = self.result, self.index, orjson.loads, time.time
        deliveries = result.deliveries
        try:
            async for raw in self.ws:
                frame = loads(raw)
                kind = frame["type"]
                if kind == "message":
                    received = now()
                    body = frame["body"]
                    deliveries.append(Delivery(index, frame["room"], frame["seq"],
                                               frame["client_id"],
                                               float(body[:body.index(" ")]), received))
                    result.last_received = received
                elif kind == "ack":
                    client_id = frame["client_id"]
                    sent = float(client_id.split(":", 1)[1])
                    result.acks[client_id] = now() - sent
                    result.acked_seq[client_id] = (frame["room"], frame["seq"])
                elif kind == "subscribed":
                    self.subscribed.set()
                elif kind == "error":
                    code = str(frame.get("code"))
                    result.errors[code] = result.errors.get(code, 0) + 1
        except ConnectionClosed:
            pass
        result.closed += 1


async def run_load(config: LoadConfig, gateway_http: Sequence[str], gateway_ws: Sequence[str],
                   jwt_secret: str, run: str | None = None,
                   on_connected: Callable[[], Awaitable[None]] | None = None,
                   ) -> LoadResult:
    """Create the rooms, connect and subscribe every client, send, drain; return records.

    *on_connected* is awaited once every client is subscribed, before the first send (the
    caller samples process memory there and waits for the stack to settle).
    """
    run = run or time.strftime("%H%M%S")
    result = LoadResult(config, len(gateway_ws))
    cpu_start = time.process_time()
    setup_start = time.monotonic()
    token = {i: tokens.mint(jwt_secret, f"u{i}", 3600) for i in range(config.connections)}

    # Rooms: the first member creates the room with the others as members.
    limit = asyncio.Semaphore(8)

    async def create(index: int) -> None:
        members = list(config.members(index))
        async with limit:
            status, text = await asyncio.to_thread(
                _post, gateway_http[index % len(gateway_http)] + "/v1/rooms",
                token[members[0]], {"id": room_id(run, index),
                                    "members": [f"u{m}" for m in members[1:]]})
        if status != 201:
            raise RuntimeError(f"POST /v1/rooms {room_id(run, index)}: {status} {text}")

    await asyncio.gather(*(create(r) for r in range(config.rooms)))

    clients = [_Client(i, room_id(run, config.room_of(i)), result)
               for i in range(config.connections)]
    handshakes = asyncio.Semaphore(HANDSHAKES)
    readers: list[asyncio.Task[None]] = []

    async def open_one(client: _Client) -> None:
        async with handshakes:
            await client.open(gateway_ws[client.index % len(gateway_ws)], token[client.index])
        readers.append(asyncio.create_task(client.read()))
        assert client.ws is not None
        await client.ws.send(orjson.dumps({"type": "subscribe", "room": client.room,
                                           "since": 0}).decode())
        await asyncio.wait_for(client.subscribed.wait(), 60)

    connect_start = time.monotonic()
    try:
        await asyncio.gather(*(open_one(c) for c in clients))
        result.connect_seconds = time.monotonic() - connect_start
        result.setup_seconds = time.monotonic() - setup_start
        if on_connected is not None:
            await on_connected()

        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            await _send_phase(config, clients, result)
            await _drain(config, result)
        finally:
            gc.enable()
            gc.unfreeze()
    finally:
        await asyncio.gather(*(c.ws.close() for c in clients if c.ws is not None),
                             return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        result.load_cpu_seconds = time.process_time() - cpu_start
    return result


async def _send_phase(config: LoadConfig, clients: list[_Client], result: LoadResult) -> None:
    total = int(config.rate * config.duration)
    start = time.monotonic()
    result.send_started = time.time()
    k = 0
    while k < total:
        due = min(total, int((time.monotonic() - start) * config.rate) + 1)
        while k < due:
            client = clients[k % len(clients)]
            sent = time.time()
            client_id = f"{client.index}-{k}:{sent:.6f}"
            frame = {"type": "send", "room": client.room, "client_id": client_id,
                     "body": body_for(client_id.split(":", 1)[0], sent)}
            result.sent_room[client_id] = client.room
            assert client.ws is not None
            try:
                await client.ws.send(orjson.dumps(frame).decode())
            except ConnectionClosed:
                result.errors["send_on_closed"] = result.errors.get("send_on_closed", 0) + 1
            result.sent += 1
            k += 1
        next_due = start + k / config.rate
        await asyncio.sleep(max(0.0, next_due - time.monotonic()))
    result.send_ended = time.time()


async def _drain(config: LoadConfig, result: LoadResult) -> None:
    """Wait until every expected delivery and ack arrived, or nothing arrived for a while."""
    expected = result.expected()
    deadline = time.monotonic() + config.drain
    last_count, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(result.deliveries)
        if count >= expected and len(result.acks) >= result.sent:
            return
        if count != last_count:
            last_count, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since > max(5.0, config.drain / 3):
            return
        await asyncio.sleep(0.05)
