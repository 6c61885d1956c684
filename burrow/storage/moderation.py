"""Bans and the moderation audit in MongoDB (``room_bans``, ``moderation_audit``).

A ban is one document per (room, user): a banned user cannot be added to the room
again until an ``unban`` deletes it. The audit keeps one record per moderation action
``{_id, room, action, user, by, reason, seconds, until, at, seq}``, whose id is derived
from (room, actor, Idempotency-Key) (:func:`audit_id`), so the retry of a request finds
its record instead of writing a second one; ``seq`` is the room event's, set once it is
sequenced (absent until then: the action is not complete yet). docs/moderation.md.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Database = AsyncDatabase[dict[str, Any]]


def audit_id(room: str, actor: str, key: str) -> str:
    """The audit record's id of one request: the same for every retry of it."""
    raw = f"burrow-moderation\0{room}\0{actor}\0{key}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def is_audit_id(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 32
            and all(c in "0123456789abcdef" for c in value))


class ModerationStore:
    def __init__(self, db: Database) -> None:
        self.bans = db["room_bans"]
        self.audit = db["moderation_audit"]

    async def ensure_indexes(self) -> None:
        # One ban per (room, user): a repeated ban finds the first.
        await self.bans.create_index([("room", ASCENDING), ("user", ASCENDING)],
                                     unique=True, name="room_user")
        # A room's audit, newest first, paged by (at, _id).
        await self.audit.create_index(
            [("room", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)], name="room_at")

    # -- bans ------------------------------------------------------------------------

    async def ban(self, room: str, user: str, by: str, reason: str, mod_id: str) -> None:
        """Record the ban (idempotent: a second ban of the same user changes nothing)."""
        await self.bans.update_one(
            {"room": room, "user": user},
            {"$setOnInsert": {"by": by, "reason": reason, "at": datetime.now(UTC),
                              "mod_id": mod_id}}, upsert=True)

    async def unban(self, room: str, user: str) -> bool:
        result = await self.bans.delete_one({"room": room, "user": user})
        return result.deleted_count == 1

    async def banned(self, room: str, user: str) -> dict[str, Any] | None:
        return await self.bans.find_one({"room": room, "user": user})

    async def bans_of(self, room: str) -> list[dict[str, Any]]:
        return [doc async for doc in self.bans.find({"room": room}).sort("user")]

    # -- the audit -------------------------------------------------------------------

    async def record(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Insert audit record *doc* once; returns the stored record (the first one,
        should a retry have inserted it already)."""
        try:
            await self.audit.insert_one(doc)
            return doc
        except DuplicateKeyError:
            found = await self.audit.find_one({"_id": doc["_id"]})
            if found is None:  # cannot happen: the _id clashed on it
                raise
            return found

    async def get(self, audit: str) -> dict[str, Any] | None:
        return await self.audit.find_one({"_id": audit})

    async def sequenced(self, audit: str, seq: int) -> None:
        """The room event of *audit* is stored at *seq*: the action is complete."""
        await self.audit.update_one({"_id": audit}, {"$set": {"seq": seq}})

    async def history(self, room: str, before: dict[str, Any] | None,
                      limit: int) -> list[dict[str, Any]]:
        """A room's audit records, newest first, after (older than) record *before*."""
        query: dict[str, Any] = {"room": room}
        if before is not None:
            query["$or"] = [{"at": {"$lt": before["at"]}},
                            {"at": before["at"], "_id": {"$lt": before["_id"]}}]
        cursor = self.audit.find(query).sort([("at", DESCENDING), ("_id", DESCENDING)])
        return [doc async for doc in cursor.limit(limit)]
