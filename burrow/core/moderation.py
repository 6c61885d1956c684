"""Room moderation decisions, without I/O (docs/moderation.md).

Two pure steps that the moderation route (gateway/moderation_api.py) runs before it
changes anything: :func:`parse` checks the request body (which action, on whom, how
long, why) and :func:`check` says whether the actor may take that action on that target
in the room's current state, or which 4xx refuses it. Keeping them here makes the
table "actor role x target role x action" testable without a database
(tests/unit/test_moderation_rules.py).

Ranks: an admin (token role) and the room's owner may act on everyone but the owner;
a moderator acts on plain members only. Granting and taking the moderator role and
transferring the room are the owner's (or an admin's). The owner is never removed,
muted, banned or demoted: a room is never ownerless, and ownership only moves by
``transfer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from burrow.core import ids
from burrow.core.moderation_event import MAX_MODERATION_REASON

OWNER, MODERATOR, MEMBER = "owner", "moderator", "member"  # burrow.storage.rooms

PROMOTE, DEMOTE, REMOVE, MUTE, UNMUTE = "promote", "demote", "remove", "mute", "unmute"
BAN, UNBAN, SLOW_MODE, LOCK, UNLOCK, TRANSFER = (
    "ban", "unban", "slow_mode", "lock", "unlock", "transfer")
ACTIONS: Final = (PROMOTE, DEMOTE, REMOVE, MUTE, UNMUTE, BAN, UNBAN, SLOW_MODE, LOCK,
                  UNLOCK, TRANSFER)
#: Actions on the room itself: they name no user.
ROOM_ACTIONS: Final = (SLOW_MODE, LOCK, UNLOCK)
#: Actions only the owner (or an admin) takes.
OWNER_ACTIONS: Final = (PROMOTE, DEMOTE, TRANSFER)
MAX_MUTE_S: Final = 30 * 86400
MAX_SLOW_MODE_S: Final = 3600
MAX_REASON: Final = MAX_MODERATION_REASON
#: The request body's fields.
FIELDS: Final = ("action", "user", "seconds", "reason")
#: Most a body can be: a reason of MAX_REASON characters, each JSON-escaped to 6 bytes.
BODY_BYTES: Final = 6 * MAX_REASON + 6 * 128 + 128


class BadRequest(ValueError):
    """The body is malformed: 400 ``bad_request`` naming *field*."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class Refusal(Exception):
    """A well-formed action that may not be taken now: *status* and *code* go out."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Action:
    """One checked request: *user* None for a room action, *seconds* only for mute
    (1..30 days) and slow_mode (0..3600, 0 = off), *reason* "" when not given."""

    action: str
    user: str | None = None
    seconds: int | None = None
    reason: str = ""


def parse(data: dict[str, Any]) -> Action:
    """The checked action of a request body (its keys are :data:`FIELDS` already);
    raises :exc:`BadRequest`."""
    action = data.get("action")
    if action not in ACTIONS:
        raise BadRequest(f"action must be one of {', '.join(ACTIONS)}", "action")
    user = data.get("user")
    if action in ROOM_ACTIONS:
        if user is not None:
            raise BadRequest(f"{action} is an action on the room: it names no user", "user")
    elif not ids.is_user_id(user):
        raise BadRequest(f"{action} needs user: a user id (1..128 printable characters)",
                         "user")
    seconds = data.get("seconds")
    if action in (MUTE, SLOW_MODE):
        low, high = (1, MAX_MUTE_S) if action == MUTE else (0, MAX_SLOW_MODE_S)
        if not isinstance(seconds, int) or isinstance(seconds, bool) \
                or not low <= seconds <= high:
            raise BadRequest(f"{action} needs seconds: an integer from {low} to {high}",
                             "seconds")
    elif seconds is not None:
        raise BadRequest("seconds is for mute and slow_mode only", "seconds")
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise BadRequest(f"reason must be text of at most {MAX_REASON} characters",
                         "reason")
    return Action(str(action), None if user is None else str(user), seconds, reason)


@dataclass(frozen=True)
class State:
    """What :func:`check` needs to know of the room now.

    *actor_role* / *target_role*: their roles in the room (None: not a member);
    *admin*: the actor's token has the admin role; *target_banned*, *target_muted*
    (muted until later than now), *locked*: the room's state."""

    actor_role: str | None
    admin: bool = False
    target_role: str | None = None
    target_banned: bool = False
    target_muted: bool = False
    locked: bool = False


def may_moderate(role: str | None, admin: bool) -> bool:
    """Who may moderate a room at all: its owner, its moderators, an admin."""
    return admin or role in (OWNER, MODERATOR)


def check(act: Action, state: State) -> None:
    """Allow *act* in *state*, or raise :exc:`Refusal`. Rights first (403), then the
    target (404 ``not_member``, 409 ``owner_stays``), then state (409 ``already``)."""
    admin, actor = state.admin, state.actor_role
    if not may_moderate(actor, admin):
        raise Refusal(403, "forbidden", "only the room's owner, its moderators or an admin "
                      "may moderate it")
    if act.action in OWNER_ACTIONS and not (admin or actor == OWNER):
        raise Refusal(403, "forbidden", f"only the room's owner or an admin may {act.action}")
    if act.action in ROOM_ACTIONS:
        if act.action == LOCK and state.locked:
            raise Refusal(409, "already", "the room is locked already")
        if act.action == UNLOCK and not state.locked:
            raise Refusal(409, "already", "the room is not locked")
        return
    target = state.target_role
    if target is None and act.action not in (BAN, UNBAN):
        raise Refusal(404, "not_member", f"{act.user} is not a member of the room")
    # A moderator acts on plain members only (not on the owner, nor on a moderator,
    # themself included); the owner and admins on everyone but the owner.
    if not admin and actor == MODERATOR and target in (OWNER, MODERATOR):
        raise Refusal(403, "forbidden", "a moderator acts on members only, not on the "
                      "owner or another moderator")
    if target == OWNER and act.action != UNMUTE:
        if act.action == TRANSFER:
            raise Refusal(409, "already", f"{act.user} owns the room already")
        raise Refusal(409, "owner_stays", f"{act.user} owns the room: the owner is never "
                      f"{act.action}d; transfer the room first")
    if act.action == PROMOTE and target == MODERATOR:
        raise Refusal(409, "already", f"{act.user} is a moderator already")
    if act.action == DEMOTE and target == MEMBER:
        raise Refusal(409, "already", f"{act.user} is not a moderator")
    if act.action == BAN and state.target_banned:
        raise Refusal(409, "already", f"{act.user} is banned already")
    if act.action == UNBAN and not state.target_banned:
        raise Refusal(409, "already", f"{act.user} is not banned")
    if act.action == UNMUTE and not state.target_muted:
        raise Refusal(409, "already", f"{act.user} is not muted")


#: The member event each action publishes to the gateways (docs/moderation.md): its
#: ``action``; None: none (an unban changes no one's hold on the room).
MEMBER_EVENTS: Final[dict[str, str | None]] = {
    PROMOTE: "role", DEMOTE: "role", TRANSFER: "role", REMOVE: "removed", BAN: "removed",
    MUTE: "muted", UNMUTE: "unmuted", UNBAN: None, SLOW_MODE: "room", LOCK: "room",
    UNLOCK: "room"}
