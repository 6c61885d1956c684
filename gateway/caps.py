"""How many connections one user, and one client address, may hold open on a gateway.

Rate limits bound how fast connections are opened; these bound how many stay open, so
that one token (or one address) cannot hold a gateway's memory and file descriptors
with thousands of idle sockets. Counted per gateway worker process (each Sanic worker
holds its own connections): a deployment with W workers lets a user hold up to W times
``BURROW_MAX_CONNECTIONS_USER`` in all, which is still a bound. I/O-free: the transports
ask :meth:`ConnectionCaps.admit` when a connection starts and :meth:`release` when it
ends.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

Refusal = Literal["user", "address"]


class ConnectionCaps:
    def __init__(self, per_user: int, per_address: int) -> None:
        self.per_user, self.per_address = per_user, per_address
        self.users: Counter[str] = Counter()
        self.addresses: Counter[str] = Counter()

    def full(self, user: str, address: str) -> Refusal | None:
        """Which cap one more connection would exceed, if any (nothing is counted)."""
        if self.users[user] >= self.per_user:
            return "user"
        if self.addresses[address] >= self.per_address:
            return "address"
        return None

    def admit(self, user: str, address: str) -> Refusal | None:
        """Count a new connection, or say which cap refuses it (nothing counted then)."""
        refused = self.full(user, address)
        if refused is None:
            self.users[user] += 1
            self.addresses[address] += 1
        return refused

    def release(self, user: str, address: str) -> None:
        for counts, key in ((self.users, user), (self.addresses, address)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]
