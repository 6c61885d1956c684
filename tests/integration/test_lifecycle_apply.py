"""ChangeStore.apply with the targets the sequencer read to decide (no second read), and
its reaction writes in one unordered bulk write: against the real database, no stack."""

from __future__ import annotations

import copy
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from burrow.core.envelopes import Stored
from burrow.storage.changes import ChangeStore
from burrow.storage.messages import MessageStore

Db = AsyncDatabase[dict[str, Any]]


def message(id: str, seq: int, body: str = "hi") -> Stored:
    return Stored(id, "r", seq, "ann", f"c{seq}", body, 1000 * seq)


def change(id: str, seq: int, kind: str, target: str, sender: str = "ann",
           **fields: Any) -> Stored:
    return Stored(id, "r", seq, sender, f"c{seq}", fields.pop("body", ""), 1000 * seq,
                  kind=kind, target=target, **fields)


async def test_apply_starts_from_the_read_targets_and_leaves_them_as_read(db: Db) -> None:
    """The documents read to decide are applied to without being changed: a retry (or
    the same batch again) starts from them, and the guards keep it from writing twice."""
    changes = ChangeStore(db)
    await MessageStore(db).insert([message("m", 1)])
    read = await changes.read(["m", "nothing"])
    assert set(read.docs) == {"m"} and read.targets["m"].edit_count == 0
    as_read = copy.deepcopy(read.docs)
    edit = change("e", 2, "edit", "m", body="hi!", edit_count=1)
    for _ in range(2):  # the second time as after a failed write: same read, same state
        await changes.apply([edit], known=read.docs)
        assert read.docs == as_read
        doc = await db.messages.find_one({"_id": "m"})
        assert doc is not None
        assert (doc["body"], doc["original_body"], doc["edit_count"], doc["changed_seq"]) \
            == ("hi!", "hi", 1, 2), doc


async def test_reactions_go_in_one_write_where_an_older_event_loses_alone(db: Db) -> None:
    """One apply with a reaction older than the stored one, a new reaction and a delete
    of another message: the old event changes nothing, the others are all written (an
    ordered write would stop at the old one's clash), and the deleted message keeps no
    reaction, neither its old one nor the one of this batch."""
    changes = ChangeStore(db)
    await MessageStore(db).insert([message("m", 1), message("n", 2)])
    await changes.apply([change("k7", 7, "reaction", "m", "bob", emoji="👍", op="add"),
                         change("x8", 8, "reaction", "n", "bob", emoji="🎉", op="add")])
    await changes.apply([
        change("k5", 5, "reaction", "m", "bob", emoji="👍", op="remove"),  # older: loses
        change("l9", 9, "reaction", "m", "cy", emoji="👍", op="add"),
        change("y10", 10, "reaction", "n", "cy", emoji="🎉", op="add"),
        change("d11", 11, "delete", "n"),
    ])
    stored = {(r["message"], r["user"]): (r["on"], r["seq"])
              async for r in db.reactions.find({})}
    assert stored == {("m", "bob"): (True, 7), ("m", "cy"): (True, 9)}, stored
    read = await changes.read(["m", "n"], reacted=["m"])
    assert read.targets["m"].reactions == {"👍": {"bob", "cy"}}
    assert read.targets["n"].deleted and read.targets["n"].reactions == {}
