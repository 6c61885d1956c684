"""Invitations to rooms (``invitations``), for ``BURROW_INVITES=strangers|all``.

``{_id, room, user, by, at, state}``: *by* asked for *user* to join *room* at *at*;
``state`` is ``pending`` until the invitee accepts (``accepted``: kept, so a repeated
accept answers the same without adding them again, after a removal say). A decline
deletes it. One invitation per (room, user) (unique index ``room_user``): inviting again
while one is pending answers that one. An invitation lives :data:`INVITE_TTL` (14 days)
from *at*: the TTL index removes it some time after, and every read checks the age
itself (docs/database.md: Burrow never relies on when a TTL index deletes).

Ids are 32 random hex digits: one invitee's id says nothing about another's, and an id
names its invitee's invitation only (every read is by id *and* invitee, so a stranger's
guess is a 404 like an id that does not exist).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from burrow.storage.database import pages, utc

Database = AsyncDatabase[dict[str, Any]]

INVITE_TTL: Final = timedelta(days=14)
PENDING, ACCEPTED = "pending", "accepted"
MAX_LISTED: Final = 500  # a user's pending invitations answered at once (newest first)


def new_id() -> str:
    return os.urandom(16).hex()


def is_invite_id(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 32
            and all(c in "0123456789abcdef" for c in value))


def _ms(value: datetime) -> int:
    return int(utc(value).timestamp() * 1000)


class InviteStore:
    def __init__(self, db: Database) -> None:
        self.invitations = db["invitations"]
        self.memberships = db["memberships"]
        self.rooms = db["rooms"]

    async def ensure_indexes(self) -> None:
        await self.invitations.create_index([("room", ASCENDING), ("user", ASCENDING)],
                                            unique=True, name="room_user")
        await self.invitations.create_index([("user", ASCENDING), ("at", ASCENDING)],
                                            name="user_at")
        await self.invitations.create_index(
            [("at", ASCENDING)], name="at_ttl",
            expireAfterSeconds=int(INVITE_TTL.total_seconds()))

    async def strangers(self, adder: str, users: Collection[str]) -> set[str]:
        """Those of *users* who share no room with *adder*: one read of *adder*'s rooms
        (the user_room index), then one per page of users of their memberships among
        those rooms."""
        mine = sorted({m["room"] async for m in self.memberships.find(
            {"user": adder}, {"room": 1, "_id": 0})})
        shared: set[str] = set()
        if mine:
            for page in pages(users):
                shared |= {m["user"] async for m in self.memberships.find(
                    {"user": {"$in": page}, "room": {"$in": mine}}, {"user": 1, "_id": 0})}
        return set(users) - shared

    async def invite(self, room: str, user: str, by: str) -> str:
        """The id of *user*'s pending invitation to *room*: a new one by *by*, or the
        one already pending (a repeated add answers the same). An accepted or expired
        one is replaced."""
        now = datetime.now(UTC)
        await self.invitations.delete_one({"room": room, "user": user,
                                           "state": {"$ne": PENDING}})
        await self.invitations.delete_one({"room": room, "user": user,
                                           "at": {"$lt": now - INVITE_TTL}})
        try:
            await self.invitations.update_one(
                {"room": room, "user": user},
                {"$setOnInsert": {"_id": new_id(), "by": by, "at": now, "state": PENDING}},
                upsert=True)
        except DuplicateKeyError:
            pass  # a racing add inserted it: read theirs
        doc = await self.invitations.find_one({"room": room, "user": user}, {"_id": 1})
        assert doc is not None  # nothing deletes a fresh pending invitation but its invitee
        return str(doc["_id"])

    async def pending(self, user: str) -> list[dict[str, Any]]:
        """*user*'s pending invitations, newest first, with who invited them and the
        room's name (``[{id, room, name, by, at, expires_at}]``; times in ms)."""
        cutoff = datetime.now(UTC) - INVITE_TTL
        docs = [d async for d in self.invitations.find(
            {"user": user, "at": {"$gte": cutoff}}).sort("at", ASCENDING)
            if d.get("state") == PENDING]
        docs = docs[::-1][:MAX_LISTED]
        names = {r["_id"]: r.get("name", "") async for r in self.rooms.find(
            {"_id": {"$in": sorted({d["room"] for d in docs})}}, {"name": 1})}
        return [{"id": d["_id"], "room": d["room"], "name": names.get(d["room"], ""),
                 "by": d["by"], "at": _ms(d["at"]), "expires_at": _ms(d["at"] + INVITE_TTL)}
                for d in docs if d["room"] in names]

    async def get(self, invite_id: str, user: str) -> dict[str, Any] | None:
        """*user*'s invitation *invite_id*, pending or accepted; None if there is none
        of theirs by that id, or it expired."""
        doc = await self.invitations.find_one({"_id": invite_id})
        if doc is None or doc.get("user") != user:
            return None
        if utc(doc["at"]) < datetime.now(UTC) - INVITE_TTL:
            return None
        return doc

    async def mark_accepted(self, invite_id: str) -> None:
        await self.invitations.update_one({"_id": invite_id},
                                          {"$set": {"state": ACCEPTED}})

    async def decline(self, invite_id: str, user: str) -> bool:
        """Delete *user*'s pending invitation *invite_id*; False if there is none."""
        result = await self.invitations.delete_one({"_id": invite_id, "user": user,
                                                    "state": PENDING})
        return result.deleted_count == 1

    async def forget_room_user(self, room: str, user: str) -> None:
        """*user* became a member of *room* some other way: no invitation is left pending."""
        await self.invitations.delete_one({"room": room, "user": user, "state": PENDING})
