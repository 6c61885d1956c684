"""``GET /v1/sse``: the same events as the WebSocket, as a Server-Sent Events stream.

For clients that cannot open a WebSocket (proxies that strip upgrades, old runtimes).
The query names the rooms (``rooms=a,b``) and, optionally, where to resume each
(``since=a:12,b:0``); an ``EventSource`` that reconnects sends ``Last-Event-ID``, which
wins over ``since``. Each message event's id is the stream's whole cursor
(``a:13,b:0``: :mod:`gateway.streams`), so one reconnect resumes every room with no gap
and no duplicate: the resume seam is the WebSocket's (bind, replay, drain).

Events are named by frame type (``message``, ``subscribed``, ``presence``, ``typing``,
``error``...) and carry the frame's JSON as data. A comment line goes out every
``BURROW_SSE_HEARTBEAT`` seconds (15) so that proxies, which often cut a stream idle for
30-60 s, keep it open. When the gateway
ends the stream (token expired, client too slow, shutdown) it first sends
``event: close`` with the close code and reason the WebSocket would have used. Sends go
through ``POST /v1/rooms/{room}/messages`` (:mod:`gateway.http_send`).
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic.response.types import BaseHTTPResponse as StreamResponse

from gateway import protocol, streams
from gateway.connection import Connection
from gateway.frames_out import OUT
from gateway.http_json import problem
from gateway.link import Unavailable
from gateway.node import Node
from gateway.protocol import ProtocolError
from gateway.ws import authenticate

log = logging.getLogger(__name__)

RETRY_MS = 2000  # what EventSource waits before it reconnects
_KEEPALIVE = ""  # an outbox entry that is not a frame: write a comment



class SseTransport:
    def __init__(self, stream: StreamResponse, position: streams.Position) -> None:
        self.stream = stream
        self.position = position

    async def send(self, frame: str) -> None:
        if frame is _KEEPALIVE or frame == _KEEPALIVE:
            await self.stream.send(": keepalive\n\n")
            return
        kind, _ = self.position.see(frame)
        if kind in streams.SEQUENCED or kind == "subscribed":
            event_id = streams.encode_cursor(self.position.cursor)
            await self.stream.send(f"id: {event_id}\nevent: {kind}\ndata: {frame}\n\n")
        else:
            await self.stream.send(f"event: {kind}\ndata: {frame}\n\n")

    async def close(self, code: int, reason: str) -> None:
        data = orjson.dumps({"type": "close", "code": code, "reason": reason}).decode()
        await self.stream.send(f"event: close\ndata: {data}\n\n")
        await self.stream.send("", end_stream=True)


async def check_rooms(node: Node, user: str, rooms: list[str]) -> HTTPResponse | None:
    """403 before any byte of the stream if the user is not in every room (G6)."""
    for room in rooms:
        if await node.rooms.role(room, user) is None:
            return problem(403, "forbidden", f"not a member of room {room}", room=room)
    try:
        await node.ready()
    except Unavailable as exc:
        return problem(503, "unavailable", f"{exc}; retry")
    return None


async def keepalive(conn: Connection, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        conn.push([_KEEPALIVE])


def blueprint() -> Blueprint:
    bp = Blueprint("sse", url_prefix="/v1")
    bp.on_request(authenticate)
    bp.on_request(streams.refuse_over_cap)

    @bp.get("/sse")
    async def sse(request: Request) -> HTTPResponse | None:
        node: Node = request.app.ctx.node
        claims = request.ctx.claims
        try:
            rooms = streams.parse_rooms(request.args.get("rooms"))
            since = streams.parse_cursor(request.args.get("since"), rooms, "since")
            since.update(streams.parse_cursor(request.headers.get("last-event-id"), rooms,
                                              "Last-Event-ID"))
            version = streams.parse_version(request.args.get("v"))
        except streams.BadParameter as exc:
            return problem(400, "bad_request", str(exc))
        refused = await check_rooms(node, claims.user, rooms)
        if refused is not None:
            return refused
        stream = await request.respond(content_type="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        assert stream is not None
        await stream.send(f"retry: {RETRY_MS}\n\n")
        conn = streams.connection(request, claims, SseTransport(stream,
                                                                streams.Position(since)))
        try:
            async with streams.attached(request, conn, claims, "sse"):
                every = request.app.ctx.settings.sse_heartbeat
                beat = asyncio.create_task(keepalive(conn, every))
                try:
                    for room in rooms:
                        try:
                            await node.subscribe(conn, room, since.get(room), version)
                        except ProtocolError as exc:  # removed from the room meanwhile
                            conn.push([exc.frame()])
                            OUT["error"].inc()
                        except Unavailable as exc:
                            conn.push([streams.unavailable(str(exc))])
                    await conn.closed.wait()
                finally:
                    beat.cancel()
        except streams.TooManyConnections as exc:  # raced past the check: end the stream
            await conn.transport.close(protocol.POLICY_VIOLATION, str(exc))
        return None

    return bp
