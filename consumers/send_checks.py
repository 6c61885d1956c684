"""The sequencer's checks of a batch's replies and attachments, before it is numbered.

Each takes the batch's sends with their reply handles (``R``: whatever the caller
answers with), in order, and returns those allowed and those refused with the reason, so
the sequencer stores the first and answers the second with an error in place of an ack.
Both do their I/O once per batch and only for batches that need it (the sequencer
checks in memory first); the decisions themselves are in :mod:`burrow.core.lifecycle`.
The mention check is :mod:`consumers.mention_check`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

from burrow.core import lifecycle
from burrow.core.envelopes import Send, message_id_of
from burrow.core.lifecycle import Refused
from burrow.core.sequencing import dedup_key
from burrow.storage import attachments
from burrow.storage.messages import MessageStore

R = TypeVar("R")


class Claims(Protocol):
    """The attachment store as the claim sees it (GridFS or S3: the same records)."""

    async def claim(self, file_ids: Iterable[str], room: str, sender: str,
                    message_id: str) -> list[attachments.Attachment]: ...


async def thread(store: MessageStore, sends: list[tuple[Send, R]]
                 ) -> tuple[list[tuple[Send, R]], list[tuple[Send, R, Refused]]]:
    """The thread of each reply of the batch: the root of the message it answers
    if that is a reply itself, else that message. A reply to a message that does
    not exist, is in another room or is a change event is refused ``not_found``
    (nothing stored, no seq). One read for the batch's parents; a reply stored
    already is not looked at again (dedup answers it with the stored message).
    A parent earlier in the same batch, not stored yet, is found there when its id
    could be known before its ack (a message with attachments:
    :class:`lifecycle.BatchParents`); the sends with attachments are looked up with
    the replies, in the same read, to tell new ones from stored ones.
    """
    replies = [send for send, _ in sends if send.reply_to]
    with_files = [send for send, _ in sends if send.kind is None and send.attachments]
    stored = await store.existing([dedup_key(s) for s in replies + with_files])
    parents = await store.parents(
        s.reply_to for s in replies if s.reply_to and dedup_key(s) not in stored)
    in_batch = lifecycle.BatchParents()
    allowed: list[tuple[Send, R]] = []
    refused: list[tuple[Send, R, Refused]] = []
    for send, reply in sends:
        if dedup_key(send) in stored:
            allowed.append((send, reply))
            continue
        if send.reply_to:
            parent = parents.get(send.reply_to)
            if parent is not None and parent.room == send.room and parent.kind is None:
                thread: str | None = parent.thread or parent.id
            else:
                thread = in_batch.thread_of(send)
            if thread is None:
                refused.append((send, reply, Refused(
                    "not_found", f"no message {send.reply_to} in room {send.room}")))
                continue
            send = dataclasses.replace(send, thread=thread)
        in_batch.add(send)
        allowed.append((send, reply))
    return allowed, refused


async def claim(store: MessageStore, files: Claims, sends: list[tuple[Send, R]]
                ) -> tuple[list[tuple[Send, R]], list[tuple[Send, R, Refused]]]:
    """Attach the uploads each message of the batch names to it, before it is
    numbered: a send whose uploads cannot all be claimed is refused (nothing stored,
    no seq, its uploads left pending), like a refused change.

    The claim is made for the id the message will have, :func:`message_id_of` its
    dedup key, so it is idempotent across retries: a redelivery after a crash
    between this claim and the store, or the client repeating its client_id, claims
    the same uploads for the same id again, which the store allows (they are
    attached to this very message) and answers with the same records. A send stored
    already is not claimed again: dedup answers it with the stored message (and its
    attachments), whatever its uploads became since. A reply to a message of the
    batch refused here is refused too, before its own uploads are claimed.
    """
    with_files = [send for send, _ in sends if send.attachments]
    stored = await store.existing([dedup_key(s) for s in with_files])
    claimed: dict[tuple[str, str, str], tuple[dict[str, Any], ...] | Refused] = {}
    allowed: list[tuple[Send, R]] = []
    refused: list[tuple[Send, R, Refused]] = []
    lost = lifecycle.Lost()
    for send, reply in sends:
        key = dedup_key(send)
        if (orphan := lost.orphaned(send)) is not None:
            refused.append((send, reply, orphan))
            continue
        if not send.attachments or key in stored:
            allowed.append((send, reply))
            continue
        if key not in claimed:  # the same send twice in a batch: claimed once
            try:
                found = await files.claim(
                    send.attachments, send.room, send.sender,
                    message_id_of(send.room, send.sender, send.client_id))
                claimed[key] = tuple(_reference(a) for a in found)
            except attachments.Refused as exc:
                claimed[key] = Refused(exc.code, exc.message)
        outcome = claimed[key]
        if isinstance(outcome, Refused):
            refused.append((send, reply, outcome))
            lost.lose(send)
        else:
            allowed.append((dataclasses.replace(send, claimed=outcome), reply))
    return allowed, refused


def orphans(sends: list[tuple[Send, R]], lost: lifecycle.Lost
             ) -> tuple[list[tuple[Send, R]], list[tuple[Send, R, Refused]]]:
    """Refuse the replies to messages of the batch that an earlier step refused."""
    allowed: list[tuple[Send, R]] = []
    refused: list[tuple[Send, R, Refused]] = []
    for send, reply in sends:
        if (orphan := lost.orphaned(send)) is not None:
            refused.append((send, reply, orphan))
        else:
            allowed.append((send, reply))
    return allowed, refused


def _reference(found: attachments.Attachment) -> dict[str, Any]:
    """What a message carries of an attachment: no dimensions for a file without."""
    return {k: v for k, v in found.reference().items() if v is not None}
