"""``POST /v1/rooms/{room}/typing`` and ``PUT /v1/rooms/{room}/read``: the two frames of the
WebSocket that carry no message, for clients on SSE or long-polling.

They behave as their frames do: members only (403 otherwise), typing throttled to one
event per ``BURROW_TYPING_INTERVAL`` per user and room (a throttled request still answers
204: the client cannot tell and need not care), read pointers only move forward.
Neither counts as activity for ``BURROW_IDLE_AFTER`` (nor does an HTTP send): an HTTP
request is no connection, so there is none to mark active; an SSE user counts as idle
for pushes. (Noted as left for later in docs/clients.md.)
"""

from __future__ import annotations

from pymongo.errors import PyMongoError
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import ids
from gateway import streams
from gateway.connection import Connection
from gateway.http_json import Invalid, json_object, problem, without_body
from gateway.node import Node
from gateway.protocol import ProtocolError
from gateway.ws import authenticate

MAX_SEQ = 2**53 - 1  # what a JavaScript client can hold exactly


def blueprint() -> Blueprint:
    bp = Blueprint("http_events", url_prefix="/v1/rooms")
    bp.on_request(authenticate)

    def connection(request: Request) -> Connection:
        # One throttle owner per user: every HTTP request is a fresh connection, so the
        # throttle keyed by connection would let every request through.
        conn = streams.connection(request, request.ctx.claims, streams.Collector(1))
        conn.id = f"http:{conn.user}"
        return conn

    async def act(request: Request, room: str, seq: int | None = None) -> HTTPResponse:
        """Typing (*seq* None) or read up to *seq*, as *request*'s user, in *room*."""
        node: Node = request.app.ctx.node
        conn = connection(request)
        try:
            if seq is None:
                await node.typing(conn, room)
            else:
                await node.check_member(conn, room)
                await node.rooms.mark_read(room, conn.user, seq)
        except ProtocolError as exc:
            return problem(403, exc.code, exc.message)
        except PyMongoError:
            return problem(503, "unavailable", "the database is not reachable; retry")
        return response.empty()

    @bp.post("/<room>/typing", stream=True)
    @without_body()  # no body: never read or buffered
    async def typing(request: Request, room: str) -> HTTPResponse:
        if not ids.is_room_id(room):
            return problem(400, "bad_room", "room must match [A-Za-z0-9_-]{1,64}")
        return await act(request, room)

    @bp.put("/<room>/read", stream=True)
    async def read(request: Request, room: str) -> HTTPResponse:
        if not ids.is_room_id(room):
            return problem(400, "bad_room", "room must match [A-Za-z0-9_-]{1,64}")
        try:
            seq = (await json_object(request, ("seq",), 256)).get("seq")
            if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
                raise Invalid("seq must be a whole number >= 0", field="seq")
        except Invalid as exc:
            return exc.response()
        return await act(request, room, seq)

    return bp
