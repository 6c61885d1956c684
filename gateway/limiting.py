"""The gateway's rate limits (G7): per client IP on every ``/v1`` request, per connection
and per user on every message send, whatever the transport, and per connection on every
other frame (subscribe, unsubscribe, read, typing, ping: each costs a database read or
write or a broker call, so a flood of them must be refused before that work).

A refused send is not stored: the client gets an ``error`` frame (code ``rate_limited``,
``retry_after_ms``) on a WebSocket, or 429 with ``Retry-After`` over HTTP. A connection
that keeps sending into the limit (``BURROW_RATE_FLOOD`` refusals within its window) is
closed with 4429. The limits are checked before the JWT (per IP) and before the broker
(per send), so a flood costs the gateway little and never reaches the sequencer. How the
limits behave as token buckets: docs/rate-limits.md.
"""

from __future__ import annotations

import math
import weakref

from sanic import Request, response
from sanic.response import HTTPResponse

from burrow.mail.verification import address_key
from burrow.runtime import metrics
from burrow.runtime.ratelimit import (
    CONNECTION,
    FRAMES,
    IP,
    MEMBERS,
    USER,
    Decision,
    Flood,
    RateLimiter,
    Rule,
)
from burrow.runtime.settings import Settings
from gateway import protocol
from gateway.connection import Connection

# Verification mails go to an address a user typed: whoever the owner is, Burrow must not
# become a way to mail-bomb them. Constants, not settings: a legitimate user needs one
# mail, seldom two (docs/rate-limits.md).
VERIFY_USER, VERIFY_ADDRESS = "verify_user", "verify_address"
VERIFY_USER_RULE = Rule(5, 5 / 3600)  # per requesting user: 5 an hour
VERIFY_ADDRESS_RULE = Rule(3, 3 / 86400)  # per target mailbox, all users together: 3 a day
# Message reports (docs/moderation.md): each lands in the moderators' list and the
# backend's queue, so a user may file 10 at once, then one every 6 minutes.
REPORTS = "reports"
REPORTS_RULE = Rule(10, 10 / 3600)
# A room's slow mode (docs/moderation.md): one message per N s per member and room, N
# the room's own (an exact moving window of the limiter's storage, not a rule).
SLOW_MODE = "slow_mode"


class Limits:
    def __init__(self, settings: Settings) -> None:
        self.limiter = RateLimiter(settings.rate_storage, {
            CONNECTION: settings.rate_connection, USER: settings.rate_user,
            IP: settings.rate_ip, FRAMES: settings.rate_frames,
            MEMBERS: settings.rate_members,
            VERIFY_USER: VERIFY_USER_RULE, VERIFY_ADDRESS: VERIFY_ADDRESS_RULE,
            REPORTS: REPORTS_RULE})
        self.flood_rule = settings.rate_flood
        self.members_at_once = settings.rate_members.window_capacity
        self.floods: weakref.WeakKeyDictionary[Connection, Flood] = (
            weakref.WeakKeyDictionary())
        for scope in (CONNECTION, USER, IP, FRAMES, MEMBERS, VERIFY_USER, VERIFY_ADDRESS,
                      REPORTS, SLOW_MODE, "flood", "connections_user",
                      "connections_address"):  # exported at 0 from the start, so
            metrics.GATEWAY_RATE_LIMITED.labels(scope)  # rate() and alerts see a series

    async def request(self, request: Request) -> HTTPResponse | None:
        """Request middleware: 429 for a client IP over its limit (``/v1`` only)."""
        if not request.path.startswith("/v1/"):
            return None  # probes and metrics are for the platform, not for clients
        decision = await self.limiter.hit(IP, request.remote_addr or request.ip)
        if decision.allowed:
            return None
        metrics.GATEWAY_RATE_LIMITED.labels(IP).inc()
        return too_many(decision, "requests from this address")

    async def send(self, conn: Connection, client_id: str | None = None,
                   room: str | None = None) -> str | None:
        """None if *conn* may send now; else the error frame (and maybe a 4429 close)."""
        decision = await self.limiter.hit_all([(CONNECTION, conn.id), (USER, conn.user)])
        if decision.allowed:
            return None
        metrics.GATEWAY_RATE_LIMITED.labels(decision.kind or USER).inc()
        self._refused(conn)
        return protocol.error("rate_limited", f"too many messages ({decision.kind} limit); "
                              "not stored: retry later with the same client_id",
                              client_id=client_id, room=room,
                              retry_after_ms=decision.retry_after_ms)

    async def frame(self, conn: Connection, kind: str, room: str | None = None) -> str | None:
        """None if *conn* may send a *kind* frame (not a send) now; else the error frame."""
        decision = await self.limiter.hit(FRAMES, conn.id)
        if decision.allowed:
            return None
        metrics.GATEWAY_RATE_LIMITED.labels(FRAMES).inc()
        self._refused(conn)
        return protocol.error("rate_limited", f"too many frames on this connection; {kind} "
                              "not done: retry later", room=room,
                              retry_after_ms=decision.retry_after_ms)

    async def slow_mode(self, conn: Connection, room: str, seconds: int) -> Decision:
        """Whether *conn*'s user may send a message to *room* now under its slow mode of
        *seconds*; a refusal counts towards the flood close."""
        decision = await self.limiter.once_per(SLOW_MODE, slow_mode_key(room, conn.user),
                                               seconds)
        if not decision.allowed:
            metrics.GATEWAY_RATE_LIMITED.labels(SLOW_MODE).inc()
            self._refused(conn)
        return decision

    async def slow_mode_back(self, conn: Connection, room: str, seconds: int) -> None:
        """Give back a slow-mode slot whose message was not published after all."""
        await self.limiter.give_back(SLOW_MODE, slow_mode_key(room, conn.user), seconds)

    def refused(self, conn: Connection) -> None:
        """A send of *conn* was refused (a limit, a mute, a lock): count it towards the
        flood close, like every refusal a client keeps pushing into."""
        self._refused(conn)

    def _refused(self, conn: Connection) -> None:
        """Count a refusal; a connection that keeps pushing into its limits is closed."""
        flood = self.floods.get(conn)
        if flood is None:
            flood = self.floods[conn] = Flood(self.flood_rule)
        if flood.rejected():
            metrics.GATEWAY_RATE_LIMITED.labels("flood").inc()
            conn.close(protocol.FLOODING, "too many frames: slow down, then reconnect")

    async def http_send(self, user: str) -> HTTPResponse | None:
        decision = await self.limiter.hit(USER, user)
        if decision.allowed:
            return None
        metrics.GATEWAY_RATE_LIMITED.labels(USER).inc()
        return too_many(decision, "messages from this user")

    async def members(self, user: str, count: int) -> HTTPResponse | None:
        """429 if *user* may not add *count* members to rooms now (spam, presence
        amplification: anyone may add anyone to a room); None if they may."""
        # A room created with more members than the whole burst takes the whole burst.
        decision = await self.limiter.hit(MEMBERS, user, cost=min(count, self.members_at_once))
        if decision.allowed:
            return None
        metrics.GATEWAY_RATE_LIMITED.labels(MEMBERS).inc()
        return too_many(decision, "members added to rooms by this user")

    async def reports(self, user: str) -> HTTPResponse | None:
        """429 if *user* has filed too many message reports lately; None if they may."""
        decision = await self.limiter.hit(REPORTS, user)
        if decision.allowed:
            return None
        metrics.GATEWAY_RATE_LIMITED.labels(REPORTS).inc()
        return too_many(decision, "reports from this user")

    async def verification(self, user: str, address: str) -> HTTPResponse | None:
        """429 if a verification mail from *user* to *address* would be one too many;
        None (and both counted) if it may go."""
        decision = await self.limiter.hit_all([(VERIFY_USER, user),
                                               (VERIFY_ADDRESS, address_key(address))])
        if decision.allowed:
            return None
        metrics.GATEWAY_RATE_LIMITED.labels(decision.kind or VERIFY_USER).inc()
        what = ("verification emails to this address" if decision.kind == VERIFY_ADDRESS
                else "verification emails from this user")
        return too_many(decision, what)

    async def close(self) -> None:
        await self.limiter.close()


def slow_mode_key(room: str, user: str) -> str:
    """The bucket of *user* in *room* (a room id has no ``/``, so no two pairs meet)."""
    return f"{room}/{user}"


def too_many(decision: Decision, what: str) -> HTTPResponse:
    return response.json(
        {"error": {"code": "rate_limited", "message": f"too many {what}; retry later",
                   "retry_after_ms": decision.retry_after_ms}},
        status=429, headers={"Retry-After": str(max(1, math.ceil(
            decision.retry_after_ms / 1000)))})
