"""What the notifier and the digester remember, so that every job is idempotent.

- ``memberships.push_pending_at``: a push job for (room, member) is waiting in its delay
  tier; later messages of the room ride along instead of scheduling another (collapse).
- ``memberships.pushed_seq`` / ``emailed_seq``: the newest message a member was pushed
  or emailed about; nothing at or below is notified again.
- ``users.digest_pending_at`` / ``last_digest_at``: a digest job waits; at most one
  digest per period.
- ``push_log``: one record per (notification, device) once the provider confirmed it, so
  a redelivered job skips the devices already served.
- ``digest_log``: one record per digest or email job once the SMTP server took it.

A pending flag older than its stale bound counts as absent: if its job was lost (a queue
deleted by hand), the next message schedules a new one instead of waiting forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from burrow.envelopes import Stored

Database = AsyncDatabase[dict[str, Any]]
LOG_KEPT = timedelta(days=7)


@dataclass(frozen=True)
class Unread:
    count: int
    latest: Stored
    senders: tuple[str, ...]  # distinct, newest first


def _absent_or_before(field: str, bound: datetime) -> dict[str, Any]:
    return {"$or": [{field: {"$exists": False}}, {field: None}, {field: {"$lt": bound}}]}


class NotifyStore:
    def __init__(self, db: Database) -> None:
        self.memberships = db["memberships"]
        self.messages = db["messages"]
        self.users = db["users"]
        self.rooms = db["rooms"]
        self.push_log = db["push_log"]
        self.digest_log = db["digest_log"]

    async def ensure_indexes(self) -> None:
        for log in (self.push_log, self.digest_log):
            await log.create_index([("at", ASCENDING)], name="at_ttl",
                                   expireAfterSeconds=int(LOG_KEPT.total_seconds()))

    # -- pushes ----------------------------------------------------------------------

    async def unread_members(self, room: str, sender: str, seq: int) -> list[str]:
        """Members other than the sender who have not read *seq*."""
        query = {"room": room, "user": {"$ne": sender}, "read_seq": {"$lt": seq}}
        return [m["user"] async for m in self.memberships.find(query, {"user": 1})]

    async def claim_push(self, room: str, users: list[str], seq: int,
                         stale: timedelta) -> list[str]:
        """Mark a push waiting for those of *users* with none waiting; returns the ones
        that message *seq* claimed (also when it claimed them before: a redelivery)."""
        if not users:
            return []
        now = datetime.now(UTC)
        await self.memberships.update_many(
            {"room": room, "user": {"$in": users}, **_absent_or_before("push_pending_at",
                                                                       now - stale)},
            {"$set": {"push_pending_at": now, "push_claim": seq}})
        return [m["user"] async for m in self.memberships.find(
            {"room": room, "user": {"$in": users}, "push_claim": seq}, {"user": 1})]

    async def clear_push(self, room: str, user: str) -> None:
        await self.memberships.update_one({"room": room, "user": user},
                                          {"$unset": {"push_pending_at": "", "push_claim": ""}})

    async def unread_for_push(self, room: str, user: str) -> Unread | None:
        """Messages from others after what *user* read or was pushed; None if none."""
        membership = await self.memberships.find_one({"room": room, "user": user})
        if membership is None:
            return None
        since = max(membership.get("read_seq", 0), membership.get("pushed_seq", 0))
        return await self._unread(room, user, since)

    async def _unread(self, room: str, user: str, since: int, limit: int = 0) -> Unread | None:
        query = {"room": room, "seq": {"$gt": since}, "sender": {"$ne": user}}
        count = await self.messages.count_documents(query)
        if count == 0:
            return None
        recent = [Stored.from_document(d) async for d in
                  self.messages.find(query).sort("seq", DESCENDING).limit(max(limit, 5))]
        senders = tuple(dict.fromkeys(m.sender for m in recent))
        return Unread(count, recent[0], senders)

    async def mark_pushed(self, room: str, user: str, seq: int) -> None:
        await self.memberships.update_one({"room": room, "user": user},
                                          {"$max": {"pushed_seq": seq}})

    async def pushed(self, notification_id: str, device_ids: list[str]) -> set[str]:
        """The devices among *device_ids* that already got this notification."""
        keys = [f"{notification_id}|{d}" for d in device_ids]
        return {d["device"] async for d in self.push_log.find({"_id": {"$in": keys}})}

    async def record_pushed(self, notification_id: str, device_id: str) -> None:
        try:
            await self.push_log.insert_one({"_id": f"{notification_id}|{device_id}",
                                            "device": device_id, "at": datetime.now(UTC)})
        except DuplicateKeyError:
            pass

    async def room_name(self, room: str) -> str:
        doc = await self.rooms.find_one({"_id": room}, {"name": 1})
        return str(doc.get("name") or room) if doc else room

    # -- digests ---------------------------------------------------------------------

    async def claim_digest(self, users: list[str], key: str,
                           stale: timedelta) -> dict[str, str]:
        """Mark a digest waiting for those of *users* who have an email, digests on and
        none waiting; returns user -> setting of those *key* claimed (now or before)."""
        now = datetime.now(UTC)
        wanted = {"_id": {"$in": users}, "email": {"$type": "string"},
                  "digest": {"$ne": "off"}}
        await self.users.update_many(
            {**wanted, **_absent_or_before("digest_pending_at", now - stale)},
            {"$set": {"digest_pending_at": now, "digest_claim": key}})
        return {u["_id"]: u.get("digest", "daily") async for u in
                self.users.find({**wanted, "digest_claim": key}, {"digest": 1})}

    async def delay_digest(self, user: str) -> None:
        """The digest job goes back to its delay tier: keep it marked as waiting."""
        await self.users.update_one({"_id": user},
                                    {"$set": {"digest_pending_at": datetime.now(UTC)}})

    async def clear_digest(self, user: str) -> None:
        await self.users.update_one({"_id": user},
                                    {"$unset": {"digest_pending_at": "", "digest_claim": ""}})

    async def last_digest_at(self, user: str) -> datetime | None:
        doc = await self.users.find_one({"_id": user}, {"last_digest_at": 1})
        at = None if doc is None else doc.get("last_digest_at")
        return at.replace(tzinfo=UTC) if isinstance(at, datetime) and at.tzinfo is None else at

    async def unread_for_digest(self, user: str, per_room: int) -> list[tuple[str, int, list[Stored]]]:
        """Per room: unread messages not already pushed or emailed (count, oldest first)."""
        found = []
        async for membership in self.memberships.find({"user": user}).sort("room"):
            room = membership["room"]
            since = max(membership.get("read_seq", 0), membership.get("pushed_seq", 0),
                        membership.get("emailed_seq", 0))
            query = {"room": room, "seq": {"$gt": since}, "sender": {"$ne": user}}
            count = await self.messages.count_documents(query)
            if count:
                newest = [Stored.from_document(d) async for d in
                          self.messages.find(query).sort("seq", DESCENDING).limit(per_room)]
                found.append((room, count, newest[::-1]))
        return found

    async def digest_done(self, job_id: str) -> bool:
        return await self.digest_log.count_documents({"_id": job_id}, limit=1) > 0

    async def record_email(self, job_id: str) -> None:
        try:
            await self.digest_log.insert_one({"_id": job_id, "at": datetime.now(UTC)})
        except DuplicateKeyError:
            pass

    async def record_digest(self, job_id: str, user: str, emailed: dict[str, int]) -> None:
        """The digest went out: remember the job, the time and what it covered."""
        now = datetime.now(UTC)
        try:
            await self.digest_log.insert_one({"_id": job_id, "user": user, "at": now})
        except DuplicateKeyError:
            pass
        await self.users.update_one({"_id": user}, {"$max": {"last_digest_at": now}})
        for room, seq in emailed.items():
            await self.memberships.update_one({"room": room, "user": user},
                                              {"$max": {"emailed_seq": seq}})
