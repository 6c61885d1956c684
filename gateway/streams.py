"""What the HTTP transports (SSE, long-polling, HTTP send) share with the WebSocket one.

Every transport is a :class:`~gateway.connection.Connection` on the same
:class:`~gateway.node.Node`: the same membership checks, binding, resume seam and bounded
outbox, so every guarantee holds on every transport. What differs is only how frames
leave: here they are collected (:class:`Collector`) for a long-poll response or an HTTP
send's answer; :mod:`gateway.sse` writes them as events.

A **cursor** says where a client is in each of its rooms: ``room:seq,room:seq``. It is the
SSE event id (so ``Last-Event-ID`` resumes every room at once) and the long-poll
``cursor``. Room ids are ``[A-Za-z0-9_-]``, so ``:`` and ``,`` cannot occur in them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping

import orjson
from sanic import Request, response
from sanic.response import HTTPResponse

from burrow.core import ids
from burrow.runtime import metrics
from gateway import protocol
from gateway.auth import Claims
from gateway.caps import ConnectionCaps, Refusal
from gateway.connection import Connection, Transport
from gateway.frames_out import OUT
from gateway.node import Node

MAX_ROOMS = 50
MAX_CURSOR = 4096


class BadParameter(ValueError):
    """A query parameter or header is malformed; the message says which and how."""


def parse_rooms(raw: str | None) -> list[str]:
    if not raw:
        raise BadParameter("rooms is required: room ids separated by commas")
    rooms = raw.split(",")
    if len(rooms) > MAX_ROOMS:
        raise BadParameter(f"rooms: at most {MAX_ROOMS} rooms per stream")
    for room in rooms:
        if not ids.is_room_id(room):
            raise BadParameter(f"rooms: {room[:70]!r} is not a room id ([A-Za-z0-9_-]{{1,64}})")
    if len(set(rooms)) != len(rooms):
        raise BadParameter("rooms: a room is listed twice")
    return rooms


def parse_cursor(raw: str | None, rooms: list[str], name: str) -> dict[str, int]:
    """``room:seq,...`` -> {room: seq}; every room in it must be one of *rooms*."""
    if not raw:
        return {}
    if len(raw) > MAX_CURSOR:
        raise BadParameter(f"{name} is too long")
    cursor: dict[str, int] = {}
    for part in raw.split(","):
        room, sep, seq = part.partition(":")
        if not sep or not seq.isdigit() or len(seq) > 15:
            raise BadParameter(f"{name}: expected room:seq,room:seq with whole seqs, "
                               f"got {part[:70]!r}")
        if room not in rooms:
            raise BadParameter(f"{name}: room {room[:70]!r} is not among rooms")
        cursor[room] = int(seq)
    return cursor


def encode_cursor(cursor: Mapping[str, int]) -> str:
    return ",".join(f"{room}:{seq}" for room, seq in cursor.items())


#: Frames that hold a room's seq: messages, and change and moderation events for v2
#: receivers.
SEQUENCED = frozenset({"message", "edit", "delete", "reaction", "moderation"})


def parse_version(raw: str | None) -> int:
    """The ``v`` query parameter: 1 (default) or 2 (change events as their own frames)."""
    if raw is None or raw == "1":
        return 1
    if raw == "2":
        return 2
    raise BadParameter("v must be 1 or 2")


class Position:
    """Follows the frames a client is given and keeps its cursor up to date."""

    def __init__(self, start: Mapping[str, int]) -> None:
        self.cursor = dict(start)

    def see(self, frame: str) -> tuple[str, dict[str, object]]:
        """The frame's type and fields; a message moves its room's place forward."""
        data = orjson.loads(frame)
        kind = str(data.get("type", ""))
        if kind in SEQUENCED:
            self.cursor[data["room"]] = data["seq"]
        elif kind == "subscribed" and data["room"] not in self.cursor:
            self.cursor[data["room"]] = data["since"]
        return kind, data


class Collector:
    """A transport that keeps frames for whoever answers the HTTP request.

    Bounded: when the request has taken all it will, the connection's writer blocks, its
    outbox fills, and the connection closes as a slow client would, ending the replay.
    """

    def __init__(self, size: int = 64) -> None:
        self.frames: asyncio.Queue[str] = asyncio.Queue(size)
        self.closed: tuple[int, str] | None = None

    async def send(self, frame: str) -> None:
        await self.frames.put(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def connection(request: Request, claims: Claims, transport: Transport) -> Connection:
    """A connection of *claims*' user for this request, with the gateway's outbox bound."""
    return Connection(uuid.uuid4().hex[:12], claims.user, claims.is_admin, transport,
                      request.app.ctx.settings.client_buffer)


class TooManyConnections(Exception):
    """The user, or the client address, holds as many connections as the caps allow."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"too many open connections for this {refusal}: close one first")
        self.refusal = refusal


def client_address(request: Request) -> str:
    """The client's address as the rate limits and caps see it (the proxy's forwarded
    one when the proxy is trusted, see Sanic's ``FORWARDED_SECRET``/``PROXIES_COUNT``)."""
    return str(request.remote_addr or request.ip)


def over_cap(request: Request) -> Refusal | None:
    """Whether one more connection of this request's user and address would be refused."""
    caps: ConnectionCaps = request.app.ctx.caps
    return caps.full(request.ctx.claims.user, client_address(request))


async def refuse_over_cap(request: Request) -> HTTPResponse | None:
    """Request middleware of the streaming routes, after the token check: 429 before the
    handshake (or the stream) when a cap is reached. :class:`Attached` counts for real."""
    refused = over_cap(request)
    if refused is None:
        return None
    metrics.GATEWAY_RATE_LIMITED.labels(f"connections_{refused}").inc()
    return response.json({"error": {"code": "too_many_connections", "message": str(
        TooManyConnections(refused))}}, status=429, headers={"Retry-After": "5"})


def attached(request: Request, conn: Connection, claims: Claims,
             transport: str) -> Attached:
    """``async with attached(...)``: *conn* is one of the gateway's connections for the
    body's duration, whatever the transport: counted for SIGTERM's 1001, present, closed
    with 4401 when its token expires, counted in ``burrow_gateway_connections`` under
    *transport* (one of :data:`burrow.runtime.metrics.TRANSPORTS`), and cleaned up to the end
    even if the request is cancelled."""
    ctx = request.app.ctx
    return Attached(ctx.node, ctx.connections, conn, claims.expires_at, transport,
                    ctx.caps, client_address(request))


class Attached:
    """What :func:`attached` returns. A class rather than an ``asynccontextmanager``: a
    WebSocket stays inside it for hours, and a suspended generator with its context
    manager is ~0.7 KiB per connection."""

    __slots__ = ("address", "admitted", "caps", "conn", "connections", "expires_at", "expiry",
                 "node", "transport")

    def __init__(self, node: Node, connections: set[Connection], conn: Connection,
                 expires_at: float, transport: str, caps: ConnectionCaps,
                 address: str) -> None:
        self.transport = transport
        self.node = node
        self.connections = connections
        self.conn = conn
        self.expires_at = expires_at
        self.expiry: asyncio.TimerHandle | None = None
        self.caps, self.address, self.admitted = caps, address, False

    async def __aenter__(self) -> Connection:
        """Raises :exc:`TooManyConnections` (nothing held then) past a cap."""
        conn = self.conn
        refused = self.caps.admit(conn.user, self.address)  # no await before: atomic
        if refused is not None:
            metrics.GATEWAY_RATE_LIMITED.labels(f"connections_{refused}").inc()
            raise TooManyConnections(refused)
        self.admitted = True
        self.connections.add(conn)
        metrics.GATEWAY_HANDSHAKES.labels(self.transport).inc()
        metrics.GATEWAY_CONNECTIONS.labels(self.transport).inc()
        self.expiry = asyncio.get_running_loop().call_later(
            max(0.0, self.expires_at - time.time()), conn.close, protocol.UNAUTHORIZED,
            "token expired")
        try:
            await self.node.connected(conn)
        except BaseException:
            await self._detach()
            raise
        return conn

    async def __aexit__(self, *exc_info: object) -> None:
        await self._detach()

    async def _detach(self) -> None:
        if self.admitted:
            self.admitted = False
            self.caps.release(self.conn.user, self.address)
        if self.expiry is not None:
            self.expiry.cancel()
        if self.conn in self.connections:
            self.connections.discard(self.conn)
            metrics.GATEWAY_CONNECTIONS.labels(self.transport).dec()
        self.conn.stop_writing()
        # Sanic cancels the handler when the client goes: the cleanup (unbinding rooms,
        # forgetting pending sends, presence) must still run to its end.
        await asyncio.shield(self.node.drop_soon(self.conn))


def unavailable(message: str) -> str:
    OUT["error"].inc()
    return protocol.error("unavailable", f"{message}; retry")
