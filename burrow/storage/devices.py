"""Push devices in MongoDB (``devices``): who gets a user's pushes, on which token.

A document is one registration: ``{_id, user, platform, token, token_kind, app,
created_at, updated_at}``; ``_id`` is a random URL-safe id, ``token_kind`` is None for
APNs. A (platform, token) pair is registered at most once (unique index): a token
registered again by another user *moves* to that user (the phone changed hands, or another
account logged in on it) and keeps its id, so one phone never gets another person's pushes.

Apps register their token on every start, so ``updated_at`` is when the device was last
heard of. A user keeps at most :data:`MAX_DEVICES_PER_USER` devices: a new registration
beyond that evicts the least recently updated ones, the way chat products forget phones
nobody uses any more (a 409 would lock a user out of pushes on their new phone).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from burrow.push import Device, Platform, TokenKind
from burrow.storage.database import pages

Database = AsyncDatabase[dict[str, Any]]
MAX_DEVICES_PER_USER = 20


def new_id() -> str:
    """A device id: 16 URL-safe characters, 96 random bits, never starting with ``-``:
    one in 64 did, and ``burrow device remove -Xy...`` read it as an option."""
    while (found := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return found


@dataclass(frozen=True)
class Registration:
    """A device with its registration times (what the HTTP API lists)."""

    device: Device
    created_at: datetime  # when the token was registered for this user
    updated_at: datetime  # when it was last (re-)registered


def device_of(doc: dict[str, Any]) -> Device:
    return Device(id=str(doc["_id"]), user=str(doc["user"]), platform=doc["platform"],
                  token=str(doc["token"]),
                  # APNs documents hold None; the Device field means nothing for them.
                  token_kind=doc.get("token_kind") or "registration_token",
                  app=str(doc.get("app") or ""))


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self.devices = db["devices"]

    async def ensure_indexes(self) -> None:
        await self.devices.create_index([("platform", ASCENDING), ("token", ASCENDING)],
                                        unique=True, name="platform_token")
        await self.devices.create_index([("user", ASCENDING), ("updated_at", DESCENDING)],
                                        name="user_updated")

    async def register(self, user: str, platform: Platform, token: str,
                       token_kind: TokenKind | None = None, app: str = "") -> tuple[str, bool]:
        """Register *token* for *user*; returns (device id, new for this user).

        Registering a token that exists already updates it (and moves it to *user*) under
        the same id; "new" is True when it was absent or belonged to someone else. A new
        registration may evict the user's least recently updated devices
        (:data:`MAX_DEVICES_PER_USER`). *token_kind* is for FCM only (None for APNs).
        """
        now = datetime.now(UTC)
        query = {"platform": platform, "token": token}
        mine = new_id()
        update = {"$set": {"user": user, "token_kind": token_kind, "app": app,
                           "updated_at": now},
                  "$setOnInsert": {"_id": mine, "created_at": now}}
        try:
            before = await self.devices.find_one_and_update(
                query, update, upsert=True, return_document=ReturnDocument.BEFORE)
        except DuplicateKeyError:
            # Two first registrations of one token raced and the other one inserted it:
            # this one is an update now.
            before = await self.devices.find_one_and_update(
                query, update, return_document=ReturnDocument.BEFORE)
        if before is not None and before["user"] == user:
            return str(before["_id"]), False
        if before is None:
            doc = await self.devices.find_one(query, {"_id": 1})
            if doc is None:  # deleted again in between (an INVALID result): register anew
                return await self.register(user, platform, token, token_kind, app)
            device_id = str(doc["_id"])
            if device_id != mine:
                # No pre-image, yet another registration's id: it inserted while ours ran,
                # and ours updated its document. (mongod answers such a loser with the
                # pre-image after its internal retry; SecantusDB with none, measured: 8
                # concurrent upserts of one key, 2-5 of them got None in 44 of 60 rounds.)
                return device_id, False
        else:  # moved: for its new owner it is registered now
            device_id = str(before["_id"])
            await self.devices.update_one({"_id": device_id, "user": user},
                                          {"$set": {"created_at": now}})
        await self._evict(user, keep=device_id)
        return device_id, True

    async def _evict(self, user: str, keep: str) -> None:
        """Delete the user's least recently updated devices beyond the limit, never *keep*."""
        extra = self.devices.find({"user": user, "_id": {"$ne": keep}}, {"_id": 1}).sort(
            [("updated_at", DESCENDING), ("_id", DESCENDING)]).skip(MAX_DEVICES_PER_USER - 1)
        old = [doc["_id"] async for doc in extra]
        if old:
            await self.devices.delete_many({"_id": {"$in": old}, "user": user})

    async def remove(self, user: str, device_id: str) -> bool:
        """Unregister the device; False if *user* has no device of that id."""
        result = await self.devices.delete_one({"_id": device_id, "user": user})
        return result.deleted_count == 1

    async def of_user(self, user: str) -> list[Device]:
        """The user's devices, most recently updated first."""
        return [r.device for r in await self.registrations(user)]

    async def users_with_devices(self, users: Iterable[str]) -> set[str]:
        """Those of *users* who have at least one device (whom a push could reach)."""
        found: set[str] = set()
        for page in pages(users):
            found |= {str(doc["user"]) async for doc in
                      self.devices.find({"user": {"$in": page}}, {"_id": 0, "user": 1})}
        return found

    async def registrations(self, user: str) -> list[Registration]:
        """The user's devices with their times, most recently updated first."""
        return [Registration(device_of(doc), doc["created_at"], doc["updated_at"])
                async for doc in self.devices.find({"user": user}).sort(
                    [("updated_at", DESCENDING), ("_id", DESCENDING)])]

    async def delete_invalid(self, device_id: str, token: str) -> bool:
        """Delete a device the provider called dead, only while it still has *token*.

        The token check keeps a stale push result from deleting what the id names now.
        """
        result = await self.devices.delete_one({"_id": device_id, "token": token})
        return result.deleted_count == 1
