"""Message changes (edit, delete, reaction) as room events: the decisions, without I/O.

A change is sent like a message and numbered in the room's one order (G2), but the
sequencer first asks :func:`decide` whether it is allowed, given the target message's
stored state (:class:`Target`), the actor's role in the room and ``now``. A refused
change is not stored and gets no seq: its sender is answered with an error frame
(:exc:`Refused`) in place of the ack. Decisions within a batch are made in order on a
state that each accepted change advances, so an edit after a delete of the same batch
is refused as it would be in two batches.

Applying an accepted change to its target is planned by :func:`apply`, which is
idempotent and order-safe: every write it plans is guarded by the target's
``changed_seq`` (the seq of the last edit or delete applied), so applying an event
again, or an older event after a newer one (a crash between storing and applying,
then redelivery), changes nothing. A delete is absorbing: it empties every stored
text and no later edit applies to a deleted message. Reactions live in their own
documents, one per (message, user, emoji), each holding the seq of the last reaction
event applied to it (``on``: whether it stands), so the last event by seq wins
whatever order they are applied in (:func:`reaction_key`).

A reply may answer a message of its own sequencer batch, not stored yet, when the
sender could name it before its ack: a message with attachments, whose id is derived
from its dedup key (:func:`~burrow.core.envelopes.message_id_of`). :class:`BatchParents`
finds such parents in batch order, and :class:`Lost` refuses the replies (and replies
to replies) of a parent that a later step of the batch refused, so no stored reply
ever names a message that was never stored.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from burrow.core.envelopes import EPOCH, Send, Stored, message_id_of
from burrow.core.moderation_event import MODERATION

OWNER = "owner"  # burrow.storage.rooms.OWNER (core imports nothing from storage)
MODERATOR = "moderator"  # burrow.storage.rooms.MODERATOR
MAX_EMOJI_BYTES = 64


class Refused(Exception):
    """A change that is not allowed: ``code`` goes to the sender in an error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Target:
    """What the decisions need to know of a target message (or whatever has that id)."""

    id: str
    room: str
    sender: str
    ts: int                        # ms, when it was stored
    kind: str | None = None        # None: a message; else a change event (not a target)
    deleted: bool = False
    edit_count: int = 0
    reactions: dict[str, set[str]] = field(default_factory=dict)  # emoji -> users


def valid_emoji(emoji: Any) -> bool:
    """A non-empty string of at most 64 UTF-8 bytes without control characters."""
    if not isinstance(emoji, str) or not emoji:
        return False
    try:
        size = len(emoji.encode())
    except UnicodeEncodeError:  # lone surrogates
        return False
    return size <= MAX_EMOJI_BYTES and not any(
        unicodedata.category(c) in ("Cc", "Cs") for c in emoji)


def decide(send: Send, target: Target | None, role: str | None, now_ms: int,
           edit_window: int, max_reactions: int) -> Send:
    """Allow *send* (a change) on *target*, or raise :exc:`Refused`.

    Returns the send as it will be stored (an edit carries its edit number) and
    advances *target* in place, so the next change of the batch sees it.

    A moderation event (docs/moderation.md) has no target: the gateway decided it
    already (burrow.core.moderation) and changed the room's state; here it is only
    checked to come from a trusted publisher (``admin``: set by the gateway's
    moderation route or a backend service, never by a client's frame).
    """
    if send.kind == MODERATION:
        if not send.admin:
            raise Refused("forbidden", "only the moderation route or a backend service "
                          "may send a moderation event")
        return send
    if target is None or target.room != send.room:
        raise Refused("not_found", f"no message {send.target} in room {send.room}")
    if target.kind is not None:
        raise Refused("not_found", f"{send.target} is a change event, not a message")
    if target.deleted:
        raise Refused("not_found", f"message {send.target} is deleted")
    if send.kind == "edit":
        if send.sender != target.sender:
            raise Refused("forbidden", "only the sender of a message may edit it")
        if edit_window and now_ms - target.ts > edit_window * 1000:
            raise Refused("edit_window", f"messages can be edited for {edit_window} s")
        target.edit_count += 1
        return replace(send, edit_count=target.edit_count)
    if send.kind == "delete":
        if not (send.sender == target.sender or role in (OWNER, MODERATOR) or send.admin):
            raise Refused("forbidden", "only the sender, the room's owner or moderators, "
                          "or an admin may delete a message")
        target.deleted = True
        return send
    if send.kind == "reaction":
        if not valid_emoji(send.emoji):
            raise Refused("bad_frame", f"emoji must be 1..{MAX_EMOJI_BYTES} bytes of text "
                          "without control characters")
        assert send.emoji is not None
        users = target.reactions.get(send.emoji)
        if send.remove:
            if users is not None:
                users.discard(send.sender)
                if not users:
                    del target.reactions[send.emoji]
        elif users is not None:
            users.add(send.sender)
        elif len(target.reactions) >= max_reactions:
            raise Refused("too_many_reactions",
                          f"a message carries at most {max_reactions} distinct emoji")
        else:
            target.reactions[send.emoji] = {send.sender}
        return send
    raise Refused("bad_frame", f"unknown change kind {send.kind!r}")


def change_event(send: Send, id: str, seq: int, now_ms: int) -> Stored:
    """The stored change event of an accepted *send*."""
    body = send.body if send.kind == "edit" else ""
    op = ("remove" if send.remove else "add") if send.kind == "reaction" else None
    return Stored(id=id, room=send.room, seq=seq, sender=send.sender,
                  client_id=send.client_id, body=body, ts=now_ms, kind=send.kind,
                  target=send.target, emoji=send.emoji, op=op, edit_count=send.edit_count,
                  moderation=send.moderation)


def reaction_key(message: str, user: str, emoji: str) -> str:
    """The id of the one reaction of *user* with *emoji* on *message*.

    Emoji have no control characters and ids no newline, so the key is unambiguous.
    """
    return f"{message}\n{user}\n{emoji}"


@dataclass(frozen=True)
class Write:
    """One guarded update of the target message: apply only where ``changed_seq`` is
    below *seq* (absent counts as 0), unless *always* (a delete: absorbing, the same
    values each time)."""

    target: str
    seq: int
    set: dict[str, Any]
    unset: tuple[str, ...] = ()
    always: bool = False
    purge_edits: bool = False  # also empty the bodies of the target's edit events


def apply(doc: dict[str, Any], event: Stored) -> Write | None:
    """The write that applies *event* (an edit or delete) to the target document *doc*,
    or None if it changes nothing (already applied, older than what is applied, or an
    edit of a deleted message). Advances *doc* in place for the batch's next events.

    Idempotence: an edit writes only where ``changed_seq < event.seq`` and sets
    ``changed_seq = event.seq``, so a second application, or an edit older than the
    last applied change, matches nothing; the original body is kept once, the first
    time an edit applies. A delete sets fixed values (empty texts, its own ts and
    actor) and ``changed_seq`` to at least its seq; doing that twice is doing it once.
    """
    when = EPOCH + timedelta(milliseconds=event.ts)
    if event.kind == "delete":
        doc.update(body="", deleted_at=when, deleted_by=event.sender,
                   changed_seq=max(doc.get("changed_seq", 0), event.seq))
        doc.pop("original_body", None)
        gone: dict[str, Any] = {"body": "", "deleted_at": when, "deleted_by": event.sender}
        if "attachments" in doc:  # their files go first (ChangeStore.apply)
            doc["attachments"] = gone["attachments"] = []
        return Write(event.target or "", event.seq, gone,
                     unset=("original_body",), always=True, purge_edits=True)
    if event.kind != "edit":
        return None
    if doc.get("deleted_at") is not None or doc.get("changed_seq", 0) >= event.seq:
        return None
    changes: dict[str, Any] = {"body": event.body, "edited_at": when,
                               "edit_count": event.edit_count, "changed_seq": event.seq}
    if "original_body" not in doc:
        changes["original_body"] = doc.get("body", "")
    doc.update(changes)
    return Write(event.target or "", event.seq, changes)


class BatchParents:
    """The messages of one batch that a later send of the same batch may reply to.

    Only a new message with attachments qualifies (one stored already is found in the
    database): its id is :func:`message_id_of` its dedup key, known to its sender
    before the ack. Fed in batch order, so a reply placed before its parent is refused
    as it would be in two batches.
    """

    def __init__(self) -> None:
        self.roots: dict[str, tuple[str, str]] = {}  # id -> (room, root of its thread)

    def add(self, send: Send) -> None:
        """*send* (allowed so far, not stored before) may now be replied to."""
        if send.kind is None and send.attachments:
            mid = message_id_of(send.room, send.sender, send.client_id)
            self.roots.setdefault(mid, (send.room, send.thread or mid))

    def thread_of(self, send: Send) -> str | None:
        """The root of the thread *send* replies into, if its parent is in the batch."""
        found = self.roots.get(send.reply_to or "")
        return found[1] if found is not None and found[0] == send.room else None


class Lost:
    """Ids of messages of a batch that will not be stored: a reply to one is refused."""

    def __init__(self, refused: Iterable[Send] = ()) -> None:
        self.ids: set[str] = set()
        for send in refused:
            self.lose(send)

    def lose(self, send: Send) -> None:
        if send.kind is None and send.attachments:  # else nobody can name it yet
            self.ids.add(message_id_of(send.room, send.sender, send.client_id))

    def orphaned(self, send: Send) -> Refused | None:
        """The refusal of *send* if it replies to a lost message (which it then is)."""
        if not send.reply_to or send.reply_to not in self.ids:
            return None
        self.lose(send)
        return Refused("not_found", f"no message {send.reply_to} in room {send.room}")
