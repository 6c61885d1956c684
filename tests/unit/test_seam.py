"""The seam between replayed and live messages (burrow/core/seam.py, G4).

A subscriber's :class:`Cursor` must deliver every seq after its start exactly once, in
ascending order, never skipping one, whatever the interleaving of live deliveries
(duplicated, lost, ahead of the database's replay) and database replays.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burrow.core.seam import Cursor, TooFarBehind


def m(seq: int) -> str:
    """The frame the tests use for message *seq*."""
    return f"m{seq}"


def rows(*seqs: int) -> list[tuple[int, str]]:
    """Database rows for *seqs*, as :meth:`Cursor.replayed` takes them."""
    return [(s, m(s)) for s in seqs]


def live_cursor(last: int = 0, max_held: int = 10_000) -> Cursor:
    """A cursor whose initial replay found nothing: it is on the live stream."""
    cursor = Cursor(last, max_held=max_held)
    assert cursor.caught_up() == []
    return cursor


# --- examples ------------------------------------------------------------------------


def test_starts_replaying_and_reports_no_gap_while_replaying() -> None:
    """A new cursor holds live messages (its replay runs) and asks for no other replay."""
    cursor = Cursor(5)
    assert cursor.replaying
    assert cursor.live(7, m(7)) == []
    assert not cursor.needs_replay
    assert cursor.last == 5


def test_live_in_order_is_delivered_at_once() -> None:
    """After the replay, each live message that follows on is delivered immediately."""
    cursor = live_cursor()
    for seq in range(1, 6):
        assert cursor.live(seq, m(seq)) == [m(seq)]
        assert cursor.last == seq
        assert not cursor.needs_replay


def test_duplicates_are_dropped() -> None:
    """A seq already delivered, or already held, is never delivered again."""
    cursor = live_cursor()
    assert cursor.live(1, m(1)) == [m(1)]
    assert cursor.live(2, m(2)) == [m(2)]
    assert cursor.live(1, m(1)) == []
    assert cursor.live(2, m(2)) == []
    assert cursor.replayed(rows(1, 2)) == []
    # A message held behind a gap, offered twice, is delivered once.
    assert cursor.live(4, m(4)) == []
    assert cursor.live(4, m(4)) == []
    cursor.start_replay()
    assert cursor.replayed(rows(3, 4)) == [m(3), m(4)]
    assert cursor.caught_up() == []
    assert cursor.live(4, m(4)) == []
    assert cursor.live(5, m(5)) == [m(5)]


def test_live_held_during_replay_then_drained_by_caught_up() -> None:
    """Live messages arriving during the replay wait, and follow the replay in order."""
    cursor = Cursor(0)
    assert cursor.live(3, m(3)) == []
    assert cursor.live(4, m(4)) == []
    assert cursor.replayed(rows(1, 2)) == [m(1), m(2)]
    assert cursor.last == 2
    assert cursor.caught_up() == [m(3), m(4)]
    assert cursor.last == 4
    assert not cursor.needs_replay
    assert cursor.live(5, m(5)) == [m(5)]


def test_live_next_in_line_is_held_while_replaying() -> None:
    """Even the very next seq waits while replaying; the replay's copy is delivered once."""
    cursor = Cursor(3)
    assert cursor.live(4, "live4") == []
    assert cursor.live(5, "live5") == []
    assert cursor.replayed(rows(4)) == [m(4)]
    assert cursor.caught_up() == ["live5"]
    assert cursor.last == 5


def test_replay_covering_held_messages_leaves_nothing_held() -> None:
    """When the replay reaches past what was held, nothing is delivered twice or kept."""
    cursor = Cursor(0)
    assert cursor.live(2, m(2)) == []
    assert cursor.live(3, m(3)) == []
    assert cursor.replayed(rows(1, 2, 3, 4)) == [m(1), m(2), m(3), m(4)]
    assert cursor.caught_up() == []
    assert not cursor.needs_replay
    assert cursor.live(3, m(3)) == []
    assert cursor.live(5, m(5)) == [m(5)]


def test_skip_ahead_is_held_and_needs_replay_until_the_gap_is_filled() -> None:
    """A live message past a gap waits; needs_replay asks for the gap; the replay fills it."""
    cursor = live_cursor()
    assert cursor.live(1, m(1)) == [m(1)]
    assert cursor.live(3, m(3)) == []
    assert cursor.needs_replay
    assert cursor.live(4, m(4)) == []
    assert cursor.needs_replay
    cursor.start_replay()
    assert not cursor.needs_replay  # a replay is running
    assert cursor.replayed(rows(2, 3)) == [m(2), m(3)]
    assert cursor.caught_up() == [m(4)]
    assert not cursor.needs_replay
    assert cursor.last == 4


def test_replay_that_stops_short_of_the_gap_still_needs_replay() -> None:
    """A replay that ends before the held messages leaves the gap reported."""
    cursor = live_cursor()
    assert cursor.live(5, m(5)) == []
    cursor.start_replay()
    assert cursor.replayed(rows(1, 2)) == [m(1), m(2)]
    assert cursor.caught_up() == []
    assert cursor.needs_replay
    cursor.start_replay()
    assert cursor.replayed(rows(3, 4, 5)) == [m(3), m(4), m(5)]  # the held 5 is dropped
    assert cursor.caught_up() == []
    assert not cursor.needs_replay


def test_replayed_never_skips_or_repeats() -> None:
    """Database rows at or before the cursor are dropped; rows past a hole are not taken."""
    cursor = Cursor(2)
    assert cursor.replayed(rows(1, 2, 3, 5, 6)) == [m(3)]
    assert cursor.last == 3
    assert cursor.replayed(rows(4, 5, 6)) == [m(4), m(5), m(6)]


def test_replay_split_in_chunks() -> None:
    """Several replayed() calls in one replay continue where the previous one ended."""
    cursor = Cursor(0)
    assert cursor.replayed(rows(1, 2)) == [m(1), m(2)]
    assert cursor.replayed(rows(3)) == [m(3)]
    assert cursor.replayed([]) == []
    assert cursor.replayed(rows(4, 5)) == [m(4), m(5)]
    assert cursor.caught_up() == []


def test_too_far_behind_when_more_than_max_held() -> None:
    """max_held messages may wait; one more raises TooFarBehind."""
    cursor = live_cursor(max_held=3)
    for seq in (2, 3, 4):
        assert cursor.live(seq, m(seq)) == []
    # Re-offers of what is held or delivered do not count against the bound.
    assert cursor.live(3, m(3)) == []
    assert cursor.live(0, m(0)) == []
    with pytest.raises(TooFarBehind):
        cursor.live(5, m(5))


def test_too_far_behind_also_while_replaying() -> None:
    """The bound holds during a replay too (a slow database cannot grow memory forever)."""
    cursor = Cursor(0, max_held=2)
    cursor.live(1, m(1))
    cursor.live(2, m(2))
    with pytest.raises(TooFarBehind):
        cursor.live(3, m(3))


def test_the_default_bound_is_ten_thousand_held_messages() -> None:
    cursor = Cursor(0)
    for seq in range(1, 10_001):
        cursor.live(seq, m(seq))
    with pytest.raises(TooFarBehind, match=r"^10000 messages held after seq 0$"):
        cursor.live(10_001, m(10_001))


def test_what_a_replay_delivers_no_longer_counts_as_held() -> None:
    """Live messages the replay delivered leave the held set at once, even before
    caught_up: room is made for the live messages that follow."""
    cursor = Cursor(0, max_held=2)
    cursor.live(1, m(1))
    cursor.live(2, m(2))
    assert cursor.replayed(rows(1, 2)) == [m(1), m(2)]
    cursor.live(3, m(3))
    cursor.live(4, m(4))  # two held again, within the bound
    assert cursor.caught_up() == [m(3), m(4)]


def test_any_frame_value_is_delivered() -> None:
    """Frames are opaque to the cursor, so even a None frame is delivered in its place."""
    cursor: Cursor = live_cursor()
    assert cursor.live(2, None) == []
    assert cursor.live(1, "one") == ["one", None]
    assert cursor.last == 2


# --- property --------------------------------------------------------------------------


@dataclass
class Replay:
    """A replay in progress: the database is read page after page from *read_after*."""

    read_after: int
    done: bool = False


def live_stream(data: st.DataObject, n: int) -> list[int]:
    """Live deliveries: 1..n ascending with random drops, and duplicates re-inserted later."""
    keep = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="keep")
    stream = [seq for seq, kept in zip(range(1, n + 1), keep, strict=True) if kept]
    if stream:
        dups = data.draw(st.lists(st.tuples(st.integers(0, len(stream) - 1),
                                            st.integers(0, 8)), max_size=12), label="dups")
        for index, delay in dups:
            seq = stream[index]
            position = min(stream.index(seq) + 1 + delay, len(stream))
            stream.insert(position, seq)
    return stream


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_seq_after_the_start_exactly_once_in_order(data: st.DataObject) -> None:
    """Any interleaving of lossy, duplicated live delivery and paged replays, closed by a
    full replay, delivers exactly k+1..N in order (G4)."""
    n = data.draw(st.integers(0, 60), label="n")
    k = data.draw(st.integers(0, n), label="k")
    stored = data.draw(st.integers(0, n), label="initially stored")  # D: only grows
    stream = live_stream(data, n)
    cursor = Cursor(last=k)
    delivered: list[str] = []
    replay: Replay | None = Replay(read_after=k)  # the cursor starts replaying

    def read_page(r: Replay) -> None:
        limit = data.draw(st.integers(1, 10), label="page size")
        page = list(range(r.read_after + 1, min(stored, r.read_after + limit) + 1))
        delivered.extend(cursor.replayed(rows(*page)))
        if page:
            r.read_after = page[-1]
        r.done = len(page) < limit

    def check() -> None:
        assert delivered == [m(s) for s in range(k + 1, k + 1 + len(delivered))]
        assert cursor.last == k + len(delivered)

    for _ in range(400):
        actions = ["grow"]
        if stream:
            actions.append("live")
        if replay is None:
            actions += ["replay"] * (4 if cursor.needs_replay else 1)
        else:
            actions += ["caught_up"] * 2 if replay.done else ["page"] * 2
        if not stream and replay is None and not cursor.needs_replay:
            break
        action = data.draw(st.sampled_from(actions), label="action")
        if action == "live":
            seq = stream.pop(0)
            stored = max(stored, seq)  # persist, then fan out
            delivered.extend(cursor.live(seq, m(seq)))
        elif action == "grow":
            stored = data.draw(st.integers(stored, n), label="stored")
        elif action == "replay":
            cursor.start_replay()
            replay = Replay(read_after=cursor.last)
        elif action == "page":
            assert replay is not None
            read_page(replay)
        else:
            delivered.extend(cursor.caught_up())
            replay = None
        check()

    # Finish what is running, then one replay of the whole database.
    while replay is not None and not replay.done:
        read_page(replay)
    if replay is not None:
        delivered.extend(cursor.caught_up())
    for seq in stream:
        delivered.extend(cursor.live(seq, m(seq)))
    check()
    stored = n
    cursor.start_replay()
    final = Replay(read_after=cursor.last)
    while not final.done:
        read_page(final)
    delivered.extend(cursor.caught_up())

    assert delivered == [m(s) for s in range(k + 1, n + 1)]
    assert cursor.last == n
    assert not cursor.needs_replay
