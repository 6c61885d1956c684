"""The load generator for the peers: :func:`bench.load.run_load`'s load, other wire formats.

Same clients, rooms, schedule and records as for Burrow, so the reports compare: client
``i`` joins room ``i // S`` on server ``i % len(urls)``; sends go round-robin over the
clients at a fixed total rate, each with a unique ``client_id`` and a 100-byte body that
starts with the send time; GC is frozen and disabled while sending. What differs:

* no JWT and no rooms API: a room exists once someone joins it; a client is ready when
  it gets ``joined`` (Burrow's ``subscribed``);
* no ack and no sequence number: ``result.acks`` stays empty and the drain waits for
  deliveries only. So that :func:`bench.report.summarize` still counts loss, duplicates
  and order disagreements, each receiver numbers the distinct messages of its room in
  the order it got them (1, 2, ...) and records that rank as the delivery's ``seq``; a
  repeated ``client_id`` keeps its first rank and so counts as a duplicate (and as an
  order violation, the only way one can happen here). "Order disagreements" then means
  two members of a room saw its messages in different orders.

The wire format is a :class:`Codec` per kind; the driver is shared. The Socket.IO codec
speaks Engine.IO v4 / Socket.IO v5 directly over the ``websockets`` client (the
python-socketio client costs several times more CPU per frame and would measure itself).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data

from bench import driver
from bench.accounts import room_id
from bench.load import HANDSHAKES, Delivery, LoadConfig, LoadResult, body_for

PING = "ping"


class PeerProtocolError(RuntimeError):
    """The server answered something the codec did not expect during the handshake."""


@dataclass(frozen=True)
class Codec:
    """How one kind of server is spoken to.

    ``decode`` returns ``(event, data)``: ``"message"``, ``"joined"``, :data:`PING`
    (answer with ``pong``) or ``""`` for frames the load ignores.
    """

    handshake: Callable[[ClientConnection], Awaitable[None]]
    join: Callable[[str], str]
    send: Callable[[str, str, str], str]
    decode: Callable[[Data], tuple[str, Any]]
    pong: str = ""


# ---- Socket.IO v5 over Engine.IO v4, WebSocket transport ---------------------------
# Engine.IO packet types: 0 open, 2 ping, 3 pong, 4 message; Socket.IO inside a
# message: 0 connect, 2 event. So "40" connects to "/" and '42["event",{...}]' is an event.

async def _sio_handshake(ws: ClientConnection) -> None:
    opened = await ws.recv()
    if not (isinstance(opened, str) and opened.startswith("0{")):
        raise PeerProtocolError(f"expected an Engine.IO open packet, got {opened!r:.200}")
    await ws.send("40")
    connected = await ws.recv()
    if not (isinstance(connected, str) and connected.startswith("40")):
        raise PeerProtocolError(f"expected a Socket.IO connect packet, got {connected!r:.200}")


def _sio_join(room: str) -> str:
    return "42" + orjson.dumps(["join", {"room": room}]).decode()


def _sio_send(room: str, client_id: str, body: str) -> str:
    return "42" + orjson.dumps(["send", {"room": room, "client_id": client_id,
                                         "body": body}]).decode()


def _sio_decode(raw: Data) -> tuple[str, Any]:
    if isinstance(raw, str):
        if raw.startswith("42"):
            event, data = orjson.loads(raw[2:])
            return str(event), data
        if raw == "2":
            return PING, None
    return "", None


SOCKETIO = Codec(_sio_handshake, _sio_join, _sio_send, _sio_decode, pong="3")


# ---- the broadcast server's JSON frames ------------------------------------------------

async def _no_handshake(ws: ClientConnection) -> None:
    return None


def _ws_join(room: str) -> str:
    return orjson.dumps({"type": "join", "room": room}).decode()


def _ws_send(room: str, client_id: str, body: str) -> str:
    return orjson.dumps({"type": "send", "room": room, "client_id": client_id,
                         "body": body}).decode()


def _ws_decode(raw: Data) -> tuple[str, Any]:
    frame = orjson.loads(raw)
    return str(frame.get("type", "")), frame


WEBSOCKETS = Codec(_no_handshake, _ws_join, _ws_send, _ws_decode)

CODECS = {"socketio": SOCKETIO, "websockets": WEBSOCKETS}


# ---- the driver --------------------------------------------------------------------------

class _Client:
    def __init__(self, index: int, room: str, codec: Codec, result: LoadResult) -> None:
        self.index, self.room, self.codec, self.result = index, room, codec, result
        self.ws: ClientConnection | None = None
        self.joined = asyncio.Event()

    async def open(self, url: str) -> None:
        self.ws = await connect(url, compression=None, ping_interval=None, open_timeout=60,
                                max_size=2**22)
        await asyncio.wait_for(self.codec.handshake(self.ws), 60)

    async def read(self) -> None:
        assert self.ws is not None
        result, index, now = self.result, self.index, time.time
        decode, pong = self.codec.decode, self.codec.pong
        deliveries = result.deliveries
        rank: dict[str, int] = {}  # client_id -> order of first arrival here (the "seq")
        try:
            async for raw in self.ws:
                event, data = decode(raw)
                if event == "message":
                    received = now()
                    client_id = data["client_id"]
                    seq = rank.setdefault(client_id, len(rank) + 1)
                    body = data["body"]
                    deliveries.append(Delivery(index, data["room"], seq, client_id,
                                               float(body[:body.index(" ")]), received))
                    result.last_received = received
                elif event == "joined":
                    self.joined.set()
                elif event == PING:
                    await self.ws.send(pong)
        except ConnectionClosed:
            pass
        result.closed += 1


async def run_peer_load(config: LoadConfig, kind: str, ws_urls: Sequence[str],
                        on_connected: Callable[[], Awaitable[None]] | None = None,
                        run: str | None = None) -> LoadResult:
    """Connect and join every client, send, drain; return the records.

    *on_connected* is awaited once every client has joined, before the first send (the
    caller samples process memory there and waits for the stack to settle).
    """
    codec = CODECS[kind]
    run = run or time.strftime("%H%M%S")
    result = LoadResult(config, len(ws_urls))
    cpu_start = time.process_time()
    setup_start = time.monotonic()
    clients = [_Client(i, room_id(run, config.room_of(i)), codec, result)
               for i in range(config.connections)]
    handshakes = asyncio.Semaphore(HANDSHAKES)
    readers: list[asyncio.Task[None]] = []

    async def open_one(client: _Client) -> None:
        async with handshakes:
            await client.open(ws_urls[client.index % len(ws_urls)])
        readers.append(asyncio.create_task(client.read()))
        assert client.ws is not None
        await client.ws.send(codec.join(client.room))
        await asyncio.wait_for(client.joined.wait(), 60)

    async def load() -> None:
        encode = codec.send

        async def send(k: int) -> None:
            client = clients[k % len(clients)]
            sent = time.time()
            client_id = f"{client.index}-{k}:{sent:.6f}"
            frame = encode(client.room, client_id, body_for(client_id.split(":", 1)[0], sent))
            result.sent_room[client_id] = client.room
            assert client.ws is not None
            try:
                await client.ws.send(frame)
            except ConnectionClosed:
                result.errors["send_on_closed"] = result.errors.get("send_on_closed", 0) + 1

        await driver.paced(config, result, send)
        # No acks here: done when every expected delivery arrived.
        expected = result.expected()
        await driver.drain(config, lambda: len(result.deliveries),
                           lambda: len(result.deliveries) >= expected)

    try:
        await driver.measure(result, setup_start,
                             lambda: asyncio.gather(*(open_one(c) for c in clients)),
                             on_connected, load)
    finally:
        await asyncio.gather(*(c.ws.close() for c in clients if c.ws is not None),
                             return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        result.load_cpu_seconds = time.process_time() - cpu_start
    return result
