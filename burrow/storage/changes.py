"""Change events applied to their targets: edits, deletes, reactions (MongoDB writes).

The events themselves are stored by :class:`~burrow.storage.messages.MessageStore` like
messages (their own seq, their own document with a ``kind``); this store reads what
:func:`burrow.core.lifecycle.decide` needs of their targets and applies the events the
sequencer stored or found stored again, with the guards that make applying idempotent
and order-safe (:func:`burrow.core.lifecycle.apply`):

- an edit updates its target only where ``changed_seq`` is below its seq;
- a delete writes fixed values (empty body, no original body, no attachments,
  ``deleted_at``, who) and empties the bodies of the target's edit events, every time
  it is applied; the target's attachment files are deleted before (the files store's
  ``delete_for_message``, a no-op for files already gone);
- a reaction upserts the document ``reactions[(message, user, emoji)]`` only where
  its ``seq`` is below the event's, so the reaction's state is that of its last event
  by seq whatever the order or number of applications (an upsert that meets a newer
  document clashes on ``_id`` and is dropped: the newer one wins);
- a deleted message keeps no reaction: a delete removes the reaction documents of its
  target, and a reaction event applied to a deleted message (a client repeating an old
  reaction frame after the delete, a redelivery) writes nothing.

:meth:`ChangeStore.read` counts a message as deleted as soon as a delete event for
it is stored, applied or not, so a change decided after a delete whose application was
cut short is refused, never accepted and fanned out with a body.

Nearly every sequencer batch holds a change under a mixed load, so its round trips are
paid by every send of the shard: the reads to decide go out together, the documents
read are the ones applied to (no second read), and the reaction writes are one bulk
write sent beside the target writes (bench/results/mixperf/).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import ASCENDING, DeleteMany, UpdateMany, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from burrow.core import lifecycle
from burrow.core.envelopes import EPOCH, Stored
from burrow.core.lifecycle import Target

Database = AsyncDatabase[dict[str, Any]]


class Files(Protocol):
    async def delete_for_message(self, message_id: str) -> int: ...


@dataclass(frozen=True)
class Read:
    """Targets as :func:`lifecycle.decide` sees them, and their stored documents."""

    targets: dict[str, Target]
    docs: dict[str, dict[str, Any]]


class ChangeStore:
    def __init__(self, db: Database, files: Files | None = None) -> None:
        self.messages = db["messages"]
        self.reactions = db["reactions"]
        self.files = files  # the attachments store: a delete deletes the target's files

    async def ensure_indexes(self) -> None:
        await self.reactions.create_index([("message", ASCENDING)], name="message")
        await self.messages.create_index([("target", ASCENDING)], name="target",
                                         sparse=True)
        # No partial index per kind: a query on target and kind is answered from this
        # sparse index on the embedded database (10 targets among 10,000 change events:
        # 8 ms), and each more index on messages costs every insert of every plain send
        # (two partial ones: +11-17 % per batch insert, measured; bench/RESULTS.md).

    async def targets(self, ids: Iterable[str], reacted: Iterable[str] | None = None
                      ) -> dict[str, Target]:
        """The current state of the messages *ids* (those that exist), with reactions."""
        return (await self.read(ids, reacted)).targets

    async def read(self, ids: Iterable[str], reacted: Iterable[str] | None = None) -> Read:
        """What :func:`lifecycle.decide` needs of the messages *ids*, and their documents
        for :meth:`apply` (which then need not read them again).

        The reactions are read only for *reacted* (default: all of *ids*): an edit or a
        delete is decided without them. The three reads go out together; each names the
        wanted ids alone (no condition beside an ``$in`` of ``_id``: docs/database.md).
        """
        wanted = sorted(set(ids))
        if not wanted:
            return Read({}, {})
        on = wanted if reacted is None else sorted(set(reacted) & set(wanted))

        async def messages() -> list[dict[str, Any]]:
            return [d async for d in self.messages.find({"_id": {"$in": wanted}})]

        async def deletes() -> set[str]:
            # A delete stored but not yet applied (its sequencer died in between, or its
            # batch was given back and is still to come again) deletes as surely as an
            # applied one: no change after it may be accepted (issue 16, gap 1).
            return {e["target"] async for e in self.messages.find(
                {"target": {"$in": wanted}, "kind": "delete"}, {"target": 1})}

        async def reactions() -> list[dict[str, Any]]:
            if not on:
                return []
            # ``on`` filtered here: with it in the query, a collection scan
            return [r async for r in self.reactions.find({"message": {"$in": on}})]

        docs, deleted, reacts = await asyncio.gather(messages(), deletes(), reactions())
        found: dict[str, Target] = {}
        for doc in docs:
            found[doc["_id"]] = Target(
                doc["_id"], doc["room"], doc["sender"],
                _ms(doc["ts"]), doc.get("kind"),
                doc.get("deleted_at") is not None or doc["_id"] in deleted,
                doc.get("edit_count", 0))
        for r in reacts:
            if r["on"] and r["message"] in found:
                found[r["message"]].reactions.setdefault(r["emoji"], set()).add(r["user"])
        return Read(found, {d["_id"]: d for d in docs})

    async def apply(self, events: Sequence[Stored],
                    known: Mapping[str, dict[str, Any]] | None = None) -> None:
        """Apply stored change *events* (any order, any number of times) to targets.

        *known*: target documents read for this batch already (:meth:`read`, before the
        batch was stored); only the other targets are read, in one query. They are
        copied, never changed: a retry after a failed write starts from them again,
        and every write is guarded in the database, so a write that got in before the
        failure matches nothing the second time.
        """
        events = sorted(events, key=lambda e: (e.room, e.seq))
        read = known or {}
        docs = {t: dict(read[t]) for t in {e.target or "" for e in events} if t in read}
        if missing := {e.target for e in events if e.target and e.target not in docs}:
            async for found in self.messages.find({"_id": {"$in": sorted(missing)}}):
                docs[found["_id"]] = found
        edits = [e for e in events if e.kind in ("edit", "delete")]
        writes: list[UpdateOne | UpdateMany] = []
        for event in edits:
            doc = docs.get(event.target or "")
            if doc is None:
                continue
            if event.kind == "delete" and doc.get("attachments") and self.files:
                # Files first, then the tombstone that forgets them: a delete cut
                # short in between is applied again on redelivery, finding the
                # list still there; deleting files already gone deletes nothing.
                await self.files.delete_for_message(doc["_id"])
            write = lifecycle.apply(doc, event)
            if write is None:
                continue
            if write.purge_edits:
                # target first: the embedded database plans by the first field (kind
                # first took 2.7 ms of its CPU, target first 1.5, among 30,000 messages)
                writes.append(UpdateMany({"target": write.target, "kind": "edit"},
                                         {"$set": {"body": ""}}))
                update: dict[str, Any] = {"$set": write.set,
                                          "$max": {"changed_seq": write.seq}}
                if write.unset:
                    update["$unset"] = {name: "" for name in write.unset}
                writes.append(UpdateOne({"_id": write.target}, update))
            else:
                writes.append(UpdateOne(
                    {"_id": write.target, "deleted_at": None,
                     "changed_seq": {"$not": {"$gte": write.seq}}},
                    {"$set": write.set}))
        deleted = {e.target for e in edits if e.kind == "delete" and e.target}
        # A deleted message gets no reaction back, and one deleted here none either: the
        # reaction writes below never touch a message whose reactions the delete removes,
        # so their order does not matter and they go in one unordered bulk write.
        gone = deleted | {i for i, d in docs.items() if d.get("deleted_at") is not None}
        reacting = [e for e in events if e.kind == "reaction" and e.target not in gone]
        await asyncio.gather(self._write(writes), self._react(reacting, deleted))

    async def _write(self, writes: list[UpdateOne | UpdateMany]) -> None:
        if writes:
            await self.messages.bulk_write(writes, ordered=True)

    async def _react(self, events: Sequence[Stored], deleted: set[str]) -> None:
        """Each reaction event upserts its reaction document where that holds an older
        seq (a newer one clashes on ``_id`` and is dropped: it wins); the reactions of
        the *deleted* messages go (again, on a redelivered delete). One round trip."""
        writes: list[UpdateOne | DeleteMany] = []
        for event in events:
            assert event.target is not None and event.emoji is not None
            key = lifecycle.reaction_key(event.target, event.sender, event.emoji)
            writes.append(UpdateOne(
                {"_id": key, "seq": {"$lt": event.seq}},
                {"$set": {"message": event.target, "room": event.room,
                          "user": event.sender, "emoji": event.emoji,
                          "on": event.op == "add", "seq": event.seq}},
                upsert=True))
        if deleted:
            writes.append(DeleteMany({"message": {"$in": sorted(deleted)}}))
        if not writes:
            return
        try:
            await self.reactions.bulk_write(writes, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            if exc.details.get("writeConcernErrors"):
                raise
            # only clashes: a later event of those reactions is applied already

    async def reactions_of(self, ids: Sequence[str], reader: str
                           ) -> dict[str, list[dict[str, Any]]]:
        """Per message: ``[{emoji, count, me}]``, emoji in order of first reaction."""
        counts: dict[str, dict[str, list[int]]] = defaultdict(dict)
        # ``on`` is filtered here: beside ``$in`` in the query, the embedded database
        # reads the whole collection instead of the ``message`` index
        async for r in self.reactions.find({"message": {"$in": list(ids)}}
                                           ).sort("seq", ASCENDING):
            if not r["on"]:
                continue
            entry = counts[r["message"]].setdefault(r["emoji"], [0, 0])
            entry[0] += 1
            entry[1] |= r["user"] == reader
        return {m: [{"emoji": e, "count": c, "me": bool(me)} for e, (c, me) in by.items()]
                for m, by in counts.items()}

    async def versions(self, room: str, message: str) -> list[dict[str, Any]] | None:
        """The bodies *message* had, oldest first; None if no such message in *room*."""
        doc = await self.messages.find_one({"_id": message, "room": room})
        if doc is None or doc.get("kind") is not None:
            return None
        if doc.get("deleted_at") is not None:
            return []
        original = doc.get("original_body", doc["body"])
        found = [{"seq": doc["seq"], "id": doc["_id"], "ts": _ms(doc["ts"]),
                  "body": original}]
        # (the edits of a message are in its room; with room in the query the embedded
        # database read the whole collection instead of the target index)
        async for edit in self.messages.find({"kind": "edit", "target": message}
                                             ).sort("seq", ASCENDING):
            found.append({"seq": edit["seq"], "id": edit["_id"], "ts": _ms(edit["ts"]),
                          "body": edit["body"], "edit_count": edit.get("edit_count")})
        return found


def _ms(value: Any) -> int:
    return int((value - EPOCH).total_seconds() * 1000)
