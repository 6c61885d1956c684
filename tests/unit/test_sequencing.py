"""The sequencer's pure decisions (burrow/core/sequencing.py): dedup (G3) and numbering (G2)."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burrow.core.envelopes import Send, Stored
from burrow.core.sequencing import (
    MAX_ATTEMPTS,
    Clash,
    DedupKey,
    Numbering,
    Plan,
    dedup_key,
    store_batch,
)

NOW = 1_767_225_600_000


def send(room: str, client_id: str, sender: str = "alice", body: str = "hi") -> Send:
    return Send(room=room, sender=sender, client_id=client_id, body=body)


def id_maker(prefix: str = "id") -> Callable[[], str]:
    """A new_id for plan(): id0, id1, ..."""
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter)}"


def stored(room: str, seq: int, client_id: str, sender: str = "alice") -> Stored:
    return Stored(id=f"old-{room}-{seq}", room=room, seq=seq, sender=sender,
                  client_id=client_id, body="earlier", ts=NOW - 1000)


# --- examples ------------------------------------------------------------------------


def test_missing_reports_rooms_not_learned() -> None:
    """missing() names each room the numbering has no last seq for, once."""
    numbering = Numbering()
    sends = [send("a", "1"), send("b", "2"), send("a", "3")]
    assert numbering.missing(sends) == {"a", "b"}
    numbering.learn({"a": 3})
    assert numbering.missing(sends) == {"b"}
    numbering.learn({"b": 0})
    assert numbering.missing(sends) == set()
    assert numbering.missing([]) == set()


def test_plan_numbers_each_room_from_its_learned_last_seq() -> None:
    """New sends get last+1, last+2, ... per room, in batch order, with every field."""
    numbering = Numbering()
    numbering.learn({"a": 3, "b": 0})
    batch = [(send("a", "x"), "r1"), (send("b", "y", sender="bob", body="yo"), "r2"),
             (send("a", "z"), "r3")]
    plan = numbering.plan(batch, {}, NOW, id_maker())

    assert [(s.room, s.seq) for s in plan.new] == [("a", 4), ("b", 1), ("a", 5)]
    assert plan.new[1] == Stored(id="id1", room="b", seq=1, sender="bob", client_id="y",
                                 body="yo", ts=NOW)
    assert [o.ref for o in plan.outcomes] == ["r1", "r2", "r3"]
    assert [o.send for o in plan.outcomes] == [s for s, _ in batch]
    assert [o.stored for o in plan.outcomes] == plan.new
    assert not any(o.duplicate for o in plan.outcomes)
    assert numbering.last == {"a": 5, "b": 1}
    # The next batch continues where this one ended.
    again = numbering.plan([(send("a", "w"), "r4")], {}, NOW, id_maker("n"))
    assert again.new[0].seq == 6


def test_send_already_stored_keeps_the_stored_message() -> None:
    """A send found in existing is answered with the stored message, not numbered again."""
    numbering = Numbering()
    numbering.learn({"a": 7})
    old = stored("a", 2, "x")
    plan = numbering.plan([(send("a", "x", body="retry"), "ref")],
                          {dedup_key(send("a", "x")): old}, NOW, id_maker())
    assert plan.new == []
    (outcome,) = plan.outcomes
    assert outcome.stored is old
    assert outcome.duplicate
    assert outcome.ref == "ref"
    assert numbering.last == {"a": 7}


def test_send_repeated_inside_one_batch_gets_the_same_stored_message() -> None:
    """The second copy of a send in one batch is a duplicate of the first (same seq, id)."""
    numbering = Numbering()
    numbering.learn({"a": 0})
    plan = numbering.plan([(send("a", "x"), 1), (send("a", "y"), 2), (send("a", "x"), 3)],
                          {}, NOW, id_maker())
    assert [s.seq for s in plan.new] == [1, 2]
    first, _, third = plan.outcomes
    assert third.stored is first.stored
    assert (first.duplicate, third.duplicate) == (False, True)
    assert numbering.last["a"] == 2


def test_dedup_key_is_room_sender_and_client_id() -> None:
    """The same client_id from another sender or in another room is another message."""
    numbering = Numbering()
    numbering.learn({"a": 0, "b": 0})
    plan = numbering.plan([(send("a", "x"), 1), (send("a", "x", sender="bob"), 2),
                           (send("b", "x"), 3)], {}, NOW, id_maker())
    assert [(s.room, s.seq, s.sender) for s in plan.new] == [
        ("a", 1, "alice"), ("a", 2, "bob"), ("b", 1, "alice")]
    assert dedup_key(send("a", "x", sender="bob")) == ("a", "bob", "x")
    assert plan.new[0].dedup_key == ("a", "alice", "x")


def test_rollback_forgets_the_rooms_of_the_plan() -> None:
    """After a failed insert, the plan's rooms must be read from the database again."""
    numbering = Numbering()
    numbering.learn({"a": 4, "b": 9, "c": 1})
    plan = numbering.plan([(send("a", "x"), 1), (send("b", "y"), 2), (send("c", "old"), 3)],
                          {("c", "alice", "old"): stored("c", 1, "old")}, NOW, id_maker())
    numbering.rollback(plan)
    assert numbering.missing([send("a", "1"), send("b", "2"), send("c", "3")]) == {"a", "b"}
    assert numbering.last == {"c": 1}  # c had only a duplicate: nothing to forget
    with pytest.raises(KeyError):
        numbering.plan([(send("a", "x"), 1)], {}, NOW, id_maker())


def test_forget_drops_rooms_and_ignores_unknown_ones() -> None:
    """forget() drops what is known of the rooms named, and tolerates unknown rooms."""
    numbering = Numbering()
    numbering.learn({"a": 1, "b": 2})
    numbering.forget(["a", "zzz"])
    assert numbering.last == {"b": 2}


def test_plan_for_a_room_never_learned_raises_key_error() -> None:
    """Numbering a room whose last seq nobody learned is refused, not guessed as 0."""
    numbering = Numbering()
    numbering.learn({"a": 0})
    with pytest.raises(KeyError):
        numbering.plan([(send("a", "x"), 1), (send("b", "y"), 2)], {}, NOW, id_maker())


# --- property --------------------------------------------------------------------------

ROOMS = ("r0", "r1", "r2")
SENDERS = ("alice", "bob")
CLIENT_IDS = "abcd"

sends = st.builds(Send, room=st.sampled_from(ROOMS), sender=st.sampled_from(SENDERS),
                  client_id=st.sampled_from(CLIENT_IDS), body=st.sampled_from(["hi", "yo"]))
# What happens around a batch: nothing, a failover before it (a fresh sequencer), or an
# insert that fails after storing the first *n* documents (then the batch comes back).
events = st.one_of(st.just("ok"), st.just("failover"), st.integers(0, 8))
batches = st.lists(st.tuples(st.lists(sends, min_size=1, max_size=8), events),
                   min_size=1, max_size=12)


class Database:
    """Stored messages with the two unique indexes of the messages collection, as the
    :class:`burrow.core.sequencing.Storage` the sequencer's store step talks to.

    ``fail_after`` makes the next insert store that many documents and then fail the way
    a lost connection does; ``taken`` are (room, seq) another writer holds.
    """

    def __init__(self) -> None:
        self.by_key: dict[DedupKey, Stored] = {}
        self.by_seq: dict[tuple[str, int], Stored] = {}
        self.fail_after: int | None = None
        self.lookups = 0

    async def last_seqs(self, rooms: Iterable[str]) -> dict[str, int]:
        return {r: max((seq for room, seq in self.by_seq if room == r), default=0)
                for r in rooms}

    async def existing(self, keys: Sequence[DedupKey]) -> dict[DedupKey, Stored]:
        self.lookups += 1
        return {k: self.by_key[k] for k in keys if k in self.by_key}

    async def insert(self, messages: Sequence[Stored]) -> None:
        for index, message in enumerate(messages):
            if self.fail_after is not None and index >= self.fail_after:
                self.fail_after = None
                raise ConnectionError("connection lost mid-insert")
            if message.dedup_key in self.by_key or (message.room, message.seq) in self.by_seq:
                raise Clash({m.room for m in messages[index:]})
            self.by_key[message.dedup_key] = message
            self.by_seq[(message.room, message.seq)] = message
        self.fail_after = None


def store(numbering: Numbering, db: Database, batch: list[Send],
          new_id: Callable[[], str]) -> Plan[int]:
    return asyncio.run(store_batch(numbering, [(s, i) for i, s in enumerate(batch)], db,
                                   NOW, new_id))


def test_store_batch_looks_nothing_up_when_nothing_clashes() -> None:
    """The common case costs one insert: no dedup lookup."""
    db = Database()
    plan = store(Numbering(), db, [send("a", "1"), send("a", "2"), send("b", "3")], id_maker())
    assert [(m.room, m.seq) for m in plan.new] == [("a", 1), ("a", 2), ("b", 1)]
    assert db.lookups == 0
    assert {m.ts for m in plan.new} == {NOW}  # stored at the caller's clock


def test_store_batch_answers_a_redelivered_send_with_its_stored_seq() -> None:
    """A send stored before (by a sequencer that died before acking) clashes, is looked
    up, and keeps its seq; the new sends after it are numbered without a gap."""
    db = Database()
    first = store(Numbering(), db, [send("a", "1"), send("a", "2")], id_maker("x"))
    again = store(Numbering(), db, [send("a", "0"), send("a", "2"), send("a", "3")],
                  id_maker("y"))
    assert [o.stored.seq for o in again.outcomes] == [3, 2, 4]
    assert again.outcomes[1].stored == first.outcomes[1].stored
    assert sorted(seq for _, seq in db.by_seq) == [1, 2, 3, 4]
    assert db.lookups == 1


def test_store_batch_gives_up_when_seqs_keep_being_taken() -> None:
    """A writer that takes every seq first (a split brain) makes the batch fail with
    Clash after a bounded number of attempts, with nothing stored by this one."""
    class Hostile(Database):
        async def insert(self, messages: Sequence[Stored]) -> None:
            if messages:
                m = messages[0]
                self.by_seq[(m.room, m.seq)] = Stored(id="other", room=m.room, seq=m.seq,
                                                      sender="mallory", client_id=str(m.seq),
                                                      body="", ts=NOW)
                raise Clash({m.room})

    db = Hostile()
    with pytest.raises(Clash) as info:
        store(Numbering(), db, [send("a", "1")], id_maker())
    assert db.lookups == MAX_ATTEMPTS - 1
    assert not db.by_key
    assert info.value.rooms == {"a"}
    assert str(info.value) == "unique index clash in ['a']"


@settings(max_examples=300, deadline=None)
@given(batches)
def test_rooms_stay_gap_free_and_sends_stored_once(
        script: list[tuple[list[Send], str | int]]) -> None:
    """Batch after batch, through failovers and inserts cut after n documents, each room
    holds seqs 1..n exactly once, each send is stored once, and every ack agrees."""
    db = Database()
    numbering = Numbering()
    new_id = id_maker()
    acked: dict[DedupKey, list[tuple[int, str, bool]]] = defaultdict(list)
    pending: list[list[Send]] = []

    def process(batch: list[Send], fail_after: int | None) -> bool:
        db.fail_after = fail_after
        try:
            plan = store(numbering, db, batch, new_id)
        except ConnectionError:
            return False
        assert len(plan.outcomes) == len(batch)
        for outcome in plan.outcomes:
            key = dedup_key(outcome.send)
            assert outcome.stored == db.by_key[key]
            acked[key].append((outcome.stored.seq, outcome.stored.id, outcome.duplicate))
        return True

    for batch, event in script:
        if event == "failover":
            numbering = Numbering()
        fail_after = event if isinstance(event, int) else None
        if not process(batch, fail_after):
            pending.append(batch)  # not acked to the broker: redelivered later
    for batch in pending:
        assert process(batch, None)

    for room in ROOMS:
        seqs = sorted(seq for r, seq in db.by_seq if r == room)
        assert seqs == list(range(1, len(seqs) + 1)), f"{room}: {seqs}"
    every_send = {dedup_key(s) for batch, _ in script for s in batch}
    assert set(db.by_key) == every_send
    assert len(db.by_seq) == len(db.by_key)
    for key, answers in acked.items():
        assert {(seq, id_) for seq, id_, _ in answers} == {
            (db.by_key[key].seq, db.by_key[key].id)}, key
        assert sum(not duplicate for _, _, duplicate in answers) <= 1, key
