"""Reads of the messages collection that must not read a room's whole history: the
sequencer's ``last_seqs`` and history pages scrolling back (``before``). The embedded
database reads every message of the room for a descending sort with a limit."""

from __future__ import annotations

import pytest

from burrow.core.envelopes import Stored
from burrow.storage.messages import Database, MessageStore

pytestmark = pytest.mark.integration

SIZES = {"empty": 0, "one": 1, "edge": 64, "past-edge": 65, "big": 5000}


def message(room: str, seq: int) -> dict[str, object]:
    return Stored(id=f"{room}-{seq}", room=room, seq=seq, sender="s", client_id=f"c{seq}",
                  body="x", ts=0).to_document()


async def test_last_seqs_are_exact_for_dense_and_gapped_histories(db: Database) -> None:
    store = MessageStore(db)
    await store.ensure_indexes()
    docs = [message(room, seq) for room, n in SIZES.items() for seq in range(1, n + 1)]
    # not dense: imported by hand, with holes; the answer is still the highest seq
    docs += [message("gapped", seq) for seq in (1, 2, 3, 70, 71, 900)]
    await db.messages.insert_many(docs)
    expected = {**SIZES, "gapped": 900, "unknown": 0}
    assert await store.last_seqs(expected) == expected

    # the big room is answered by index probes, not by reading its 5,000 messages
    await db.command("profile", 2, slowms=0)
    assert await store.last_seqs(["big"]) == {"big": 5000}
    await db.command("profile", 0)
    reads = [p async for p in db["system.profile"].find({"ns": {"$regex": r"\.messages$"}})]
    assert 1 <= len(reads) <= 6
    for read in reads:
        seq = read["command"]["filter"]["seq"]
        assert "$in" in seq or "$gt" in seq, read["command"]
        assert len(seq.get("$in", [])) <= 64


async def test_scrolling_back_gives_the_newest_messages_below_before(db: Database) -> None:
    store = MessageStore(db)
    await store.ensure_indexes()
    gapped = [1, 2, 3, 70, 71, 300, 301, 302, 900, 1000, 1001]
    await db.messages.insert_many([message("dense", s) for s in range(1, 301)]
                                  + [message("gapped", s) for s in gapped])
    rooms = {"dense": list(range(1, 301)), "gapped": gapped}
    for room, seqs in rooms.items():
        for before in (1, 2, 3, 50, 71, 72, 301, 302, 303, 1002, 5000):
            for limit in (1, 2, 3, 5, 100, 500):
                page = await store.history(room, before=before, limit=limit)
                want = [s for s in seqs if s < before][-limit:]
                assert [m.seq for m in page] == want, (room, before, limit)
    # one read in a dense room, whatever lies below
    await db.command("profile", 2, slowms=0)
    assert [m.seq for m in await store.history("dense", before=251, limit=50)] == \
        list(range(201, 251))
    await db.command("profile", 0)
    reads = [p async for p in db["system.profile"].find({"ns": {"$regex": r"\.messages$"}})]
    assert [r["command"]["filter"]["seq"] for r in reads] == [{"$gt": 200, "$lt": 251}]
