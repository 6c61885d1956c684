"""Mentions on a message (issue 16, item 6): the one shape check and the membership decision.

A send may carry ``"mentions": {"users": [...], "room": true}``. The gateway (WebSocket
frames and HTTP) and the sequencer (its parse of every ``chat.ingress`` send, backend
services' too) check the shape with the same :func:`parse`, so a malformed value is
refused before anything is published, and a backend cannot slip one past the gateway.
Whether the mentioned users are members of the room only the sequencer knows: it asks
:func:`refusal` with one read of the batch's memberships (docs/protocol.md, mentions).

Mentioning yourself is not an error: the sender is dropped from ``users`` where the
sender is known (:meth:`Mentions.without`, in the sequencer's parse), silently, so a
client that offers "@everyone I typed" needs no special case. Mentions that end up empty
(no users, no @room) are no mentions: the stored message has no ``mentions`` key.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from burrow.core import ids

#: Most users one message may mention (docs/protocol.md).
MAX_MENTIONS = 32
KEYS = frozenset({"users", "room"})


class BadMentions(ValueError):
    """A send's ``mentions`` is not ``{"users": [distinct user ids], "room": bool}``."""


@dataclass(frozen=True)
class Mentions:
    """Who a message mentions: *users* in the order named, and @room."""

    users: tuple[str, ...] = ()
    room: bool = False

    def __bool__(self) -> bool:
        return bool(self.users) or self.room

    def without(self, sender: str) -> Mentions | None:
        """These mentions minus the sender (mentioning yourself is dropped); None when
        nothing is left."""
        users = tuple(u for u in self.users if u != sender)
        left = Mentions(users, self.room) if len(users) != len(self.users) else self
        return left if left else None

    def to_json(self) -> dict[str, Any]:
        """The wire and document form: only the keys that say something."""
        data: dict[str, Any] = {}
        if self.users:
            data["users"] = list(self.users)
        if self.room:
            data["room"] = True
        return data

    def names(self, user: str) -> bool:
        """Whether *user* is mentioned, by name or by @room."""
        return self.room or user in self.users


def parse(value: Any) -> Mentions | None:
    """The ``mentions`` of a send checked: absent (None) is none; else an object with
    at most the keys ``users`` (a list of at most :data:`MAX_MENTIONS` distinct user
    ids) and ``room`` (a boolean). Raises :exc:`BadMentions` saying what is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadMentions('mentions must be an object {"users": [user ids], "room": bool}')
    unknown = [k for k in value if k not in KEYS]
    if unknown:
        shown = unknown[0] if isinstance(unknown[0], str) and len(unknown[0]) <= 32 else "?"
        raise BadMentions(f"unknown mentions field {shown!r}: allowed are users and room")
    users, room = value.get("users", []), value.get("room", False)
    if not isinstance(users, list):
        raise BadMentions("mentions.users must be a list of user ids")
    if len(users) > MAX_MENTIONS:
        raise BadMentions(f"a message mentions at most {MAX_MENTIONS} users")
    if not all(ids.is_user_id(u) for u in users):
        raise BadMentions("a mentioned user id is a printable string of 1..128 characters")
    if len(set(users)) != len(users):
        raise BadMentions("a user is mentioned twice")
    if not isinstance(room, bool):
        raise BadMentions("mentions.room must be true or false")
    found = Mentions(tuple(users), room)
    return found if found else None


def from_document(value: Any) -> Mentions | None:
    """The mentions stored on a message document (written by :meth:`Mentions.to_json`
    after :func:`parse`); None when absent or not what was written."""
    if not isinstance(value, dict):
        return None
    users = value.get("users", ())
    found = Mentions(tuple(u for u in users if isinstance(u, str))
                     if isinstance(users, list) else (), value.get("room") is True)
    return found if found else None


def refusal(mentions: Mentions, members: Collection[str], member_count: int,
            room_limit: int) -> tuple[str, str] | None:
    """Why a send with *mentions* is refused, as (code, message), or None if allowed.

    *members* holds at least the room's members among ``mentions.users``;
    *member_count* the room's member count (needed for @room only, and only up to
    ``room_limit + 1``). A user who is not a member: ``bad_mention``. @room in a room of
    more than *room_limit* members: ``room_too_large`` (a mention pushes at once, past
    everyone's push delay: @room of a crowd would be a broadcast alarm).
    """
    missing = [u for u in mentions.users if u not in members]
    if missing:
        shown = missing[0] if len(missing[0]) <= 64 else missing[0][:63] + "…"
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return "bad_mention", f"{shown!r}{more} is not a member of the room"
    if mentions.room and member_count > room_limit:
        return "room_too_large", (f"@room is for rooms of at most {room_limit} members; "
                                  f"this one has more")
    return None
