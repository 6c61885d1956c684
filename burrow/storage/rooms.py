"""Rooms and memberships in MongoDB (``rooms``, ``memberships``).

A membership holds the member's role (``owner``, ``moderator`` or ``member``), read
pointer and, while muted, ``muted_until``. Only members may subscribe to, send to and
read a room (G6); the gateway asks here. A room's moderation settings live on its room
document: ``slow_mode_s`` and ``locked`` (docs/moderation.md).

A moderation action's state write also records the action's audit id (``mod_id``) on
the document it changes, so that a retry of the same request after a failure between
that write and the audit record (burrow.storage.moderation) knows it is a retry and not
a second action (gateway/moderation_api.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Database = AsyncDatabase[dict[str, Any]]
OWNER = "owner"
MODERATOR = "moderator"
MEMBER = "member"
ROLES = (OWNER, MODERATOR, MEMBER)


class RoomStore:
    def __init__(self, db: Database) -> None:
        self.rooms = db["rooms"]
        self.memberships = db["memberships"]

    async def ensure_indexes(self) -> None:
        await self.memberships.create_index([("room", ASCENDING), ("user", ASCENDING)],
                                            unique=True, name="room_user")
        await self.memberships.create_index([("user", ASCENDING), ("room", ASCENDING)],
                                            name="user_room")

    async def create(self, room: str, name: str, owner: str, members: Iterable[str]) -> bool:
        """Create *room* owned by *owner*; False if a room of that id exists already."""
        now = datetime.now(UTC)
        try:
            await self.rooms.insert_one({"_id": room, "name": name, "created_by": owner,
                                         "created_at": now})
        except DuplicateKeyError:
            return False
        await self.add(room, owner, OWNER)
        for member in set(members) - {owner}:
            await self.add(room, member, MEMBER)
        return True

    async def exists(self, room: str) -> bool:
        return await self.rooms.count_documents({"_id": room}, limit=1) > 0

    async def role(self, room: str, user: str) -> str | None:
        """The user's role in the room, None if not a member (or no such room)."""
        doc = await self.memberships.find_one({"room": room, "user": user}, {"role": 1})
        return None if doc is None else str(doc["role"])

    async def standing(self, room: str, user: str, with_room: bool = True
                       ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """What the gateway enforces a send with (burrow/core/send_rules.py): the
        membership's ``role``/``muted_until`` and, *with_room*, the room's
        ``slow_mode_s``/``locked`` (else None); None if not a member. One read each."""
        doc = await self.memberships.find_one({"room": room, "user": user},
                                              {"_id": 0, "role": 1, "muted_until": 1})
        if doc is None or not with_room:
            return None if doc is None else (doc, None)
        settings = await self.rooms.find_one({"_id": room},
                                             {"_id": 0, "slow_mode_s": 1, "locked": 1})
        return doc, settings or {}

    async def add(self, room: str, user: str, role: str = MEMBER) -> bool:
        """Make *user* a member; True if they were not one before. Keeps an existing role."""
        result = await self.memberships.update_one(
            {"room": room, "user": user},
            {"$setOnInsert": {"role": role, "read_seq": 0, "joined_at": datetime.now(UTC)}},
            upsert=True)
        return result.upserted_id is not None

    async def remove(self, room: str, user: str) -> bool:
        result = await self.memberships.delete_one({"room": room, "user": user})
        return result.deleted_count == 1

    async def has_others(self, room: str, user: str) -> bool:
        """Whether *room* has a member other than *user* (at most two index entries read)."""
        return await self.memberships.count_documents({"room": room}, limit=2) > (
            1 if await self.role(room, user) is not None else 0)

    async def rooms_of(self, user: str) -> list[dict[str, Any]]:
        """The user's rooms: id, name, role and read pointer, by room id."""
        memberships = [m async for m in self.memberships.find({"user": user}).sort("room")]
        names = {r["_id"]: r.get("name", "") async for r in
                 self.rooms.find({"_id": {"$in": [m["room"] for m in memberships]}})}
        return [{"id": m["room"], "name": names.get(m["room"], ""), "role": m["role"],
                 "read_seq": m.get("read_seq", 0)} for m in memberships]

    async def room_ids(self, user: str) -> list[str]:
        """Just the ids of the user's rooms (from the user_room index alone)."""
        return [str(m["room"]) async for m in
                self.memberships.find({"user": user}, {"_id": 0, "room": 1})]

    async def members(self, room: str) -> list[dict[str, Any]]:
        return [{"user": m["user"], "role": m["role"], "read_seq": m.get("read_seq", 0)}
                async for m in self.memberships.find({"room": room}).sort("user")]

    async def members_among(self, rooms: Iterable[str],
                            users: Iterable[str] | None) -> dict[str, set[str]]:
        """room -> its members among *users* (every member when None), for the mention
        checks of a sequencer batch: one query for all its rooms (room_user index)."""
        query: dict[str, Any] = {"room": {"$in": sorted(set(rooms))}}
        if users is not None:
            query["user"] = {"$in": sorted(set(users))}
        found: dict[str, set[str]] = {}
        async for m in self.memberships.find(query, {"room": 1, "user": 1, "_id": 0}):
            found.setdefault(m["room"], set()).add(m["user"])
        return found

    async def membership(self, room: str, user: str) -> dict[str, Any] | None:
        """The user's membership document (role, muted_until, mod_id, ...), or None."""
        return await self.memberships.find_one({"room": room, "user": user})

    async def room(self, room: str) -> dict[str, Any] | None:
        """The room document (name, slow_mode_s, locked, mod_id, ...), or None."""
        return await self.rooms.find_one({"_id": room})

    async def owner(self, room: str) -> str | None:
        doc = await self.memberships.find_one({"room": room, "role": OWNER}, {"user": 1})
        return None if doc is None else str(doc["user"])

    async def carries(self, room: str, mod_id: str) -> bool:
        """Whether a membership of *room* carries moderation action *mod_id*: the state
        write of that action began (a transfer that stopped between its two writes)."""
        return await self.memberships.count_documents({"room": room, "mod_id": mod_id},
                                                      limit=1) > 0

    async def set_role(self, room: str, user: str, role: str, mod_id: str,
                       only_from: str | None = None) -> bool:
        """Give member *user* *role*; with *only_from*, only if their role is that now
        (the conditional update that lets one of two concurrent transfers win). True if
        a membership matched."""
        query: dict[str, Any] = {"room": room, "user": user}
        if only_from is not None:
            query["role"] = only_from
        result = await self.memberships.update_one(
            query, {"$set": {"role": role, "mod_id": mod_id}})
        return result.matched_count == 1

    async def mute(self, room: str, user: str, until: datetime | None, mod_id: str) -> bool:
        """Mute member *user* until *until* (None: unmute). True if a membership matched."""
        change: dict[str, Any] = ({"$set": {"muted_until": until, "mod_id": mod_id}}
                                  if until is not None else
                                  {"$set": {"mod_id": mod_id}, "$unset": {"muted_until": ""}})
        result = await self.memberships.update_one({"room": room, "user": user}, change)
        return result.matched_count == 1

    async def configure(self, room: str, mod_id: str, **settings: Any) -> None:
        """Set the room's moderation settings (``slow_mode_s``, ``locked``)."""
        await self.rooms.update_one({"_id": room}, {"$set": {**settings, "mod_id": mod_id}})

    async def mark_read(self, room: str, user: str, seq: int) -> None:
        """Move the read pointer forward only: a late, smaller ``read`` changes nothing."""
        await self.memberships.update_one({"room": room, "user": user},
                                          {"$max": {"read_seq": seq}})
