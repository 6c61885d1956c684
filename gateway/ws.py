"""``GET /v1/ws``: the WebSocket transport. Auth happens before the upgrade.

The token is checked in the blueprint's request middleware, which runs before Sanic
completes the handshake, so a missing, forged or expired token gets a plain HTTP 401 and
never a connection (G6). Browsers cannot set headers on a WebSocket, so they may come with
a one-time ``ticket`` in the query instead (``POST /v1/ws-ticket``:
:mod:`burrow.storage.tickets`), or with the token itself as ``access_token``. (Not as a
``Sec-WebSocket-Protocol`` value: a
browser that offers a subprotocol fails unless the server selects one, and Sanic 25.12
refuses clients that offer none once a route lists subprotocols; one route cannot serve
both kinds of client.)
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Final

from prometheus_client import Counter
from pymongo.errors import PyMongoError
from sanic import Blueprint, Request, Websocket, response
from sanic.response import HTTPResponse
from websockets.exceptions import ConnectionClosed

from burrow.runtime import metrics
from burrow.storage.tickets import TicketStore
from gateway import protocol, streams, ws_conformance
from gateway.auth import AuthError, Claims
from gateway.connection import Connection
from gateway.frames_out import OUT
from gateway.http_json import problem
from gateway.limiting import Limits
from gateway.link import Unavailable
from gateway.node import Node
from gateway.protocol import ProtocolError

log = logging.getLogger(__name__)

FRAME_NAMES: dict[type, str] = {
    protocol.Subscribe: "subscribe", protocol.Unsubscribe: "unsubscribe",
    protocol.SendFrame: "send", protocol.Read: "read", protocol.Typing: "typing",
    protocol.Ping: "ping"}
# Children bound once: ``labels()`` looks its child up under a lock on every call.
FRAMES_IN: dict[type, Counter] = {
    kind: metrics.GATEWAY_FRAMES_IN.labels(name) for kind, name in FRAME_NAMES.items()}
FRAMES_INVALID = metrics.GATEWAY_FRAMES_IN.labels("invalid")
OUT_PONG, OUT_ERROR, OUT_UNSUBSCRIBED = OUT["pong"], OUT["error"], OUT["unsubscribed"]


# Where a browser cannot set a header (a WebSocket, an EventSource), the token may come in
# the query; elsewhere only in the header, so that it stays out of URLs (proxy logs,
# browser history, Referer) wherever a client has the choice.
QUERY_TOKEN_PATHS: Final = frozenset({"/v1/ws", "/v1/sse"})


def bearer_token(request: Request) -> str | None:
    """The token from ``Authorization: Bearer``, or ``?access_token=`` on
    :data:`QUERY_TOKEN_PATHS`; :exc:`AuthError` for a query token anywhere else."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    query_token: str | None = request.args.get("access_token")
    if query_token and request.path not in QUERY_TOKEN_PATHS:
        raise AuthError("missing", "send the token in the Authorization header: "
                        "?access_token= is only taken on /v1/ws and /v1/sse")
    return query_token or None


def query_ticket(request: Request) -> str | None:
    """The ``?ticket=`` of :data:`QUERY_TOKEN_PATHS`; :exc:`AuthError` for one next to a
    token (which of the two would it be?) or, without a header, on another path."""
    ticket: str | None = request.args.get("ticket")
    if ticket is None:
        return None
    has_token = bool(request.headers.get("authorization") or request.args.get("access_token"))
    if request.path not in QUERY_TOKEN_PATHS:
        if has_token:
            return None  # not a parameter of this route: the header decides
        raise AuthError("missing", "a ticket is only taken on /v1/ws and /v1/sse: send the "
                        "token in the Authorization header")
    if has_token:
        raise AuthError("malformed", "give a ticket or a token, not both")
    return ticket


async def redeem(tickets: TicketStore, ticket: str) -> Claims:
    """The claims a ticket carries, once; unknown, used and expired tickets alike are
    refused with one message, so that a refusal tells a guesser nothing."""
    found = await tickets.redeem(ticket)
    if found is None:
        raise AuthError("ticket", "ticket unknown, used or expired: get a new one")
    return Claims(user=found.user, roles=found.roles, expires_at=found.token_expires_at)


async def authenticate(request: Request) -> HTTPResponse | None:
    """Request middleware: put the token's (or the ticket's) claims on
    ``request.ctx.claims``, or answer 401 (503 if a ticket cannot be looked up)."""
    try:
        ticket = query_ticket(request)
        if ticket is None:
            request.ctx.claims = await request.app.ctx.verifier.verify(bearer_token(request))
        else:
            request.ctx.claims = await redeem(request.app.ctx.tickets, ticket)
    except PyMongoError as exc:
        log.warning("ticket not redeemed, the database failed: %s", exc)
        return problem(503, "unavailable", "the database is not reachable; retry")
    except AuthError as exc:
        metrics.GATEWAY_AUTH_FAILURES.labels(exc.reason).inc()
        return response.json({"error": {"code": "unauthorized", "reason": exc.reason,
                                        "message": exc.message}}, status=401,
                             headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return None


class SanicTransport:
    __slots__ = ("ws",)

    def __init__(self, ws: Websocket) -> None:
        self.ws = ws

    async def send(self, frame: str) -> None:
        await self.ws.send(frame)

    async def close(self, code: int, reason: str) -> None:
        # Not ws.close(): it awaits the socket, which a client that does not read never
        # drains. end_connection queues the close frame behind what is already sent and
        # lets Sanic's auto-closer finish the handshake or abort after its close timeout.
        self.ws.end_connection(code, reason)


def blueprint() -> Blueprint:
    ws_conformance.install()  # invalid UTF-8 fails the connection with 1007
    bp = Blueprint("ws", url_prefix="/v1")
    bp.on_request(authenticate)
    bp.on_request(streams.refuse_over_cap)
    bp.websocket("/ws")(serve)
    return bp


async def serve(request: Request, ws: Websocket) -> None:
    """Run one client: read frames until it leaves, its token expires, or we stop.

    The route's handler itself, and ``recv`` rather than ``async for``: an idle client
    waits here for hours, so every coroutine or generator suspended on its behalf is
    memory held per connection.
    """
    node: Node = request.app.ctx.node
    limits: Limits = request.app.ctx.limits
    claims: Claims = request.ctx.claims
    conn = Connection(uuid.uuid4().hex[:12], claims.user, claims.is_admin,
                      SanicTransport(ws), node.settings.client_buffer)
    try:
        async with streams.attached(request, conn, claims, "ws"):
            try:
                while True:
                    raw = await ws.recv()
                    if conn.close_code is not None:
                        break
                    if raw is None:  # without a timeout only a race in Sanic's assembler
                        continue
                    await handle(node, conn, raw, limits)
            except ConnectionClosed:
                pass
    except streams.TooManyConnections as exc:  # raced past the check before the upgrade
        await conn.transport.close(protocol.POLICY_VIOLATION, str(exc)[:120])


async def handle(node: Node, conn: Connection, raw: str | bytes, limits: Limits) -> None:
    """Act on one client frame; a bad frame gets an error frame, never a closed socket."""
    arrived = time.perf_counter()  # for burrow_gateway_ack_seconds
    frame: protocol.ClientFrame | None = None
    try:
        try:
            frame = protocol.parse(raw, node.settings.max_body_bytes)
        except ProtocolError:
            FRAMES_INVALID.inc()
            raise
        FRAMES_IN[type(frame)].inc()
        if not isinstance(frame, protocol.SendFrame):  # sends have limits of their own
            refused = await limits.frame(conn, FRAME_NAMES[type(frame)],
                                         getattr(frame, "room", None))
            if refused is not None:
                conn.push([refused])  # nothing done for it: no database, no broker
                OUT_ERROR.inc()
                return
        if not isinstance(frame, protocol.Ping):  # clients ping by themselves: not activity
            node.touch(conn)
        match frame:
            case protocol.Ping(ping_id):
                conn.push([protocol.pong(ping_id)])
                OUT_PONG.inc()
            case protocol.Subscribe(room, since, v):
                await node.subscribe(conn, room, since, v)
            case protocol.Unsubscribe(room):
                await node.unsubscribe(conn, room)
                conn.push([protocol.unsubscribed(room, "requested")])
                OUT_UNSUBSCRIBED.inc()
            case protocol.SendFrame():
                refused = await limits.send(conn, frame.client_id, frame.room)
                if refused is not None:
                    conn.push([refused])  # not stored: G7
                    OUT_ERROR.inc()
                    return
                await node.send(conn, frame, arrived)
            case protocol.Read(room, seq):
                await node.check_member(conn, room)
                await node.rooms.mark_read(room, conn.user, seq)
            case protocol.Typing(room):
                await node.typing(conn, room)
    except ProtocolError as exc:
        conn.push([exc.frame()])
        OUT_ERROR.inc()
    except Unavailable as exc:
        conn.push([_unavailable(str(exc), frame)])
        OUT_ERROR.inc()
    except PyMongoError as exc:
        log.warning("database error for %s: %s", conn.id, exc)
        conn.push([_unavailable("the database is not reachable; retry", frame)])
        OUT_ERROR.inc()


def _unavailable(message: str, frame: protocol.ClientFrame | None) -> str:
    """The error frame names the room and client_id of the frame it answers, so that the
    client knows which subscribe or send to retry."""
    return protocol.error("unavailable", message, room=getattr(frame, "room", None),
                          client_id=getattr(frame, "client_id", None))
