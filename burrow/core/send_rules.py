"""May this member send, change a message, or type in this room now? (issue 17, item 1)

The gateway enforces a room's moderation state from what it caches with a membership
(docs/moderation.md, "Enforcement"): the member's role and ``muted_until``, the room's
``locked`` and ``slow_mode_s``. The decision is here, pure and clock-given, so that every
transport asks the same question and the rules can be tested without a gateway.

The rules, in one place:

- **What adds to the room** (a message, an edit, adding a reaction) is refused to a
  **muted** member (``muted``, with the milliseconds until the mute ends) and, in a
  **locked** room, to every plain member (``locked``). **What takes one's own words back**
  (a delete, removing one's own reaction) stays allowed: a muted member may still retract
  what they said, and the sequencer still decides whose message may be deleted.
- **Slow mode** counts new messages only (not edits, deletes or reactions, which the
  ordinary rate limits bound): one per ``slow_mode_s`` seconds per member and room.
- The **owner, moderators and admins** are exempt from lock and slow mode, not from a mute
  (whoever may mute them decided they should be quiet).
- **Typing** is dropped (not relayed, no error) from a muted member and, in a locked
  room, from a plain member: an indicator for words that cannot come would be a lie.
- A mute ends by itself at ``muted_until``: no event is needed, the clock decides.
- Kinds the protocol does not give clients (a server-side kind such as a moderation
  event) are not this module's to refuse: their own endpoint authorised them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# The roles of burrow/storage/rooms.py (OWNER, MODERATOR): the core imports no storage,
# tests/unit/test_send_rules.py checks that the strings agree.
EXEMPT_ROLES = frozenset({"owner", "moderator"})
ADDING = frozenset({None, "edit", "reaction"})  # kinds that add to the room (unless remove)
MESSAGE = None  # the kind of a plain send


@dataclass(frozen=True, slots=True)
class Member:
    """What a send needs of one membership, cached per connection."""

    role: str
    muted_until_ms: int | None = None  # epoch milliseconds; None: not muted


@dataclass(frozen=True, slots=True)
class RoomRules:
    """What a send needs of the room, cached per gateway worker."""

    slow_mode_s: int = 0  # 0: off
    locked: bool = False


NO_RULES = RoomRules()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a send is refused: the error code, a message for people, and when to retry
    (None: not by waiting)."""

    code: str
    message: str
    retry_after_ms: int | None = None


def exempt(member: Member, is_admin: bool) -> bool:
    """Whether lock and slow mode do not apply: the owner, moderators, admins."""
    return is_admin or member.role in EXEMPT_ROLES


def muted_for_ms(member: Member, now_ms: int) -> int:
    """Milliseconds until *member*'s mute ends (0: not muted now)."""
    if member.muted_until_ms is None:
        return 0
    return max(0, member.muted_until_ms - now_ms)


def adds(kind: str | None, remove: bool = False) -> bool:
    """Whether a send of *kind* adds to the room (a message, an edit, a new reaction)."""
    return kind in ADDING and not (kind == "reaction" and remove)


def refuse_send(member: Member, room: RoomRules, is_admin: bool, kind: str | None,
                remove: bool, now_ms: int) -> Refusal | None:
    """None if the send (or change) may go on to slow mode and the sequencer; else why not.

    Mute before lock: a muted member in a locked room learns when the mute ends, which
    is the part that depends on them."""
    if not adds(kind, remove):
        return None
    wait = muted_for_ms(member, now_ms)
    if wait:
        return Refusal("muted", "you are muted in this room: nothing you send is stored "
                       "until the mute ends", wait)
    if room.locked and not exempt(member, is_admin):
        return Refusal("locked", "this room is locked: only its owner and moderators send")
    return None


def slow_mode_seconds(member: Member, room: RoomRules, is_admin: bool,
                      kind: str | None) -> int:
    """The slow-mode interval this send must respect (0: none): new messages of plain
    members, in a room with slow mode on."""
    if kind is not MESSAGE or room.slow_mode_s <= 0 or exempt(member, is_admin):
        return 0
    return room.slow_mode_s


def may_type(member: Member, room: RoomRules, is_admin: bool, now_ms: int) -> bool:
    """Whether a typing indicator of *member* is relayed (else it is dropped silently)."""
    if muted_for_ms(member, now_ms):
        return False
    return not room.locked or exempt(member, is_admin)


def epoch_ms(value: object) -> int | None:
    """A stored ``muted_until`` as epoch milliseconds: a datetime (naive: UTC, as
    MongoDB stores it) or a number of milliseconds; None for anything else (absent,
    null, malformed: not muted, rather than a gateway that fails every send)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(aware.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def member_of(doc: dict[str, object]) -> Member:
    """The :class:`Member` of a membership document (``role``, ``muted_until``)."""
    return Member(str(doc.get("role", "member")), epoch_ms(doc.get("muted_until")))


def rules_of(doc: dict[str, object] | None) -> RoomRules:
    """The :class:`RoomRules` of a room document (``slow_mode_s``, ``locked``); a value
    of the wrong type counts as off."""
    if not doc:
        return NO_RULES
    slow = doc.get("slow_mode_s")
    seconds = slow if isinstance(slow, int) and not isinstance(slow, bool) and slow > 0 else 0
    return RoomRules(seconds, doc.get("locked") is True)
