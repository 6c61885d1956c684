"""Rooms' own pre-publish filters (``room_filters``): one document per room that has one.

A collection of its own rather than a field of the rooms documents: the sequencer reads
every filter every ``BURROW_FILTER_REFRESH`` seconds, and with one document per filtered
room that read is the whole (small) collection, with no index on ``rooms`` and nothing
read at all per batch (docs/moderation.md, "Pre-publish hook"). Set and cleared by those
who may moderate the room (``PUT`` / ``DELETE /v1/rooms/{room}/filter``).

Document: ``_id`` (the room), ``entries`` (words, phrases and ``re:`` patterns, as
:class:`burrow.core.prepublish.Blocklist` reads them), ``action`` (reject or replace),
``hook`` (ask the moderation service), ``by``, ``at``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

Database = AsyncDatabase[dict[str, Any]]

#: Most entries a room's filter may have (the global filter's file may have more).
MAX_ROOM_ENTRIES = 500
#: Most rooms with a filter the sequencer loads; beyond, it logs and loads the first.
MAX_FILTERED_ROOMS = 10_000


class RoomFilterStore:
    def __init__(self, db: Database) -> None:
        self.filters = db["room_filters"]

    async def get(self, room: str) -> dict[str, Any] | None:
        return await self.filters.find_one({"_id": room})

    async def put(self, room: str, entries: list[str], action: str, hook: bool,
                  by: str) -> dict[str, Any]:
        doc = {"_id": room, "entries": entries, "action": action, "hook": hook, "by": by,
               "at": datetime.now(UTC)}
        await self.filters.replace_one({"_id": room}, doc, upsert=True)
        return doc

    async def delete(self, room: str) -> bool:
        return (await self.filters.delete_one({"_id": room})).deleted_count > 0

    async def all(self) -> list[dict[str, Any]]:
        """Every room's filter (the sequencer's periodic read), at most
        :data:`MAX_FILTERED_ROOMS`."""
        return await self.filters.find({}).limit(MAX_FILTERED_ROOMS).to_list(None)
