"""A client's view of a room under the mixed workload, and the convergence check.

Pure: no I/O. :class:`RoomView` is the client-side reducer a real v2 client runs: it
applies ``message``, ``edit``, ``delete`` and ``reaction`` frames in seq order (a frame
whose seq it has already applied is dropped, as docs/protocol.md asks) and keeps every
message's current state. :func:`converge` compares, at the end of a run, each client's
view with the stored state of its room read back through the history API (v2): every
receiver of a room must show the same messages with the same bodies, edit counts,
tombstones and reactions as the database, and the room's stored seqs (messages and
change events together) must be 1..n without a gap or a duplicate.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CHANGES = frozenset({"edit", "delete", "reaction"})
DELIVERED = CHANGES | {"message"}  # the frames that take a seq


class Pool:
    """Ids to pick from at random, with O(1) add, remove and pick (swap with the last)."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._where

    def add(self, item: str) -> None:
        if item not in self._where:
            self._where[item] = len(self._items)
            self._items.append(item)

    def remove(self, item: str) -> None:
        where = self._where.pop(item, None)
        if where is None:
            return
        last = self._items.pop()
        if where < len(self._items):
            self._items[where] = last
            self._where[last] = where

    def pick(self, rng: random.Random) -> str | None:
        return self._items[rng.randrange(len(self._items))] if self._items else None


@dataclass
class Message:
    """One message as a client shows it."""

    sender: str
    body: str
    edit_count: int = 0
    deleted: bool = False
    reactions: dict[str, set[str]] = field(default_factory=dict)  # emoji -> users

    def state(self) -> tuple[Any, ...]:
        """What must be equal everywhere: sender, body, edits, tombstone, reaction counts."""
        counts = tuple(sorted((e, len(u)) for e, u in self.reactions.items() if u))
        return (self.sender, self.body, self.edit_count, self.deleted, counts)


class RoomView:
    """The state of one room as *user* sees it, from the frames it received.

    ``alive`` holds the messages not deleted (reaction targets), ``own`` those of them
    that *user* sent (edit and delete targets); :meth:`retire` takes a message out of both
    as soon as its delete is sent, so that nothing else targets it meanwhile.
    """

    def __init__(self, user: str) -> None:
        self.user = user
        self.messages: dict[str, Message] = {}
        self.last_seq = 0
        self.applied = 0      # frames applied (distinct seqs, since seqs only grow)
        self.dropped = 0      # frames dropped: seq not above the last applied
        self.orphans = 0      # changes of a message this view does not hold
        self.alive = Pool()
        self.own = Pool()

    def apply(self, frame: Mapping[str, Any]) -> None:
        seq = frame["seq"]
        if seq <= self.last_seq:
            self.dropped += 1
            return
        self.last_seq = seq
        self.applied += 1
        kind = frame["type"]
        if kind == "message":
            message = Message(frame["sender"], frame["body"], frame.get("edit_count") or 0,
                              frame.get("deleted_at") is not None)
            self.messages[frame["id"]] = message
            if not message.deleted:
                self.alive.add(frame["id"])
                if message.sender == self.user:
                    self.own.add(frame["id"])
            return
        target = frame["target"]
        found = self.messages.get(target)
        if found is None:
            self.orphans += 1
            return
        if kind == "delete":
            found.deleted, found.body = True, ""
            found.reactions.clear()
            self.retire(target)
        elif found.deleted:
            return  # a delete is absorbing (the server refuses later changes anyway)
        elif kind == "edit":
            found.body, found.edit_count = frame["body"], frame["edit_count"]
        elif kind == "reaction":
            users = found.reactions.setdefault(frame["emoji"], set())
            if frame["op"] == "remove":
                users.discard(frame["sender"])
            else:
                users.add(frame["sender"])

    def retire(self, message: str) -> None:
        self.alive.remove(message)
        self.own.remove(message)

    def reacted(self, message: str, emoji: str) -> bool:
        found = self.messages.get(message)
        return found is not None and self.user in found.reactions.get(emoji, ())


def stored_state(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    """:meth:`Message.state` of a message entry of ``GET .../messages?v=2``."""
    counts = tuple(sorted((r["emoji"], r["count"]) for r in entry.get("reactions") or ()
                          if r["count"]))
    return (entry["sender"], entry["body"], entry.get("edit_count") or 0,
            entry.get("deleted_at") is not None, counts)


@dataclass(frozen=True)
class Member:
    """One client of a room at the end of the run: its index, its view, and whether it
    is the room's reader (whose token read the history: ``me`` flags are its own)."""

    client: int
    view: RoomView
    reader: bool = False


def converge(stored: Mapping[str, Sequence[Mapping[str, Any]]],
             members: Mapping[str, Sequence[Member]],
             acked: Mapping[str, tuple[str, int]], refused: Collection[str],
             examples: int = 10) -> dict[str, Any]:
    """Compare every client's view with the stored rooms (history v2 entries per room).

    Counts: rooms whose stored seqs are not exactly 1..n; acked operations not stored
    under their acked (room, seq) and client_id; refused ones stored anyway; clients that
    did not apply every stored seq once (``behind``); clients whose messages differ from
    the stored ones (``diverged``), including the reader's own ``me`` flags.
    """
    by_seq: dict[tuple[str, int], str] = {}
    stored_ids: set[str] = set()
    out: dict[str, Any] = {"rooms": len(stored), "messages": 0, "change_events": 0,
                           "rooms_with_seq_faults": 0, "acked_not_stored": 0,
                           "refused_but_stored": 0, "clients": 0, "clients_converged": 0,
                           "clients_behind": 0, "clients_diverged": 0, "examples": []}
    notes: list[str] = out["examples"]

    def note(text: str) -> None:
        if len(notes) < examples:
            notes.append(text)

    for room, entries in stored.items():
        seqs = [e["seq"] for e in entries]
        if seqs != list(range(1, len(seqs) + 1)):
            out["rooms_with_seq_faults"] += 1
            note(f"{room}: stored seqs are not 1..{len(seqs)} (gap, duplicate or order)")
        for e in entries:
            by_seq[(room, e["seq"])] = e.get("client_id") or ""
            stored_ids.add(e.get("client_id") or "")
            out["messages" if e["type"] == "message" else "change_events"] += 1
        expected = {e["id"]: stored_state(e) for e in entries if e["type"] == "message"}
        me = {(e["id"], r["emoji"]) for e in entries if e["type"] == "message"
              for r in e.get("reactions") or () if r.get("me")}
        for member in members.get(room, ()):
            out["clients"] += 1
            view = member.view
            if view.applied != len(seqs) or view.last_seq != (seqs[-1] if seqs else 0):
                out["clients_behind"] += 1
                note(f"{room}: client {member.client} applied {view.applied} frames up "
                     f"to seq {view.last_seq}, {len(seqs)} stored")
                continue
            shown = {i: m.state() for i, m in view.messages.items()}
            differ = sorted(i for i in expected.keys() | shown.keys()
                            if expected.get(i) != shown.get(i))
            if member.reader:
                mine = {(i, e) for i, m in view.messages.items() if not m.deleted
                        for e, users in m.reactions.items() if view.user in users}
                differ += sorted({i for i, _ in mine ^ me})
            if differ:
                out["clients_diverged"] += 1
                i = differ[0]
                note(f"{room}: client {member.client} shows {shown.get(i)} for {i}, "
                     f"stored {expected.get(i)}")
            else:
                out["clients_converged"] += 1
    for client_id, (room, seq) in acked.items():
        if by_seq.get((room, seq)) != client_id:
            out["acked_not_stored"] += 1
            note(f"{client_id}: acked as {room} seq {seq}, stored there: "
                 f"{by_seq.get((room, seq))}")
    for client_id in refused:
        if client_id in stored_ids:
            out["refused_but_stored"] += 1
            note(f"{client_id}: refused, yet stored")
    out["ok"] = not any(out[k] for k in ("rooms_with_seq_faults", "acked_not_stored",
                                         "refused_but_stored", "clients_behind",
                                         "clients_diverged"))
    return out
