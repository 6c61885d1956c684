"""The sequencer's decisions, without I/O: deduplicate sends and number them per room.

One active sequencer per shard is the only writer of its rooms, so it can keep each
room's last seq in memory and number a whole batch at once. It learns a room's last seq
from the database the first time it sees the room (after a failover the new sequencer
starts empty) and forgets it when the database refuses a seq as taken: the unique
(room, seq) index is the fence against a second writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from burrow.envelopes import Send, Stored

T = TypeVar("T")  # whatever the adapter needs to answer a send (its delivery, reply address)
DedupKey = tuple[str, str, str]


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
            stored = Stored(id=new_id(), room=send.room, seq=seq, sender=send.sender,
                            client_id=send.client_id, body=send.body, ts=now_ms)
            self.last[send.room] = seq
            seen[key] = stored
            new.append(stored)
            outcomes.append(Outcome(send, ref, stored, duplicate=False))
        return Plan(new, outcomes)

    def rollback(self, plan: Plan[T]) -> None:
        """Forget the rooms of a plan whose insert failed, so they are read again."""
        self.forget({s.room for s in plan.new})
