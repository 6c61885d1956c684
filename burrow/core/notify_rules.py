"""Per-user and per-room notification rules: pure decisions, ``now`` always given.

A member sets, per room, a **level** (``all``: every message; ``mentions``: only messages
that mention them, by name or @room, or reply to one of their messages; ``nothing``: no
push and no digest for the room, even for a mention) and a **snooze** (no push from the
room until then). A user sets a snooze of all their pushes and **quiet hours** in their
own time zone (docs/devices-and-settings.md, rules).

The level decides *what is told* (pushes and digests alike); snoozes and quiet hours
decide only *whether a push goes now*: the digest still tells, and a mention does not
break through them (the user asked for quiet). A push they hold back is dropped, not
delayed: the messages stay un-pushed, so the digest and the room's next push cover them.

The notifier (:mod:`consumers.notifier`) and the digester ask here, with the facts read
where they already read (the membership, the user's settings); the storage layer asks
:func:`told` which messages to gather for a room at a given level.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any, Final, Literal, get_args
from zoneinfo import ZoneInfo, available_timezones

Level = Literal["all", "mentions", "nothing"]
LEVELS: Final[tuple[str, ...]] = get_args(Level)
DEFAULT_LEVEL: Final[Level] = "all"
CLOCK: Final = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
MAX_ZONE: Final = 64


class Kind(Enum):
    """What an unread message is to its reader."""

    MENTION = "mention"  # mentions them by name, or @room
    REPLY = "reply"      # answers one of their messages
    OTHER = "other"


def told(level: str, kind: Kind) -> bool:
    """Whether a room at *level* tells its member of a message of *kind* (push or
    digest). An unknown stored level counts as the default (``all``)."""
    if level == "nothing":
        return False
    if level == "mentions":
        return kind is not Kind.OTHER
    return True


def level_of(value: Any) -> Level:
    """A stored level, the default for anything else (a missing or foreign field)."""
    return value if value in LEVELS else DEFAULT_LEVEL


def kind_of(user: str, sender: str, mentions: Any, reply_to: str | None,
            mine: Collection[str]) -> Kind:
    """*user*'s view of a message: *mentions* as stored (a :class:`Mentions` or None),
    *mine*: ids of *user*'s own messages among the replied-to ones."""
    if sender != user and mentions is not None and mentions.names(user):
        return Kind.MENTION
    if reply_to is not None and reply_to in mine and sender != user:
        return Kind.REPLY
    return Kind.OTHER


@cache
def zones() -> frozenset[str]:
    """The IANA zone names this machine knows (read once: ~60 ms)."""
    return frozenset(available_timezones())


def valid_zone(name: Any) -> bool:
    return isinstance(name, str) and 0 < len(name) <= MAX_ZONE and name in zones()


def minutes(clock: str) -> int:
    """``"22:30"`` -> 1350; ValueError for anything but ``HH:MM`` (24 h)."""
    match = CLOCK.fullmatch(clock)
    if match is None:
        raise ValueError(f"{clock!r} is not a time of day HH:MM")
    return int(match.group(1)) * 60 + int(match.group(2))


@dataclass(frozen=True)
class QuietHours:
    """Every day from *start* to *end* (``HH:MM``) in zone *tz*; spans midnight when
    start > end. start == end is refused (all day or never: ambiguous)."""

    start: str
    end: str
    tz: str

    def __post_init__(self) -> None:
        if minutes(self.start) == minutes(self.end):
            raise ValueError("quiet hours must not start when they end")
        if not valid_zone(self.tz):
            raise ValueError(f"{self.tz!r} is not an IANA time zone")

    @classmethod
    def from_json(cls, value: Any) -> QuietHours | None:
        """The stored (or sent) object; None for null. ValueError when malformed."""
        if value is None:
            return None
        if not isinstance(value, Mapping) or set(value) != {"start", "end", "tz"}:
            raise ValueError("quiet_hours must be an object {start, end, tz} or null")
        start, end, tz = value["start"], value["end"], value["tz"]
        if not all(isinstance(v, str) for v in (start, end, tz)):
            raise ValueError("quiet_hours start, end and tz must be strings")
        return cls(start, end, tz)

    def to_json(self) -> dict[str, str]:
        return {"start": self.start, "end": self.end, "tz": self.tz}

    def covers(self, now: datetime) -> bool:
        """Whether *now* (aware) falls in them, on the wall clock of their zone: DST
        moves them with the zone's clocks."""
        local = now.astimezone(ZoneInfo(self.tz))
        minute = local.hour * 60 + local.minute
        start, end = minutes(self.start), minutes(self.end)
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end  # across midnight


def stored_quiet_hours(value: Any) -> QuietHours | None:
    """Quiet hours as stored, None when absent or no longer valid (a zone removed from
    the tz database must not stop the notifier)."""
    try:
        return QuietHours.from_json(value)
    except ValueError:
        return None


def snoozed(until_ms: int | None, now: datetime) -> bool:
    return until_ms is not None and now.timestamp() * 1000 < until_ms


def push_now(*, user_snooze: int | None, quiet: QuietHours | None,
             room_snooze: int | None, now: datetime) -> bool:
    """Whether a push that is due (of something the level tells) goes out now: not while
    the user or the room is snoozed, nor in the user's quiet hours. Mentions included."""
    if snoozed(user_snooze, now) or snoozed(room_snooze, now):
        return False
    return quiet is None or not quiet.covers(now)


@dataclass(frozen=True)
class Decision:
    push: bool    # a push goes now
    digest: bool  # the digest lists the room (with the messages told)


def decide(level: str, kinds: Collection[Kind], *, user_snooze: int | None = None,
           quiet: QuietHours | None = None, room_snooze: int | None = None,
           now: datetime) -> Decision:
    """The whole rule for one member and room with unread messages of *kinds*."""
    tells = any(told(level, kind) for kind in kinds)
    return Decision(
        push=tells and push_now(user_snooze=user_snooze, quiet=quiet,
                                room_snooze=room_snooze, now=now),
        digest=tells)
