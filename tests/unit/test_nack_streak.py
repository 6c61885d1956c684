"""The publisher renewal policy: a nack streak per routing key (burrow/core/nack_streak.py)."""

from __future__ import annotations

from burrow.core.nack_streak import MAX_KEYS, RENEW_AFTER, NackStreaks


def test_renews_after_k_nacks_in_a_row_for_one_key() -> None:
    streaks = NackStreaks()
    assert RENEW_AFTER == 3
    assert [streaks.nacked("room.a.msg", 10.0) for _ in range(3)] == [False, False, True]


def test_an_ack_ends_the_streak_of_its_key_only() -> None:
    streaks = NackStreaks(renew_after=3)
    streaks.nacked("a", 1.0)
    streaks.nacked("a", 1.0)
    streaks.acked("a")  # an election's nacks, then accepted: no renewal
    assert not streaks.nacked("a", 1.0)
    assert not streaks.nacked("a", 1.0)
    assert streaks.nacked("a", 1.0)


def test_acks_of_other_keys_do_not_hide_a_stuck_one() -> None:
    # the bug: one shard nacked for good, every other shard acked on the same channel
    streaks = NackStreaks(renew_after=3)
    decisions = []
    for _ in range(3):
        decisions.append(streaks.nacked("stuck", 5.0))
        streaks.acked("fine-1")
        streaks.acked("fine-2")
    assert decisions == [False, False, True]


def test_nacks_spread_over_keys_do_not_add_up() -> None:
    streaks = NackStreaks(renew_after=3)
    assert not any(streaks.nacked(key, 1.0) for key in ("a", "b", "c", "a", "b", "c"))


def test_at_most_one_renewal_per_interval_and_a_fresh_start_after_it() -> None:
    streaks = NackStreaks(renew_after=2, min_interval=1.0)
    streaks.nacked("a", 10.0)
    assert streaks.nacked("a", 10.0)
    streaks.renewed(10.0)
    assert streaks.streaks == {}
    streaks.nacked("a", 10.5)
    assert not streaks.nacked("a", 10.5)  # within the interval: the streak goes on
    assert not streaks.nacked("a", 10.9)
    assert streaks.nacked("a", 11.0)  # an interval later


def test_streaks_are_bounded() -> None:
    streaks = NackStreaks()
    for index in range(MAX_KEYS):
        streaks.nacked(f"room.{index}.msg", 1.0)
    streaks.nacked("one more", 1.0)
    assert streaks.streaks == {"one more": 1}
