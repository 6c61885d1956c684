"""One-time tickets for the browser transports (``ws_tickets``), shared by every gateway.

A browser cannot put a header on a WebSocket or an ``EventSource``, and a JWT in a URL
ends up in proxy logs and browser history. So a browser trades its token (in a header)
for a ticket, ``POST /v1/ws-ticket``, and opens ``/v1/ws?ticket=`` or
``/v1/sse?ticket=`` with it: a random string that is worth one connection within a few
seconds, and nothing once used.

Why it is kept like this:

* **In the database**, not in a gateway's memory: gateways sit behind a load balancer,
  and the connection may reach another one than the ticket request did.
* **Under a hash**: ``_id`` is the SHA-256 of the ticket. Someone who reads the
  collection (a backup, an operator's query) learns nothing that opens a connection.
  A plain hash is enough: the ticket is 256 random bits, not a password to guess.
* **With the token's claims**: the user, the roles (admins), and the token's own
  ``exp``, so the connection is closed (4401) when the token would have expired, and a
  ticket never outlives the token it came from.
* **Used once, even under a race**: redemption is one ``find_one_and_delete``; of two
  gateways redeeming the same ticket at once, exactly one gets the document.
* **Expiry checked on use**: the TTL index only cleans up (mongod's TTL monitor runs
  once a minute), so a ticket past ``expires_at`` is refused whether or not it is gone.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from burrow.storage.database import utc

Database = AsyncDatabase[dict[str, Any]]
Clock = Callable[[], float]
TICKET_BYTES: Final = 32
MIN_VALIDITY: Final = 1.0
SHAPE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
"""What ``secrets.token_urlsafe(32)`` gives: anything else is refused unread."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a redeemed ticket stands for: the claims of the token that asked for it."""

    user: str
    roles: frozenset[str]
    token_expires_at: float
    """The token's ``exp`` (epoch seconds): the connection ends then."""


class TicketStore:
    def __init__(self, db: Database, clock: Clock = time.time) -> None:
        self.tickets = db["ws_tickets"]
        self.clock = clock

    async def ensure_indexes(self) -> None:
        await self.tickets.create_index([("expires_at", ASCENDING)], name="expires_at_ttl",
                                        expireAfterSeconds=0)

    async def issue(self, user: str, roles: Collection[str], token_expires_at: float,
                    ttl: float) -> tuple[str, float]:
        """A new ticket for *user* and the seconds it is valid: *ttl*, or less when the
        token expires sooner. ``("", 0)`` when the token has less than
        :data:`MIN_VALIDITY` left: nothing is stored then."""
        now = self.clock()
        expires_at = min(now + ttl, token_expires_at)
        if expires_at - now < MIN_VALIDITY:
            return "", 0.0
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        await self.tickets.insert_one({
            "_id": digest(ticket), "user": user, "roles": sorted(roles),
            "token_exp": token_expires_at,
            "expires_at": datetime.fromtimestamp(expires_at, UTC),
            "issued_at": datetime.fromtimestamp(now, UTC)})
        return ticket, expires_at - now

    async def redeem(self, ticket: str) -> Ticket | None:
        """The ticket's claims, once: None for a ticket that is malformed, unknown,
        used already or expired (the caller need not say which)."""
        if not SHAPE.fullmatch(ticket):
            return None  # no database round trip for what can never be a ticket
        doc = await self.tickets.find_one_and_delete({"_id": digest(ticket)})
        if doc is None or utc(doc["expires_at"]).timestamp() <= self.clock():
            return None
        return Ticket(user=doc["user"], roles=frozenset(doc["roles"]),
                      token_expires_at=float(doc["token_exp"]))


def digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("ascii")).hexdigest()
