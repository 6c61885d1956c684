"""The sequencer's mention check: every mentioned user a member, @room only in small rooms.

Called by :class:`consumers.sequencer.Sequencer` only for a batch with a send that
mentions someone (one in-memory check before; a plain batch does no I/O here). The
decision is :func:`burrow.core.mentions.refusal`; this module does its one read:
the memberships of the batch's mentioning rooms among the mentioned users, or every
membership of those rooms when one of them is mentioned with @room (its size is needed).
A refused send is not stored and gets no seq; its sender gets the error in place of
the ack, like a reply to an unknown message.

A send refused here may have been stored before (a redelivered batch, a client
repeating its client_id) by a check that passed then (the member left since): only in
that rare case is the message store asked, and a stored send goes on to dedup, which
answers it with its stored message as always.
"""

from __future__ import annotations

from typing import TypeVar

from burrow.core.envelopes import Send
from burrow.core.lifecycle import Refused
from burrow.core.mentions import refusal
from burrow.core.sequencing import dedup_key
from burrow.storage.messages import MessageStore
from burrow.storage.rooms import RoomStore

R = TypeVar("R")


async def check(rooms: RoomStore, messages: MessageStore, room_limit: int,
                sends: list[tuple[Send, R]]
                ) -> tuple[list[tuple[Send, R]], list[tuple[Send, R, Refused]]]:
    """(allowed, refused) of *sends*, in order; only sends with mentions are looked at."""
    mentioning = [send for send, _ in sends if send.mentions]
    whole = any(s.mentions.room for s in mentioning if s.mentions)
    members = await rooms.members_among(
        {s.room for s in mentioning},
        None if whole else {u for s in mentioning if s.mentions for u in s.mentions.users})
    decisions: list[Refused | None] = []
    for send, _ in sends:
        found = None if not send.mentions else refusal(
            send.mentions, members.get(send.room, set()),
            len(members.get(send.room, ())), room_limit)
        decisions.append(None if found is None else Refused(*found))
    if any(decisions):  # rare: a send stored already goes on to dedup whatever the members
        stored = await messages.existing(
            [dedup_key(s) for (s, _), d in zip(sends, decisions, strict=True) if d])
        decisions = [None if d and dedup_key(s) in stored else d
                     for (s, _), d in zip(sends, decisions, strict=True)]
    return ([(s, r) for (s, r), d in zip(sends, decisions, strict=True) if d is None],
            [(s, r, d) for (s, r), d in zip(sends, decisions, strict=True) if d is not None])
