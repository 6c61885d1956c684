"""Reports of messages (``reports``): one per (reporter, message), listed and resolved
by those who may moderate the room (docs/moderation.md).

A report keeps a snapshot of what was reported (sender, seq, body at report time), so a
moderator still sees it after the message was edited or deleted. That snapshot is only
ever served to moderators (the list route) and to the backend's ``moderation.reports``
queue, never to the reporter or other members: a deleted body is not served again to
anyone who could not moderate the room (issue 16's rule).

Ids are time-ordered (13 hex digits of milliseconds, then 8 random), so the list of a
room's reports pages by id in the order they were filed.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Database = AsyncDatabase[dict[str, Any]]

REASONS: Final = ("spam", "abuse", "harassment", "other")
ACTIONS: Final = ("dismissed", "removed", "warned")
OPEN, RESOLVED = "open", "resolved"
MAX_NOTE: Final = 1000


def new_id() -> str:
    """A time-ordered report id: 21 lowercase hex digits."""
    return f"{time.time_ns() // 1_000_000:013x}{os.urandom(4).hex()}"


def is_report_id(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 21
            and all(c in "0123456789abcdef" for c in value))


class ReportStore:
    def __init__(self, db: Database) -> None:
        self.reports = db["reports"]

    async def ensure_indexes(self) -> None:
        # One report per reporter and message: a repeated report finds the first.
        await self.reports.create_index([("message", ASCENDING), ("reporter", ASCENDING)],
                                        unique=True, name="message_reporter")
        # A room's open (or resolved) reports in filing order: the moderators' list.
        await self.reports.create_index(
            [("room", ASCENDING), ("state", ASCENDING), ("_id", ASCENDING)],
            name="room_state_id")

    async def file(self, room: str, message: str, reporter: str, reason: str, note: str,
                   snapshot: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store a report; returns (the report, True) or, if *reporter* reported
        *message* before, (that first report, False): nothing is changed then."""
        doc = {"_id": new_id(), "room": room, "message": message, "reporter": reporter,
               "reason": reason, "note": note, "state": OPEN,
               "created_at": datetime.now(UTC), "snapshot": snapshot}
        try:
            await self.reports.insert_one(doc)
            return doc, True
        except DuplicateKeyError:
            found = await self.reports.find_one({"message": message, "reporter": reporter})
            if found is None:  # cannot happen: the unique key clashed on it
                raise
            return found, False

    async def get(self, room: str, report: str) -> dict[str, Any] | None:
        return await self.reports.find_one({"_id": report, "room": room})

    async def list(self, room: str, state: str, after: str | None,
                   limit: int) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"room": room, "state": state}
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.reports.find(query).sort("_id", ASCENDING).limit(limit)
        return [doc async for doc in cursor]

    async def resolve(self, room: str, report: str, action: str, note: str,
                      by: str) -> dict[str, Any] | None:
        """Resolve an open report; a resolved one is returned as it is (idempotent: the
        first resolution stands). None if *room* has no such report."""
        await self.reports.update_one(
            {"_id": report, "room": room, "state": OPEN},
            {"$set": {"state": RESOLVED, "resolution": {
                "action": action, "note": note, "by": by, "at": datetime.now(UTC)}}})
        return await self.get(room, report)
