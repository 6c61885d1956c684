"""The sequencers' shard plan (burrow/core/shard_plan.py): balanced, stable, and a
roster that hands shards over only on a settled view, never within the hold-down."""

from __future__ import annotations

import random

import pytest

from burrow.core.shard_plan import Roster, plan, quotas


def ids(rng: random.Random, count: int) -> list[str]:
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


def loads(owners: dict[int, str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for member in owners.values():
        found[member] = found.get(member, 0) + 1
    return found


SEEDS = range(20)


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 16])
@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_every_member_holds_floor_or_ceil_and_every_shard_has_one_owner(
        shards: int, count: int) -> None:
    for seed in SEEDS:
        balanced(shards, count, random.Random(seed))


def balanced(shards: int, count: int, rng: random.Random) -> None:
    members = ids(rng, count)
    # whatever the holders are now (a random, unbalanced and partly unknown picture)
    holders = {s: rng.choice(members + ["gone"]) for s in range(shards) if rng.random() < 0.7}
    owners = plan(shards, members, holders)
    assert sorted(owners) == list(range(shards))
    assert set(owners.values()) <= set(members)
    low, high = shards // count, -(-shards // count)
    assert all(low <= loads(owners).get(m, 0) <= high for m in members)
    # and the plan is a pure function of its inputs, whatever order the members come in
    assert plan(shards, list(reversed(members)), dict(holders)) == owners


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 16])
@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_a_join_moves_only_shards_to_the_joiner_and_a_leave_only_the_leavers(
        shards: int, count: int) -> None:
    for seed in SEEDS:
        stable(shards, count, random.Random(seed))


def stable(shards: int, count: int, rng: random.Random) -> None:
    """A walk of joins and leaves from *count* members: each step moves exactly the
    joiner's share, or exactly the leaver's shards, nothing between the others."""
    members = ids(rng, count)
    owners = plan(shards, members, {})
    for _ in range(8):
        if len(members) > 1 and rng.random() < 0.5:
            leaver = rng.choice(members)
            members = [m for m in members if m != leaver]
            later = plan(shards, members, {s: m for s, m in owners.items() if m != leaver})
            assert [s for s in range(shards) if later[s] != owners[s]] == \
                [s for s in range(shards) if owners[s] == leaver]
        else:
            [joiner] = ids(rng, 1)
            members = [*members, joiner]
            later = plan(shards, members, owners)
            moved = [s for s in range(shards) if later[s] != owners[s]]
            assert all(later[s] == joiner for s in moved)
            assert len(moved) == loads(later).get(joiner, 0)  # exactly the joiner's share
        owners = later


def test_the_ceil_goes_to_those_holding_most_so_fewer_shards_move() -> None:
    # 4 shards, b and c hold 2 each, a joins: one of them (b, by id) keeps both, and a
    # takes one from c: one move. Giving the ceil to a (first by id) would take two.
    holders = {0: "b", 1: "b", 2: "c", 3: "c"}
    assert quotas(4, ["a", "b", "c"], holders) == {"a": 1, "b": 2, "c": 1}
    owners = plan(4, ["a", "b", "c"], holders)
    assert [s for s in range(4) if owners[s] != holders[s]] in ([2], [3])
    assert plan(4, [], {0: "a"}) == {}


def test_one_member_keeps_everything_and_hands_nothing_over() -> None:
    roster = Roster("me", 4, 1.0)
    for shard in range(4):
        roster.became_active(shard, 0.0)
    assert roster.handovers(100.0) == []


def settled_pair(now: float) -> Roster:
    """I am active on every shard since t=0; 'zz' has been heard since t=0 holding none."""
    roster = Roster("aa", 4, 1.0)
    for shard in range(4):
        roster.became_active(shard, 0.0)
    t = 0.0
    while t <= now:
        roster.heard("zz", [], t)
        t += 1.0
    return roster


def test_a_settled_roster_hands_over_the_surplus_after_the_hold_down() -> None:
    roster = settled_pair(5.0)
    handed = roster.handovers(5.0)
    assert len(handed) == 2  # 2 of 4 go to the other member
    for shard in handed:
        roster.left(shard)
    assert roster.handovers(5.5) == []


def test_no_handover_on_an_unsettled_view() -> None:
    roster = Roster("aa", 4, 1.0)
    for shard in range(4):
        roster.became_active(shard, 0.0)
    roster.heard("zz", [], 10.0)
    assert roster.handovers(10.5) == []  # just joined: not settled for 2 intervals
    roster.heard("zz", [], 11.0)
    assert roster.handovers(12.1) != []
    # a member that went quiet (killed a moment ago?) unsettles the view at once...
    roster = settled_pair(5.0)
    assert roster.handovers(6.6) == []
    # ...and after 3 intervals it is gone: alone again, nothing to hand over
    assert roster.handovers(8.1) == [] and roster.members() == ["aa"]


def test_a_shard_just_taken_is_held_for_the_hold_down() -> None:
    roster = settled_pair(10.0)
    for shard in range(4):
        roster.left(shard)
    for shard in range(3):
        roster.became_active(shard, 9.5)  # took 3 shards half an interval ago
    assert roster.handovers(10.0) == []
    assert roster.handovers(10.4) == []  # 0.9 intervals: still held
    assert len(roster.handovers(10.6)) == 1


def test_a_goodbye_removes_the_member_at_once_and_own_claims_beat_stale_ones() -> None:
    roster = settled_pair(5.0)
    roster.heard("zz", [0, 1], 5.0)  # stale: I took shard 0 since
    assert roster.holders()[0] == "aa" and roster.holders()[1] == "aa"
    roster.heard("zz", [], 6.0, bye=True)
    assert roster.members() == ["aa"]
    roster.heard("aa", [3], 6.0)  # my own heartbeat, come back through the fanout
    assert roster.members() == ["aa"]


def test_a_shard_handed_over_and_back_is_kept_for_the_backoff() -> None:
    roster = settled_pair(5.0)
    [first, *_] = roster.handovers(5.0)
    roster.handing_over(first, 5.0)
    roster.became_active(first, 5.2)  # nobody else took it: the broker gave it back
    roster.heard("zz", [], 6.0)
    assert first not in roster.handovers(6.5)  # past the hold-down, within the backoff
    for t in range(7, 16):
        roster.heard("zz", [], float(t))
    assert first in roster.handovers(15.1)  # 10 intervals on: tried again


async def test_malformed_heartbeats_are_ignored_and_good_ones_heard() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from consumers.shard_balance import Balancer

    balancer = Balancer([], 1.0, lambda rooms: None)
    for body in (b"", b"[]", b"{}", b'{"id": 3, "shards": []}', b'{"id": "x", "shards": "0"}',
                 b'{"id": "x", "shards": ["0"]}', b"\xff" * 10_000):
        await balancer._heard(cast(Any, SimpleNamespace(body=body)))
    assert balancer.roster.others == {}
    await balancer._heard(cast(Any, SimpleNamespace(body=b'{"id": "x", "shards": [0, 9]}')))
    assert balancer.roster.others["x"].shards == frozenset()  # no shard 9 of 0 shards
