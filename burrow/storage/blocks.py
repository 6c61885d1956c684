"""Who blocks whom (``blocks``): one small document per (blocker, blocked) pair.

``{_id, user, blocked, at}``: *user* blocks *blocked*. Pairs rather than one list per
user, because the two questions asked are each one index range:

- "whom does *user* block" (the API's list, and a due push's or digest's one user):
  index ``user_blocked`` (unique: a pair is stored once, a repeated block is a no-op);
- "who, among these readers, blocks one of these senders" (the notifier's one read per
  batch, the gateway's check before an add): index ``blocked_user``, by the batch's few
  senders rather than by its many readers. A sender nobody blocks costs one empty range.

At most :data:`burrow.core.blocks.MAX_BLOCKS` per user. The cap is checked by counting
before the insert and again after it: of racing blocks that would cross it, those that
find themselves beyond it take their own pair back (:exc:`TooManyBlocks`), so the
stored count never stays above the cap.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from burrow.core.blocks import MAX_BLOCKS, blocked_pairs
from burrow.storage.database import pages

Database = AsyncDatabase[dict[str, Any]]


class TooManyBlocks(Exception):
    """The user blocks :data:`MAX_BLOCKS` users already."""


class BlockStore:
    def __init__(self, db: Database) -> None:
        self.blocks = db["blocks"]

    async def ensure_indexes(self) -> None:
        await self.blocks.create_index([("user", ASCENDING), ("blocked", ASCENDING)],
                                       unique=True, name="user_blocked")
        await self.blocks.create_index([("blocked", ASCENDING), ("user", ASCENDING)],
                                       name="blocked_user")

    async def block(self, user: str, blocked: str) -> bool:
        """*user* blocks *blocked*; True if new, False if they did already. Raises
        :exc:`TooManyBlocks` (nothing stored) beyond the cap."""
        if await self.blocks.count_documents({"user": user, "blocked": blocked}, limit=1):
            return False
        if await self.blocks.count_documents({"user": user}) >= MAX_BLOCKS:
            raise TooManyBlocks(f"at most {MAX_BLOCKS} blocks")
        try:
            result = await self.blocks.insert_one(
                {"user": user, "blocked": blocked, "at": datetime.now(UTC)})
        except DuplicateKeyError:
            return False  # a racing request of the same block stored it
        if await self.blocks.count_documents({"user": user}) > MAX_BLOCKS:
            await self.blocks.delete_one({"_id": result.inserted_id})
            raise TooManyBlocks(f"at most {MAX_BLOCKS} blocks")
        return True

    async def unblock(self, user: str, blocked: str) -> bool:
        """True if *user* blocked *blocked* (and no longer does)."""
        result = await self.blocks.delete_one({"user": user, "blocked": blocked})
        return result.deleted_count == 1

    async def listed(self, user: str) -> list[dict[str, Any]]:
        """Whom *user* blocks, by user id: ``[{user, at}]`` (at: ms since the epoch)."""
        return [{"user": d["blocked"], "at": int(d["at"].timestamp() * 1000)}
                async for d in self.blocks.find({"user": user}, {"blocked": 1, "at": 1})
                .sort("blocked", ASCENDING)]

    async def blocked_by(self, user: str) -> frozenset[str]:
        """The users *user* blocks (a due push's or digest's one read)."""
        return frozenset([d["blocked"] async for d in self.blocks.find(
            {"user": user}, {"blocked": 1, "_id": 0})])

    async def blockers_of(self, senders: Collection[str],
                          readers: Collection[str] | None = None) -> dict[str, frozenset[str]]:
        """reader -> those of *senders* they block, for the readers among *readers* (all
        when None) who block any: one query per page of senders (a batch has few)."""
        rows: list[tuple[str, str]] = []
        for page in pages(senders):
            rows += [(d["user"], d["blocked"]) async for d in self.blocks.find(
                {"blocked": {"$in": page}}, {"user": 1, "blocked": 1, "_id": 0})]
        if readers is not None:
            wanted = set(readers)
            rows = [row for row in rows if row[0] in wanted]
        return blocked_pairs(rows)

    async def blocks_any(self, users: Collection[str], by: str) -> list[str]:
        """Those of *users* who block *by* (sorted): may *by* add them to a room?"""
        found: list[str] = []
        for page in pages(users):
            found += [d["user"] async for d in self.blocks.find(
                {"blocked": by, "user": {"$in": page}}, {"user": 1, "_id": 0})]
        return sorted(found)

    async def blocked_by_many(self, users: Collection[str]) -> dict[str, frozenset[str]]:
        """user -> the users they block, for those of *users* who block any: the due
        pushes running at once ask together (one query per page of users)."""
        rows: list[tuple[str, str]] = []
        for page in pages(users):
            rows += [(d["user"], d["blocked"]) async for d in self.blocks.find(
                {"user": {"$in": page}}, {"user": 1, "blocked": 1, "_id": 0})]
        return blocked_pairs(rows)
