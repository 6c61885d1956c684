"""A member's notification rule for a room, kept on their membership document.

``memberships.notify_level`` (``"all"``, ``"mentions"`` or ``"nothing"``; absent: all)
and ``memberships.snooze_until`` (ms since the epoch; absent: none). On the membership,
so the notifier's reads of it (scheduling's one read per batch, the due push's read of
the member's pointers) see the rule without another query (docs/devices-and-settings.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from burrow.core.notify_rules import Level, level_of

Database = AsyncDatabase[dict[str, Any]]
PROJECTION = {"notify_level": 1, "snooze_until": 1}


@dataclass(frozen=True)
class RoomRule:
    level: Level = "all"
    snooze_until: int | None = None  # ms since the epoch

    def as_dict(self, room: str) -> dict[str, Any]:
        return {"room": room, "level": self.level, "snooze_until": self.snooze_until}


DEFAULT_RULE = RoomRule()


def rule_of(membership: dict[str, Any] | None) -> RoomRule:
    """The rule a membership document holds; defaults for what it lacks or garbles."""
    doc = membership or {}
    snooze = doc.get("snooze_until")
    return RoomRule(level_of(doc.get("notify_level")),
                    snooze if isinstance(snooze, int) and not isinstance(snooze, bool)
                    else None)


class RoomRuleStore:
    def __init__(self, db: Database) -> None:
        self.memberships = db["memberships"]

    async def get(self, room: str, user: str) -> RoomRule | None:
        """*user*'s rule for *room*; None if they are not a member."""
        doc = await self.memberships.find_one({"room": room, "user": user},
                                              {**PROJECTION, "_id": 0, "user": 1})
        return None if doc is None else rule_of(doc)

    async def set(self, room: str, user: str, changes: dict[str, Any]) -> RoomRule | None:
        """Set the given fields (``level``, ``snooze_until``, checked by the caller) on
        *user*'s membership; None if they are not a member (nothing written: never
        upserted, so no half membership appears)."""
        fields: dict[str, Any] = {}
        unset: dict[str, str] = {}
        if "level" in changes:
            fields["notify_level"] = changes["level"]
        if "snooze_until" in changes:
            if changes["snooze_until"] is None:
                unset["snooze_until"] = ""
            else:
                fields["snooze_until"] = changes["snooze_until"]
        update: dict[str, Any] = {}
        if fields:
            update["$set"] = fields
        if unset:
            update["$unset"] = unset
        if not update:
            return await self.get(room, user)
        doc = await self.memberships.find_one_and_update(
            {"room": room, "user": user}, update,
            projection={**PROJECTION, "_id": 0, "user": 1}, return_document=ReturnDocument.AFTER)
        return None if doc is None else rule_of(doc)
