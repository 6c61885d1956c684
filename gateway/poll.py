"""``GET /v1/poll``: long-polling, for clients that can hold neither a WebSocket nor SSE.

``rooms=a,b`` names the rooms, ``cursor=a:12,b:3`` says where the client is (as given by
the previous poll; absent: from now). The answer comes at once when events are pending
after the cursor, else when the first one arrives or after ``timeout`` seconds (default
25, at most 60): ``{"events": [...], "cursor": "a:14,b:3"}``. Passing that cursor to the
next poll continues exactly where this one stopped: no gap, no duplicate, from any
gateway, because the cursor, not the gateway, holds the state. A poll is a short-lived
connection on the node (same membership checks, binding and resume seam as a
WebSocket); when it ends nothing of it stays on the gateway, so a client that stops
polling costs nothing. At most :data:`MAX_EVENTS` messages come per answer; the cursor
then points at the last one, and the next poll gets the rest at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from gateway import streams
from gateway.http_json import problem
from gateway.link import Unavailable
from gateway.node import Node
from gateway.protocol import ProtocolError
from gateway.sse import check_rooms
from gateway.ws import authenticate

DEFAULT_TIMEOUT = 25.0
MAX_TIMEOUT = 60.0
MAX_EVENTS = 500
LINGER = 0.02  # after the first event, collect what follows at once into the same answer
SKIPPED = frozenset({"subscribed", "pong"})  # bookkeeping, not news


def parse_timeout(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise streams.BadParameter("timeout must be a number of seconds") from None
    if not 0 <= value <= MAX_TIMEOUT:
        raise streams.BadParameter(f"timeout must be from 0 to {MAX_TIMEOUT:g} seconds")
    return value


def blueprint() -> Blueprint:
    bp = Blueprint("poll", url_prefix="/v1")
    bp.on_request(authenticate)
    bp.on_request(streams.refuse_over_cap)

    @bp.get("/poll")
    async def poll(request: Request) -> HTTPResponse:
        node: Node = request.app.ctx.node
        claims = request.ctx.claims
        try:
            rooms = streams.parse_rooms(request.args.get("rooms"))
            cursor = streams.parse_cursor(request.args.get("cursor"), rooms, "cursor")
            timeout = parse_timeout(request.args.get("timeout"))
            version = streams.parse_version(request.args.get("v"))
        except streams.BadParameter as exc:
            return problem(400, "bad_request", str(exc))
        refused = await check_rooms(node, claims.user, rooms)
        if refused is not None:
            return refused
        # A room without a place starts from now, fixed here: the cursor this poll returns
        # must name every room, or the next poll would skip what came in between.
        missing = [room for room in rooms if room not in cursor]
        if missing:
            cursor.update(await node.messages.last_seqs(missing))
        collector = streams.Collector(MAX_EVENTS + len(rooms))
        position = streams.Position(cursor)
        conn = streams.connection(request, claims, collector)
        events: list[Any] = []
        try:
            async with streams.attached(request, conn, claims, "poll"):
                try:
                    for room in rooms:
                        await node.subscribe(conn, room, cursor.get(room), version)
                except ProtocolError as exc:
                    return problem(403, exc.code, exc.message)
                except Unavailable as exc:
                    return problem(503, "unavailable", f"{exc}; retry")
                deadline = asyncio.get_running_loop().time() + timeout
                while len(events) < MAX_EVENTS and conn.close_code is None:
                    remaining = deadline - asyncio.get_running_loop().time()
                    # after the first event, or once the time is up, take only what follows
                    # at once (with timeout=0 that is what is pending after the cursor)
                    wait = LINGER if events or remaining <= 0 else remaining
                    try:
                        frame = await asyncio.wait_for(collector.frames.get(), wait)
                    except TimeoutError:
                        break
                    kind, data = position.see(frame)
                    if kind not in SKIPPED:
                        events.append(data)
        except streams.TooManyConnections as exc:  # raced past the check
            return problem(429, "too_many_connections", str(exc))
        return response.raw(orjson.dumps({"events": events,
                                          "cursor": streams.encode_cursor(position.cursor)}),
                            content_type="application/json")

    return bp
