"""Which users are connected, and whether they are active, across every gateway.

One document per open connection in ``presence``: the gateway writes it on connect,
refreshes ``seen_at`` of exactly the connections it holds with one heartbeat write, moves
``active_at`` when the client does something (a send, a read, a subscribe, typing: not a
ping, which client libraries send by themselves). On close the document is not deleted at
once: its ``seen_at`` is set so that it stops counting after a short grace
(:data:`~gateway.presence.OFFLINE_GRACE`), so a page reload or a reconnect to another gateway
does not flash the user offline. A gateway killed with ``kill -9`` writes nothing more: its
documents stop counting once ``seen_at`` is older than the TTL, the other gateways' sweeps
delete them (and announce the users who are left with no connection), and a TTL index
removes what is left later (readers never rely on that index).

``presence_status`` holds, per user, the online status last announced and a version
counter: every change of a user's connections takes the next version *before* it counts
the live connections, and the status is stored only if no later version was stored
first. So the highest version always holds a count taken after every earlier change, and
the announced status ends right whatever order gateways race in (see :meth:`settle`).

The notifier asks :meth:`PresenceStore.active_users` before it pushes: a user who is
connected *and* active does not get a push; one who is offline, or connected but idle
(an idle desktop), does.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReplaceOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure

from burrow.storage.database import pages, utc

Database = AsyncDatabase[dict[str, Any]]
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
log = logging.getLogger(__name__)
UPSERT_ATTEMPTS = 5
DUPLICATE_KEY = 11000


class PresenceStore:
    def __init__(self, db: Database, ttl: float) -> None:
        self.presence = db["presence"]
        self.status = db["presence_status"]
        self.ttl = timedelta(seconds=ttl)

    async def ensure_indexes(self) -> None:
        await self.presence.create_index([("user", ASCENDING)], name="user")
        await self.presence.create_index([("gateway", ASCENDING)], name="gateway")
        # Cleanup only: queries filter on seen_at themselves, and gateways sweep.
        try:
            await self.presence.create_index(
                [("seen_at", ASCENDING)], name="seen_at_ttl",
                expireAfterSeconds=int(self.ttl.total_seconds()) * 2)
        except OperationFailure as exc:
            if exc.code not in INDEX_CONFLICTS:
                raise
            # Made with another BURROW_PRESENCE_TTL (a changed setting, or a test): keep
            # it rather than retry forever; it only decides when leftovers are removed.
            log.warning("presence index seen_at_ttl exists with another expiry (another "
                        "BURROW_PRESENCE_TTL); kept as it is")

    def _cutoff(self) -> datetime:
        """A connection whose ``seen_at`` is not after this no longer counts."""
        return datetime.now(UTC) - self.ttl

    # -- connections -------------------------------------------------------------------

    async def connected(self, conn_id: str, user: str, gateway: str) -> None:
        await self.connected_many([(conn_id, user)], gateway)

    async def connected_many(self, conns: Collection[tuple[str, str]], gateway: str) -> None:
        """Record the (connection id, user) pairs that just connected, in one write.

        One write for all that arrived together: a reconnect storm (a gateway restart
        sends thousands at once) is bounded by the database's writes per second.
        """
        now = datetime.now(UTC)
        await self.presence.bulk_write([
            ReplaceOne({"_id": conn_id}, {"user": user, "gateway": gateway, "seen_at": now,
                                          "active_at": now}, upsert=True)
            for conn_id, user in conns], ordered=False)

    async def restore(self, conn_id: str, user: str, gateway: str) -> None:
        """Put back the document of a connection that is still open but lost it (swept while
        its gateway's heartbeat was late); its activity is unknown, so it counts as idle."""
        await self.presence.update_one(
            {"_id": conn_id},
            {"$set": {"user": user, "gateway": gateway, "seen_at": datetime.now(UTC)},
             "$setOnInsert": {"active_at": NEVER}}, upsert=True)

    async def active(self, conn_ids: Collection[str]) -> None:
        """The connections *conn_ids* did something just now (they count as seen too)."""
        now = datetime.now(UTC)
        for page in pages(conn_ids):
            await self.presence.update_many({"_id": {"$in": page}},
                                            {"$set": {"active_at": now, "seen_at": now}})

    async def heartbeat(self, conn_ids: Collection[str]) -> int:
        """Vouch for *conn_ids* (the gateway's open connections); how many documents matched.

        By id rather than by gateway: a document the gateway no longer holds (a closed
        connection whose delete failed, one in its grace) must expire, not be kept alive.
        """
        now = datetime.now(UTC)
        matched = 0
        for page in pages(conn_ids):
            result = await self.presence.update_many({"_id": {"$in": page}},
                                                     {"$set": {"seen_at": now}})
            matched += result.matched_count
        return matched

    async def existing(self, conn_ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        for page in pages(conn_ids):
            found.update([str(d["_id"]) async for d in
                          self.presence.find({"_id": {"$in": page}}, {"_id": 1})])
        return found

    async def closing(self, conn_id: str, grace: float) -> None:
        """The connection closed: let it count for *grace* more seconds, then expire."""
        seen_at = datetime.now(UTC) - self.ttl + timedelta(seconds=grace)
        await self.presence.update_one({"_id": conn_id}, {"$set": {"seen_at": seen_at}})

    async def disconnected(self, conn_id: str) -> bool:
        """Delete the connection's document; False if it was gone (someone else swept it)."""
        result = await self.presence.delete_one({"_id": conn_id})
        return result.deleted_count == 1

    async def stale(self, limit: int) -> list[tuple[str, str]]:
        """(connection id, user) of up to *limit* documents that no gateway vouches for."""
        return [(str(d["_id"]), str(d.get("user", ""))) async for d in
                self.presence.find({"seen_at": {"$lte": self._cutoff()}}, {"user": 1})
                .limit(limit)]

    async def expire(self, conn_ids: Collection[str]) -> int:
        """Delete those of *conn_ids* that are still stale; how many this call deleted.

        The ``seen_at`` condition spares a document that its gateway vouched for again
        since it was read (a late heartbeat).
        """
        deleted = 0
        for page in pages(conn_ids):
            result = await self.presence.delete_many(
                {"_id": {"$in": page}, "seen_at": {"$lte": self._cutoff()}})
            deleted += result.deleted_count
        return deleted

    # -- queries -----------------------------------------------------------------------

    async def online(self, users: Collection[str]) -> set[str]:
        """Those of *users* with a connection that counts, in a query per page of users."""
        cutoff = self._cutoff()
        found: set[str] = set()
        for page in pages(users):
            found.update([str(d["user"]) async for d in self.presence.find(
                {"user": {"$in": page}, "seen_at": {"$gt": cutoff}}, {"user": 1, "_id": 0})])
        return found

    async def active_users(self, users: Collection[str], idle_after: float) -> set[str]:
        """Those of *users* connected (a live gateway vouches for it) who did something
        in the last *idle_after* s; a query per page of users."""
        now = datetime.now(UTC)
        found: set[str] = set()
        for page in pages(users):
            found.update([str(d["user"]) async for d in self.presence.find(
                {"user": {"$in": page}, "seen_at": {"$gt": now - self.ttl},
                 "active_at": {"$gt": now - timedelta(seconds=idle_after)}},
                {"user": 1, "_id": 0})])
        return found

    async def states(self, users: Iterable[str],
                     idle_after: float) -> dict[str, tuple[bool, bool]]:
        """{user: (online, active)} for every one of *users*, from one query."""
        now = datetime.now(UTC)
        idle_since = now - timedelta(seconds=idle_after)
        wanted = list(users)
        found: dict[str, tuple[bool, bool]] = dict.fromkeys(wanted, (False, False))
        async for doc in self.presence.find(
                {"user": {"$in": wanted}, "seen_at": {"$gt": now - self.ttl}},
                {"user": 1, "active_at": 1}):
            user = str(doc["user"])
            active_at = doc.get("active_at")
            active = isinstance(active_at, datetime) and utc(active_at) > idle_since
            found[user] = (True, found[user][1] or active)
        return found

    # -- announced status --------------------------------------------------------------

    async def bump_many(self, users: Collection[str]) -> dict[str, int]:
        """The next version of each of *users*' status: take it after a change, before
        counting. One write for all, and one read per page of users.

        The version read back may be higher than the one this call's increment made (a
        gateway bumped in between): that is as good, since it too was taken after this
        call's change, and the count follows the read. Concurrent first upserts of a
        user can lose the race for the insert (mongod answers DuplicateKeyError): those
        increment again; skipped numbers are harmless, only the order matters.
        """
        pending = list(dict.fromkeys(users))
        for attempt in range(UPSERT_ATTEMPTS):
            try:
                await self.status.bulk_write([
                    UpdateOne({"_id": user}, {"$inc": {"version": 1},
                                              "$setOnInsert": {"online": False, "settled": 0}},
                              upsert=True) for user in pending], ordered=False)
                break
            except BulkWriteError as exc:
                # Only the upserts that lost an insert race to another gateway failed
                # (mongod answers DuplicateKeyError): they increment on the next attempt.
                errors = exc.details.get("writeErrors", [])
                if attempt == UPSERT_ATTEMPTS - 1 or any(
                        e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                pending = [pending[e["index"]] for e in errors]
        versions: dict[str, int] = {}
        for page in pages(users):
            async for doc in self.status.find({"_id": {"$in": page}}, {"version": 1}):
                versions[str(doc["_id"])] = int(doc["version"])
        missing = set(users) - versions.keys()
        if missing:
            raise OperationFailure(f"no presence version for {sorted(missing)[:5]}")
        return versions

    async def settle(self, user: str, version: int, online: bool) -> bool:
        """Store *online* as of *version*; True if that changed the announced status.

        Nothing is stored when a later version was stored already: that one counted after
        this one's change, so it knows at least as much. Whoever gets True announces it.

        Two conditional updates rather than one ``findAndModify`` returning the old
        status: the embedded database scans the whole collection for every
        findAndModify (33 ms at 5,000 users, against 0.8 ms for an update by ``_id``),
        which made connecting quadratic in the number of users. Each update names the
        state it expects, so a settle racing in between makes both miss; then the
        status is read and the pair is tried again unless a later version is stored.
        """
        for _ in range(UPSERT_ATTEMPTS):
            flipped = await self.status.update_one(
                {"_id": user, "settled": {"$lt": version}, "online": {"$ne": online}},
                {"$set": {"online": online, "settled": version}})
            if flipped.modified_count:
                return True
            kept = await self.status.update_one(
                {"_id": user, "settled": {"$lt": version}, "online": online},
                {"$set": {"settled": version}})
            if kept.matched_count:
                return False
            doc = await self.status.find_one({"_id": user}, {"settled": 1})
            if doc is None or int(doc.get("settled", 0)) >= version:
                return False
        raise OperationFailure(f"presence status of {user} kept changing")

