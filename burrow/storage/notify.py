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

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, UpdateMany
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from burrow.core.envelopes import Stored
from burrow.core.notify_plan import MemberState, UserState
from burrow.core.notify_rules import Kind, kind_of, told
from burrow.storage.database import pages, utc
from burrow.storage.room_rules import DEFAULT_RULE, PROJECTION, RoomRule, rule_of

K = TypeVar("K")

Database = AsyncDatabase[dict[str, Any]]
LOG_KEPT = timedelta(days=7)


@dataclass(frozen=True)
class Unread:
    count: int
    latest: Stored
    senders: tuple[str, ...]  # distinct, newest first
    rule: RoomRule = DEFAULT_RULE  # the member's rule for the room (level, snooze)


#: A room at level "mentions" looks for mentions and replies among this many newest
#: unread messages (a muted room's backlog is not read whole for one push or digest).
TOLD_SCAN = 500


# Pushes and digests tell of messages: not of change events (edit, delete, reaction),
# nor of a message deleted by the time they are due.
MESSAGES_ONLY: dict[str, Any] = {"kind": None, "deleted_at": None}


def _absent_or_before(field: str, bound: datetime) -> dict[str, Any]:
    """Matches a record whose *field* is missing, null or older than *bound*.

    Written as ``$not: {$gte}`` rather than an ``$or`` of the three cases: the same
    documents on MongoDB, but the embedded database plans a top-level ``$or`` as a scan
    of the whole collection even beside an indexed equality (measured: 77 ms instead of
    1 ms per update on 12,000 memberships, growing with the data).
    """
    return {field: {"$not": {"$gte": bound}}}


def _others(user: str, blocked: Collection[str]) -> dict[str, Any]:
    """The ``sender`` condition of what *user* is told of: not their own messages, nor
    those of the users they block (``$ne`` when they block none: the usual query)."""
    return {"sender": {"$nin": [user, *sorted(blocked)]} if blocked else {"$ne": user}}


def _grouped_pages(pairs: Iterable[tuple[K, str]]) -> Iterator[tuple[K, list[str]]]:
    """(group, page of its users) for *pairs* of (group, user): one conditional
    ``update_many`` per page instead of one update per user (~1 ms each on the embedded
    database), the users in pages of 50 as every ``$in`` here."""
    groups: dict[K, set[str]] = defaultdict(set)
    for group, user in pairs:
        groups[group].add(user)
    for group, users in groups.items():
        for page in pages(sorted(users)):
            yield group, page


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    return utc(value) if isinstance(value, datetime) else None


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

    async def member_states(self, rooms: Collection[str]) -> list[MemberState]:
        """Every membership of *rooms* that may be told of a message, with what
        scheduling needs: one query a batch (per page of rooms). A member whose level
        for the room is ``nothing`` (burrow.core.notify_rules) is left out: no push or
        digest job is scheduled that could only decide, when due, to tell nothing.
        (Filtered here rather than in the query: the embedded database plans a
        condition beside ``room: {$in}`` as a scan.)"""
        found: list[MemberState] = []
        for page in pages(rooms):
            found += [MemberState(m["room"], m["user"], _int_or_none(m.get("read_seq")) or 0,
                                  _time(m.get("push_pending_at")),
                                  _int_or_none(m.get("push_claim")))
                      async for m in self.memberships.find(
                          {"room": {"$in": page}},
                          {"room": 1, "user": 1, "read_seq": 1, "push_pending_at": 1,
                           "push_claim": 1, "notify_level": 1, "_id": 0})
                      if m.get("notify_level") != "nothing"]
        return found

    async def claim_pushes(self, claims: Mapping[tuple[str, str], int],
                           stale_before: datetime) -> dict[tuple[str, str], int]:
        """Mark a push waiting for each (room, user) of *claims* that has none waiting
        (or a stale one); returns those whose record now holds this claim. One bulk write
        with an update per (room, seq), usually one per room (its members are claimed by
        the same message), and a read per page of rooms: another notifier racing for the
        same member loses on the write's condition, never both win. (An update per
        member cost the embedded database ~1 ms each: 100 claims a second at C=1000.)"""
        if not claims:
            return {}
        now = datetime.now(UTC)
        await self.memberships.bulk_write([
            UpdateMany({"room": room, "user": {"$in": page},
                        **_absent_or_before("push_pending_at", stale_before)},
                       {"$set": {"push_pending_at": now, "push_claim": seq}})
            for (room, seq), page in _grouped_pages(
                ((room, seq), user) for (room, user), seq in claims.items())],
            ordered=False)
        won: dict[tuple[str, str], int] = {}
        for page in pages(room for room, _ in claims):
            seqs = sorted({seq for (room, _), seq in claims.items() if room in page})
            async for m in self.memberships.find(
                    {"room": {"$in": page}, "push_claim": {"$in": seqs}},
                    {"room": 1, "user": 1, "push_claim": 1, "_id": 0}):
                if claims.get((m["room"], m["user"])) == m["push_claim"]:
                    won[(m["room"], m["user"])] = m["push_claim"]
        return won

    async def clear_pushes(self, keys: Collection[tuple[str, str]]) -> None:
        """No push waiting any more for these (room, user): one write, an update per room."""
        if not keys:
            return
        await self.memberships.bulk_write([
            UpdateMany({"room": room, "user": {"$in": page}},
                       {"$unset": {"push_pending_at": "", "push_claim": ""}})
            for room, page in _grouped_pages(keys)],
            ordered=False)

    async def unread_for_push(self, room: str, user: str,
                              blocked: Collection[str] = ()) -> Unread | None:
        """Messages from others after what *user* read or was pushed, those their rule
        for the room tells (docs/devices-and-settings.md, rules), none from the users
        they block (*blocked*); None if none."""
        membership = await self.memberships.find_one({"room": room, "user": user})
        if membership is None:
            return None
        since = max(membership.get("read_seq", 0), membership.get("pushed_seq", 0))
        rule = rule_of(membership)
        if told(rule.level, Kind.OTHER):
            found = await self._unread(room, user, since, blocked=blocked)
            return None if found is None else replace(found, rule=rule)
        recent = await self._told(room, user, since, rule.level, blocked)
        if not recent:
            return None
        return Unread(len(recent), recent[0], tuple(dict.fromkeys(m.sender for m in recent)),
                      rule)

    async def _told(self, room: str, user: str, since: int, level: str,
                    blocked: Collection[str] = ()) -> list[Stored]:
        """The unread messages (newest first, among the :data:`TOLD_SCAN` newest) that a
        room at *level* tells *user* of: one read of the messages, and one of the
        replied-to ones (which are *user*'s?) when some are replies."""
        if not any(told(level, kind) for kind in Kind):
            return []
        query = {"room": room, "seq": {"$gt": since}, **_others(user, blocked),
                 **MESSAGES_ONLY}
        recent = [Stored.from_document(d) async for d in
                  self.messages.find(query).sort("seq", DESCENDING).limit(TOLD_SCAN)]
        parents = sorted({m.reply_to for m in recent if m.reply_to is not None})
        mine: set[str] = set()
        for page in pages(parents):
            mine |= {d["_id"] async for d in self.messages.find(
                {"_id": {"$in": page}, "sender": user}, {"_id": 1})}
        return [m for m in recent
                if told(level, kind_of(user, m.sender, m.mentions, m.reply_to, mine))]

    async def _unread(self, room: str, user: str, since: int, limit: int = 0,
                      blocked: Collection[str] = ()) -> Unread | None:
        query = {"room": room, "seq": {"$gt": since}, **_others(user, blocked),
                 **MESSAGES_ONLY}
        count = await self.messages.count_documents(query)
        if count == 0:
            return None
        recent = [Stored.from_document(d) async for d in
                  self.messages.find(query).sort("seq", DESCENDING).limit(max(limit, 5))]
        senders = tuple(dict.fromkeys(m.sender for m in recent))
        return Unread(count, recent[0], senders)

    async def mention_for_push(self, room: str, user: str, seq: int,
                               blocked: Collection[str] = ()) -> Unread | None:
        """The message *seq* of *room* for a mention push to *user*: None if they read
        it or were pushed about it since, left the room, or it is deleted, is no message,
        is from a user they block (*blocked*) or does not mention them (a job a backend
        made up)."""
        membership = await self.memberships.find_one(
            {"room": room, "user": user}, {"read_seq": 1, "pushed_seq": 1, **PROJECTION})
        if membership is None or max(membership.get("read_seq", 0),
                                     membership.get("pushed_seq", 0)) >= seq:
            return None
        rule = rule_of(membership)
        if not told(rule.level, Kind.MENTION):
            return None  # the room is at "nothing": not even mentions
        doc = await self.messages.find_one({"room": room, "seq": seq, **MESSAGES_ONLY})
        if doc is None:
            return None
        message = Stored.from_document(doc)
        if (message.mentions is None or not message.mentions.names(user)
                or message.sender in blocked):
            return None
        return Unread(1, message, (message.sender,), rule)

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

    async def digest_states(self, users: Collection[str]) -> list[UserState]:
        """Those of *users* with an email and digests on, with their digest claim."""
        found: list[UserState] = []
        for page in pages(users):
            found += [UserState(u["_id"], str(u.get("digest", "daily")),
                                _time(u.get("digest_pending_at")),
                                u["digest_claim"] if isinstance(u.get("digest_claim"), str)
                                else None)
                      async for u in self.users.find(
                          {"_id": {"$in": page}, "email": {"$type": "string"},
                           "digest": {"$ne": "off"}},
                          {"digest": 1, "digest_pending_at": 1, "digest_claim": 1})]
        return found

    async def claim_digests(self, claims: Mapping[str, str],
                            stale_before: datetime) -> set[str]:
        """Mark a digest waiting for each user of *claims* (user -> key) with none waiting;
        returns the users whose record now holds this claim."""
        if not claims:
            return set()
        now = datetime.now(UTC)
        # a key names a message: its room's readers share it, and one update
        await self.users.bulk_write([
            UpdateMany({"_id": {"$in": page},
                        **_absent_or_before("digest_pending_at", stale_before)},
                       {"$set": {"digest_pending_at": now, "digest_claim": key}})
            for key, page in _grouped_pages((key, user) for user, key in claims.items())],
            ordered=False)
        won: set[str] = set()
        for page in pages(claims):
            won |= {u["_id"] async for u in self.users.find(
                {"_id": {"$in": page}}, {"digest_claim": 1})
                if claims.get(u["_id"]) == u.get("digest_claim")}
        return won

    async def delay_digest(self, user: str) -> None:
        """The digest job goes back to its delay tier: keep it marked as waiting."""
        await self.users.update_one({"_id": user},
                                    {"$set": {"digest_pending_at": datetime.now(UTC)}})

    async def clear_digest(self, user: str) -> None:
        await self.users.update_one({"_id": user},
                                    {"$unset": {"digest_pending_at": "", "digest_claim": ""}})

    async def last_digest_at(self, user: str) -> datetime | None:
        doc = await self.users.find_one({"_id": user}, {"last_digest_at": 1})
        return None if doc is None else _time(doc.get("last_digest_at"))

    async def unread_for_digest(self, user: str, per_room: int, blocked: Collection[str] = ()
                                ) -> list[tuple[str, int, list[Stored]]]:
        """Per room: unread messages not already pushed or emailed (count, oldest first),
        those the member's rule for the room tells: none of a room at "nothing", only
        mentions and replies to them of a room at "mentions"; none from the users
        *user* blocks (*blocked*)."""
        found = []
        async for membership in self.memberships.find({"user": user}).sort("room"):
            room = membership["room"]
            since = max(membership.get("read_seq", 0), membership.get("pushed_seq", 0),
                        membership.get("emailed_seq", 0))
            level = rule_of(membership).level
            if not told(level, Kind.OTHER):
                kept = await self._told(room, user, since, level, blocked)
                if kept:
                    found.append((room, len(kept), kept[:per_room][::-1]))
                continue
            query = {"room": room, "seq": {"$gt": since}, **_others(user, blocked),
                     **MESSAGES_ONLY}
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
