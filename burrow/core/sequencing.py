"""The sequencer's decisions, without I/O: deduplicate sends and number them per room.

One active sequencer per shard is the only writer of its rooms, so it can keep each
room's last seq in memory and number a whole batch at once. It learns a room's last seq
from the database the first time it sees the room (after a failover the new sequencer
starts empty) and forgets it when the database refuses a seq as taken: the unique
(room, seq) index is the fence against a second writer.

Storing is optimistic (:func:`store_batch`): a batch is numbered as if every send were
new and inserted in one round trip. Only when a unique index refuses part of it (a
redelivered send, or a seq another writer took) does it look the batch's sends up and
number it again. The lookup costs a query per batch (on the embedded database it was a
scan of the collection); skipping it when nothing clashes took the database's CPU from
17 to 5 s and the e2e p50 from 1 s to 13 ms in a 200 sends/s run (bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from burrow.core.envelopes import Send, Stored, message_id_of
from burrow.core.lifecycle import change_event

T = TypeVar("T")  # whatever the adapter needs to answer a send (its delivery, reply address)
DedupKey = tuple[str, str, str]

# How often a batch is numbered again after a unique index refused part of it. The first
# clash of a redelivered batch costs one more attempt; more mean another writer keeps
# taking this shard's seqs.
MAX_ATTEMPTS = 6


class Clash(Exception):
    """A unique index refused a message of an ordered insert; those before it are stored.

    *rooms* are the rooms of the refused message and of every message after it.
    """

    def __init__(self, rooms: set[str]) -> None:
        super().__init__(f"unique index clash in {sorted(rooms)}")
        self.rooms = rooms


class Storage(Protocol):
    """What :func:`store_batch` needs of the messages collection."""

    async def last_seqs(self, rooms: Iterable[str]) -> dict[str, int]: ...

    async def existing(self, keys: Sequence[DedupKey]) -> dict[DedupKey, Stored]: ...

    async def insert(self, messages: Sequence[Stored]) -> None:
        """Insert in order, stopping at the first clash (raised as :exc:`Clash`)."""


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What became of one send: the stored message it is (new or already stored)."""

    send: Send
    ref: T
    stored: Stored
    duplicate: bool


@dataclass(frozen=True)
class Plan(Generic[T]):
    new: list[Stored]            # to insert, in seq order per room
    outcomes: list[Outcome[T]]   # one per send, in the order of the batch


def dedup_key(send: Send) -> DedupKey:
    return (send.room, send.sender, send.client_id)


class Numbering:
    """Each known room's last assigned seq. Call :meth:`missing`, then :meth:`plan`."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def missing(self, sends: Iterable[Send]) -> set[str]:
        """Rooms whose last seq must be read from the database before :meth:`plan`."""
        return {s.room for s in sends if s.room not in self.last}

    def learn(self, last: Mapping[str, int]) -> None:
        self.last.update(last)

    def forget(self, rooms: Iterable[str]) -> None:
        """Drop what is known of *rooms* (their seq was taken by another writer)."""
        for room in rooms:
            self.last.pop(room, None)

    def plan(self, batch: Sequence[tuple[Send, T]], existing: Mapping[DedupKey, Stored],
             now_ms: int, new_id: Callable[[], str]) -> Plan[T]:
        """Number the sends of *batch* that are not in *existing* (already stored).

        A send repeated inside the batch, or already stored, gets the stored message
        again (G3: same seq on every ack). Raises :exc:`KeyError` for a room that
        :meth:`missing` reported and nobody :meth:`learn`-ed.
        """
        seen: dict[DedupKey, Stored] = dict(existing)
        new: list[Stored] = []
        outcomes: list[Outcome[T]] = []
        for send, ref in batch:
            key = dedup_key(send)
            stored = seen.get(key)
            if stored is not None:
                outcomes.append(Outcome(send, ref, stored, duplicate=True))
                continue
            seq = self.last[send.room] + 1
            if send.kind is None:
                # with attachments: the id they were claimed for (message_id_of)
                msg_id = (message_id_of(send.room, send.sender, send.client_id)
                          if send.attachments else new_id())
                stored = Stored(id=msg_id, room=send.room, seq=seq, sender=send.sender,
                                client_id=send.client_id, body=send.body, ts=now_ms,
                                attachments=send.claimed, reply_to=send.reply_to,
                                thread=send.thread, mentions=send.mentions)
            else:
                stored = change_event(send, new_id(), seq, now_ms)
            self.last[send.room] = seq
            seen[key] = stored
            new.append(stored)
            outcomes.append(Outcome(send, ref, stored, duplicate=False))
        return Plan(new, outcomes)

    def rollback(self, plan: Plan[T]) -> None:
        """Forget the rooms of a plan whose insert failed, so they are read again."""
        self.forget({s.room for s in plan.new})


async def store_batch(numbering: Numbering, batch: Sequence[tuple[Send, T]],
                      storage: Storage, now_ms: int, new_id: Callable[[], str]) -> Plan[T]:
    """Number *batch* and store its new messages; the plan says what each send became.

    First try: no lookup, every send numbered as new. A clash (a send already stored, or
    a seq taken) leaves a stored prefix; the rooms are forgotten, the sends looked up
    (the prefix now counts as stored) and the rest numbered again from the database's
    last seqs, so no room gets a gap and no send is stored twice. Any other failure also
    forgets the plan's rooms and propagates: the caller retries the whole batch, whose
    stored prefix then clashes like a redelivery.
    """
    look_up = False
    for _ in range(MAX_ATTEMPTS):
        missing = numbering.missing(send for send, _ in batch)
        if missing:
            numbering.learn(await storage.last_seqs(missing))
        existing = (await storage.existing([dedup_key(s) for s, _ in batch])
                    if look_up else {})
        plan = numbering.plan(batch, existing, now_ms, new_id)
        try:
            await storage.insert(plan.new)
        except Clash:
            numbering.rollback(plan)
            look_up = True
            continue
        except BaseException:
            numbering.rollback(plan)
            raise
        return plan
    raise Clash({send.room for send, _ in batch})
