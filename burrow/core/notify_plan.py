"""Which members a batch of stored messages schedules a push or a digest for: pure code.

The notifier reads stored messages from ``notify.messages`` in batches and decides for
the whole batch at once, from one read of the rooms' memberships and one of the users,
instead of several database round trips per message (issue 14: per-message decisions
put ~6 queries per message on the database the sequencer writes to, and chat latency
went to seconds). This module holds the decisions; :mod:`consumers.notifier` does the I/O.

A **claim** marks "a job is waiting" on the member's record (``push_claim``) or the
user's (``digest_claim``) and names the message that scheduled it: ``seq`` for a push,
``room:seq`` for a digest. A claim naming a message of this batch is this batch's own
(made by an earlier delivery of it that crashed before acking): its job is published
again, which is harmless (the job's message id is the claim). A fresh claim naming
another message means a job is already waiting: this message rides along with it.

A **mention** (docs/protocol.md, mentions) does not wait and does not ride along:
:func:`plan_mentions` picks, per (room, member) mentioned by name or by @room who has
not read the message, the newest such message of the batch, and the notifier publishes
one job for it straight into ``push.due``, whatever claim the member's room push holds.
The job's id names (room, member, seq), so a redelivered batch publishes the same job
again and the per-device push log keeps a device from getting it twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from burrow.core.blocks import Blocks, is_blocked
from burrow.core.mentions import Mentions

NO_BLOCKS: Blocks = {}


@dataclass(frozen=True)
class Notice:
    """A stored message, as far as notifications care."""

    room: str
    sender: str
    seq: int
    msg_id: str | None = None
    change: bool = False  # a change event (edit, delete, reaction): never notified
    mentions: Mentions | None = None  # who the message mentions (pushed at once)


@dataclass(frozen=True)
class MemberState:
    """A membership as the batch's one read found it."""

    room: str
    user: str
    read_seq: int = 0
    pending_at: datetime | None = None  # a push job waits since then
    claim: int | None = None            # the seq whose message scheduled it


@dataclass(frozen=True)
class UserState:
    """A user with an email and digests on, as the batch's one read found them."""

    user: str
    setting: str
    pending_at: datetime | None = None
    claim: str | None = None  # "room:seq" of the message that scheduled it


def digest_key(room: str, seq: int) -> str:
    return f"{room}:{seq}"


def unread(notices: Iterable[Notice], members: Iterable[MemberState],
           blocks: Blocks = NO_BLOCKS) -> dict[tuple[str, str], int]:
    """(room, member) -> the newest message of the batch from someone else that the
    member has not read and whose sender they do not block (*blocks*: blocker -> the
    users they block); members who wrote everything of the batch in their room, or
    read it already, or block the rest's senders, are not there."""
    newest: dict[str, list[Notice]] = defaultdict(list)
    for notice in notices:
        newest[notice.room].append(notice)
    for room_notices in newest.values():
        room_notices.sort(key=lambda n: n.seq, reverse=True)
    found: dict[tuple[str, str], int] = {}
    for member in members:
        for notice in newest.get(member.room, ()):
            if notice.sender != member.user and not is_blocked(
                    blocks, member.user, notice.sender):
                if notice.seq > member.read_seq:
                    found[(member.room, member.user)] = notice.seq
                break
    return found


def _waiting(pending_at: datetime | None, stale_before: datetime) -> bool:
    """A job waits and is not presumed lost."""
    if pending_at is None:
        return False
    if pending_at.tzinfo is None and stale_before.tzinfo is not None:
        pending_at = pending_at.replace(tzinfo=UTC)  # the driver returns naive UTC
    return pending_at >= stale_before


@dataclass(frozen=True)
class PushPlan:
    """``claim``: (room, user) -> seq to claim now (then publish those the claim won);
    ``again``: (room, user) -> seq of this batch's own earlier claims, to publish again;
    ``unread``: what :func:`unread` found (the digest candidates come from it)."""

    claim: dict[tuple[str, str], int]
    again: dict[tuple[str, str], int]
    unread: dict[tuple[str, str], int]


def plan_pushes(notices: Collection[Notice], members: Iterable[MemberState],
                stale_before: datetime, blocks: Blocks = NO_BLOCKS) -> PushPlan:
    """Which unread members of the batch need a push job (before checking devices)."""
    members = list(members)
    wanted = unread(notices, members, blocks)
    ours: dict[str, set[int]] = defaultdict(set)
    for notice in notices:
        ours[notice.room].add(notice.seq)
    claim: dict[tuple[str, str], int] = {}
    again: dict[tuple[str, str], int] = {}
    for member in members:
        key = (member.room, member.user)
        if key not in wanted:
            continue
        if member.claim is not None and member.claim in ours[member.room] \
                and member.pending_at is not None:
            again[key] = member.claim
        elif not _waiting(member.pending_at, stale_before):
            claim[key] = wanted[key]
    return PushPlan(claim, again, wanted)


@dataclass(frozen=True)
class DigestPlan:
    """``claim``: user -> key to claim now; ``again``: user -> this batch's own key."""

    claim: dict[str, str]
    again: dict[str, str]


def digest_candidates(wanted: Mapping[tuple[str, str], int]) -> dict[str, str]:
    """user -> the key a digest claim of theirs names: their first unread message of the
    batch in (room, seq) order, so that every delivery of the batch names the same."""
    found: dict[str, str] = {}
    for (room, user), seq in sorted(wanted.items()):
        found.setdefault(user, digest_key(room, seq))
    return found


def plan_digests(notices: Collection[Notice], candidates: Mapping[str, str],
                 users: Iterable[UserState], stale_before: datetime) -> DigestPlan:
    """Which of *candidates* (user -> key) need a digest job; *users* are those of them
    with an email and digests on."""
    ours = {digest_key(n.room, n.seq) for n in notices}
    claim: dict[str, str] = {}
    again: dict[str, str] = {}
    for state in users:
        if state.user not in candidates:
            continue
        if state.claim is not None and state.claim in ours and state.pending_at is not None:
            again[state.user] = state.claim
        elif not _waiting(state.pending_at, stale_before):
            claim[state.user] = candidates[state.user]
    return DigestPlan(claim, again)


def plan_mentions(notices: Iterable[Notice], members: Iterable[MemberState],
                  blocks: Blocks = NO_BLOCKS) -> dict[tuple[str, str], int]:
    """(room, member) -> the newest seq of the batch that mentions the member (by name
    or @room) and that they have not read; the sender is never mentioned to themself,
    nor a member who blocks the sender, and only members count (one who left is not
    pushed)."""
    mentioning: dict[str, list[Notice]] = defaultdict(list)
    for notice in notices:
        if notice.mentions and not notice.change:
            mentioning[notice.room].append(notice)
    if not mentioning:
        return {}
    found: dict[tuple[str, str], int] = {}
    for member in members:
        for notice in mentioning.get(member.room, ()):
            if (notice.sender == member.user or notice.seq <= member.read_seq
                    or is_blocked(blocks, member.user, notice.sender)):
                continue
            assert notice.mentions is not None
            if notice.mentions.names(member.user):
                key = (member.room, member.user)
                found[key] = max(found.get(key, 0), notice.seq)
    return found


def mention_key(room: str, user: str, seq: int) -> str:
    """The id of a mention's push job and of its notification (the same every time)."""
    return f"mention:{room}:{user}:{seq}"


def mention_text(sender: str, preview: str | None, room: bool) -> str:
    """The body of a mention's push: ``alice mentioned you: <preview>``, ``alice
    mentioned @room: ...``; without previews (None) only who mentioned."""
    said = f"{sender} mentioned {'@room' if room else 'you'}"
    return said if preview is None else f"{said}: {preview}"
