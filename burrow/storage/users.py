"""Users' notification settings in MongoDB (``users``), one document per user id.

``{_id: user, email, email_verified, email_verify_sent_at, push, digest, previews,
snooze_until, quiet_hours, updated_at}``. A user without a document (or a field missing from it) has the defaults
of :class:`UserSettings`: pushes on, a daily e-mail digest (sent only once there is a
verified ``email``), message bodies shown. An address stored before verification existed
has no ``email_verified`` and reads as unverified. Writes touch only the fields they
change, so other fields that workers keep on the same document survive them.

The address and its verification state change together, in one conditional update
(:meth:`UserStore.change_email`), and an address is marked verified only while it is
still the stored one (:meth:`UserStore.confirm_email`): a link for an old address, or a
change racing a confirmation, can never leave an unconfirmed address verified.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from burrow.core.notify_rules import QuietHours, stored_quiet_hours
from burrow.mail.verification import EmailState
from burrow.storage.database import utc

Database = AsyncDatabase[dict[str, Any]]
Digest = Literal["hourly", "daily", "off"]
DIGESTS: Final[tuple[str, ...]] = get_args(Digest)
FIELDS: Final = frozenset({"email", "push", "digest", "previews", "snooze_until",
                           "quiet_hours"})  # what users set
_SHOWN: Final = FIELDS | {"email_verified"}


@dataclass(frozen=True)
class UserSettings:
    email: str | None = None  # where digests go; None: no e-mail at all
    email_verified: bool = False  # its owner followed the verification link
    push: bool = True  # push notifications to the user's devices
    digest: Digest = "daily"  # e-mail digest of unread messages
    previews: bool = True  # show message bodies in pushes and digests
    snooze_until: int | None = None  # ms since the epoch: no push before (rules)
    quiet_hours: dict[str, str] | None = None  # {start, end, tz}: no push within

    def quiet(self) -> QuietHours | None:
        """The quiet hours to apply (None if unset, or stored but no longer valid)."""
        return stored_quiet_hours(self.quiet_hours)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings_of(doc: dict[str, Any] | None) -> UserSettings:
    """The settings a ``users`` document holds, defaults for what it lacks."""
    known = {k: v for k, v in (doc or {}).items() if k in _SHOWN}
    known["email_verified"] = known.get("email_verified") is True and bool(known.get("email"))
    snooze = known.get("snooze_until")
    if not isinstance(snooze, int) or isinstance(snooze, bool):
        known.pop("snooze_until", None)
    quiet = stored_quiet_hours(known.get("quiet_hours"))
    known["quiet_hours"] = None if quiet is None else quiet.to_json()
    return UserSettings(**known)


def email_state_of(doc: dict[str, Any] | None) -> EmailState:
    doc = doc or {}
    email = doc.get("email") if isinstance(doc.get("email"), str) else None
    sent = doc.get("email_verify_sent_at")
    return EmailState(email, email is not None and doc.get("email_verified") is True,
                      utc(sent) if isinstance(sent, datetime) else None)


def stamp() -> datetime:
    """Now, as MongoDB keeps it (milliseconds): a time written and later matched on (the
    verification mail's) must compare equal to what comes back."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class UserStore:
    def __init__(self, db: Database) -> None:
        self.users = db["users"]

    async def settings(self, user: str) -> UserSettings:
        return settings_of(await self.users.find_one({"_id": user}))

    async def update(self, user: str, changes: dict[str, Any]) -> UserSettings:
        """Set the given fields (checked by the caller; keys of :data:`FIELDS` only, but
        not ``email``, which changes with its verification state: :meth:`change_email`).

        Returns the settings after the change; an empty *changes* writes nothing.
        """
        if unknown := set(changes) - FIELDS:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        if "email" in changes:
            raise ValueError("email changes with its verification state: use change_email")
        if not changes:
            return await self.settings(user)
        doc = await self.users.find_one_and_update(
            {"_id": user}, {"$set": {**changes, "updated_at": datetime.now(UTC)}},
            upsert=True, return_document=ReturnDocument.AFTER)
        if doc is None:
            # The embedded server answers None to the losers of a race of first
            # upserts, although their change is applied (docs/database.md): read it.
            return await self.settings(user)
        return settings_of(doc)

    async def unsubscribe_digest(self, user: str) -> None:
        """Turn the e-mail digest off (the digest's unsubscribe link)."""
        await self.users.update_one(
            {"_id": user}, {"$set": {"digest": "off", "updated_at": datetime.now(UTC)}},
            upsert=True)

    async def email_state(self, user: str) -> EmailState:
        return email_state_of(await self.users.find_one(
            {"_id": user}, {"email": 1, "email_verified": 1, "email_verify_sent_at": 1}))

    async def change_email(self, user: str, expected: str | None, state: EmailState,
                           changes: dict[str, Any]) -> UserSettings | None:
        """Store *state* (and the other *changes*) if the address is still *expected*.

        None when it is not (another request changed it since it was read): the caller
        reads again and decides again.
        """
        if unknown := set(changes) - FIELDS:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        fields = {**changes, "email": state.email, "email_verified": state.verified,
                  "updated_at": datetime.now(UTC)}
        update: dict[str, Any] = {"$set": fields}
        if state.sent_at is None:
            update["$unset"] = {"email_verify_sent_at": ""}
        else:
            fields["email_verify_sent_at"] = state.sent_at
        try:
            # {"email": None} also matches a document without one, or no document (upsert).
            doc = await self.users.find_one_and_update(
                {"_id": user, "email": expected}, update, upsert=True,
                return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:  # the document exists with another address
            return None
        return settings_of(doc)

    async def forget_verification_sent(self, user: str, address: str, at: datetime) -> None:
        """The verification mail asked for at *at* was not queued: let the next request
        (or the digester) send one without waiting for the cool-down."""
        await self.users.update_one(
            {"_id": user, "email": address, "email_verify_sent_at": at},
            {"$unset": {"email_verify_sent_at": ""}})

    async def mark_verification_sent(self, user: str, address: str, at: datetime) -> bool:
        """Record that *address* gets its first verification mail; False if it had one
        (or is verified, or no longer stored): then nobody sends another."""
        result = await self.users.update_one(
            {"_id": user, "email": address, "email_verified": {"$ne": True},
             "email_verify_sent_at": {"$exists": False}},
            {"$set": {"email_verify_sent_at": at}})
        return result.modified_count == 1

    async def confirm_email(self, user: str, address: str) -> bool:
        """Mark *address* verified if it is still *user*'s; False if it is not."""
        result = await self.users.update_one(
            {"_id": user, "email": address},
            {"$set": {"email_verified": True, "updated_at": datetime.now(UTC)}})
        return result.matched_count == 1
