"""Users' notification settings in MongoDB (``users``), one document per user id.

``{_id: user, email, push, digest, previews, updated_at}``. A user without a document (or
a field missing from it) has the defaults of :class:`UserSettings`: pushes on, a daily
e-mail digest (sent only once there is an ``email``), message bodies shown. Writes touch
only the fields they change, so other fields that workers keep on the same document
survive them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

Database = AsyncDatabase[dict[str, Any]]
Digest = Literal["hourly", "daily", "off"]
DIGESTS: Final[tuple[str, ...]] = get_args(Digest)
FIELDS: Final = frozenset({"email", "push", "digest", "previews"})


@dataclass(frozen=True)
class UserSettings:
    email: str | None = None  # where digests go; None: no e-mail at all
    push: bool = True  # push notifications to the user's devices
    digest: Digest = "daily"  # e-mail digest of unread messages
    previews: bool = True  # show message bodies in pushes and digests

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings_of(doc: dict[str, Any] | None) -> UserSettings:
    """The settings a ``users`` document holds, defaults for what it lacks."""
    known = {k: v for k, v in (doc or {}).items() if k in FIELDS}
    return UserSettings(**known)


class UserStore:
    def __init__(self, db: Database) -> None:
        self.users = db["users"]

    async def settings(self, user: str) -> UserSettings:
        return settings_of(await self.users.find_one({"_id": user}))

    async def update(self, user: str, changes: dict[str, Any]) -> UserSettings:
        """Set the given fields (checked by the caller; keys of :data:`FIELDS` only).

        Returns the settings after the change; an empty *changes* writes nothing.
        """
        if unknown := set(changes) - FIELDS:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        if not changes:
            return await self.settings(user)
        doc = await self.users.find_one_and_update(
            {"_id": user}, {"$set": {**changes, "updated_at": datetime.now(UTC)}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return settings_of(doc)

    async def unsubscribe_digest(self, user: str) -> None:
        """Turn the e-mail digest off (the digest's unsubscribe link)."""
        await self.users.update_one(
            {"_id": user}, {"$set": {"digest": "off", "updated_at": datetime.now(UTC)}},
            upsert=True)
