"""Which users are connected, and whether they are active, across every gateway.

One document per open connection in ``presence``: the gateway writes it on connect,
refreshes ``seen_at`` for all its connections with one heartbeat write, moves
``active_at`` when the client does something (a send, a read, a subscribe: not a ping,
which client libraries send by themselves), and deletes it on close. A gateway killed
with ``kill -9`` deletes nothing: its documents stop counting once ``seen_at`` is older
than the TTL, and a TTL index removes them later (readers never rely on that index).

The notifier asks :meth:`PresenceStore.is_active` before it pushes: a user who is
connected *and* active does not get a push; one who is offline, or connected but idle
(an idle desktop), does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

Database = AsyncDatabase[dict[str, Any]]


class PresenceStore:
    def __init__(self, db: Database, ttl: float) -> None:
        self.presence = db["presence"]
        self.ttl = timedelta(seconds=ttl)

    async def ensure_indexes(self) -> None:
        await self.presence.create_index([("user", ASCENDING)], name="user")
        await self.presence.create_index([("gateway", ASCENDING)], name="gateway")
        # Cleanup only: queries filter on seen_at themselves.
        await self.presence.create_index([("seen_at", ASCENDING)], name="seen_at_ttl",
                                         expireAfterSeconds=int(self.ttl.total_seconds()) * 2)

    async def connected(self, conn_id: str, user: str, gateway: str) -> None:
        now = datetime.now(UTC)
        await self.presence.replace_one(
            {"_id": conn_id},
            {"user": user, "gateway": gateway, "seen_at": now, "active_at": now}, upsert=True)

    async def active(self, conn_id: str) -> None:
        now = datetime.now(UTC)
        await self.presence.update_one({"_id": conn_id},
                                       {"$set": {"active_at": now, "seen_at": now}})

    async def heartbeat(self, gateway: str) -> None:
        await self.presence.update_many({"gateway": gateway},
                                        {"$set": {"seen_at": datetime.now(UTC)}})

    async def disconnected(self, conn_id: str) -> None:
        await self.presence.delete_one({"_id": conn_id})

    async def is_online(self, user: str) -> bool:
        return await self.presence.count_documents(
            {"user": user, "seen_at": {"$gt": datetime.now(UTC) - self.ttl}}, limit=1) > 0

    async def is_active(self, user: str, idle_after: float) -> bool:
        """Connected (a live gateway vouches for it) and did something in *idle_after* s."""
        now = datetime.now(UTC)
        return await self.presence.count_documents(
            {"user": user, "seen_at": {"$gt": now - self.ttl},
             "active_at": {"$gt": now - timedelta(seconds=idle_after)}}, limit=1) > 0
