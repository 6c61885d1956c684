"""burrow.core.notify_plan: who a batch of stored messages schedules a push or a digest for.

Covers ``unread`` (the newest message from someone else, unless read), ``plan_pushes`` and
``plan_digests`` (claim when nothing waits or the waiting job is stale, ride along a fresh
job, publish again a claim naming this batch's own message), ``digest_candidates``, and,
as hypothesis properties, that a redelivered batch (whole, shuffled or split) never claims
twice, that claim and again never overlap, and that every planned seq is an unread message
of the batch from someone else.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from itertools import accumulate

from hypothesis import given, settings
from hypothesis import strategies as st

from burrow.core.notify_plan import (
    MemberState,
    Notice,
    PushPlan,
    UserState,
    digest_candidates,
    digest_key,
    plan_digests,
    plan_pushes,
    unread,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STALE_BEFORE = NOW - timedelta(minutes=10)
FRESH = NOW - timedelta(minutes=1)
STALE = NOW - timedelta(hours=1)
ROOMS = ("a", "b", "c")
USERS = ("ann", "bob", "cat", "dan")

Scenario = tuple[list[Notice], list[MemberState]]


def test_unread_gives_the_newest_message_from_someone_else() -> None:
    notices = [Notice("a", "ann", 1), Notice("a", "bob", 2), Notice("a", "ann", 3)]
    members = [MemberState("a", "ann"), MemberState("a", "bob"), MemberState("a", "cat", 1)]
    # ann's own message is the newest: the newest from others (seq 2) is hers
    assert unread(notices, members) == {("a", "ann"): 2, ("a", "bob"): 3, ("a", "cat"): 3}


def test_unread_leaves_out_senders_of_everything_readers_and_other_rooms() -> None:
    notices = [Notice("a", "ann", 4), Notice("a", "ann", 5), Notice("b", "bob", 7)]
    members = [
        MemberState("a", "ann"),            # wrote everything of the batch in room a
        MemberState("b", "cat", read_seq=7),  # read it already
        MemberState("b", "eve", read_seq=9),
        MemberState("b", "dan", read_seq=6),
        MemberState("c", "ann"),            # room c is not in the batch
    ]
    assert unread(notices, members) == {("b", "dan"): 7}


def test_plan_pushes_claims_rides_along_and_publishes_its_own_claims_again() -> None:
    notices = [Notice("a", "ann", 10, "m10"), Notice("a", "ann", 11, "m11"),
               Notice("b", "ann", 3, "m3")]
    members = [
        MemberState("a", "ann"),                                  # sender: nothing
        MemberState("a", "bob"),                                  # nothing waits: claim
        MemberState("a", "cat", pending_at=FRESH, claim=7),       # rides along
        MemberState("a", "dan", pending_at=STALE, claim=7),       # lost job: claim
        MemberState("a", "eve", pending_at=FRESH, claim=11),      # our own claim: again
        MemberState("a", "fay", pending_at=STALE, claim=10),      # our own, even stale
        MemberState("a", "hal", pending_at=STALE_BEFORE, claim=7),  # at the bound: fresh
        MemberState("a", "ivy", claim=10),                        # no job waits: claim
        MemberState("b", "gus", pending_at=FRESH, claim=11),      # 11 is room a's: rides
    ]
    plan = plan_pushes(notices, members, STALE_BEFORE)
    assert plan.claim == {("a", "bob"): 11, ("a", "dan"): 11, ("a", "ivy"): 11}
    assert plan.again == {("a", "eve"): 11, ("a", "fay"): 10}
    readers = ("bob", "cat", "dan", "eve", "fay", "hal", "ivy")
    assert plan.unread == {**{("a", u): 11 for u in readers}, ("b", "gus"): 3}


def test_plan_pushes_treats_naive_pending_times_as_utc() -> None:
    notices = [Notice("a", "ann", 5)]
    naive_fresh = FRESH.replace(tzinfo=None)
    naive_stale = STALE.replace(tzinfo=None)
    members = [MemberState("a", "bob", pending_at=naive_fresh, claim=1),
               MemberState("a", "cat", pending_at=naive_stale, claim=1)]
    plan = plan_pushes(notices, members, STALE_BEFORE)
    assert plan.claim == {("a", "cat"): 5}
    assert plan.again == {}


def test_plan_pushes_compares_aware_pending_times_in_any_zone_as_instants() -> None:
    """Only a naive time is taken as UTC; an aware one in another zone is not re-labelled."""
    plus_two = timezone(timedelta(hours=2))
    members = [MemberState("a", "bob", pending_at=STALE.astimezone(plus_two), claim=1),
               MemberState("a", "cat", pending_at=FRESH.astimezone(plus_two), claim=1)]
    plan = plan_pushes([Notice("a", "ann", 5)], members, STALE_BEFORE)
    assert plan.claim == {("a", "bob"): 5}  # stale: presumed lost; cat's job still waits


def test_digest_candidates_take_each_users_first_room_and_seq() -> None:
    wanted = {("b", "ann"): 5, ("a", "ann"): 7, ("c", "bob"): 1, ("a", "bob"): 3}
    expected = {"ann": "a:7", "bob": "a:3"}
    assert digest_key("a", 7) == "a:7"
    assert digest_candidates(wanted) == expected
    assert digest_candidates(dict(reversed(list(wanted.items())))) == expected


def test_plan_digests_claims_rides_along_and_publishes_its_own_claims_again() -> None:
    notices = [Notice("a", "ann", 3), Notice("a", "bob", 7), Notice("b", "cat", 2)]
    candidates = {u: "a:7" for u in ("ann", "bob", "cat", "dan", "eve", "fay", "hal")}
    users = [
        UserState("ann", "daily"),                                     # claim
        UserState("bob", "daily", pending_at=FRESH, claim="z:1"),      # rides along
        UserState("cat", "daily", pending_at=STALE, claim="z:1"),      # lost job: claim
        UserState("dan", "daily", pending_at=FRESH, claim="a:3"),      # our own: again
        UserState("eve", "weekly", pending_at=STALE, claim="b:2"),     # our own, stale
        UserState("fay", "daily", pending_at=FRESH.replace(tzinfo=None), claim="a:2"),
        UserState("hal", "daily", claim="a:3"),                        # no job waits
        UserState("gus", "daily"),                                     # not a candidate
    ]
    plan = plan_digests(notices, candidates, users, STALE_BEFORE)
    assert plan.claim == {"ann": "a:7", "cat": "a:7", "hal": "a:7"}
    assert plan.again == {"dan": "a:3", "eve": "b:2"}


def test_plan_digests_skips_a_user_who_is_not_a_candidate_and_goes_on() -> None:
    users = [UserState("gus", "daily"), UserState("ann", "daily")]
    plan = plan_digests([Notice("a", "bob", 7)], {"ann": "a:7"}, users, STALE_BEFORE)
    assert plan.claim == {"ann": "a:7"}


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Per room: messages with increasing seqs from random senders, and members with a
    read_seq, maybe a job waiting (fresh or stale) whose claim names another message."""
    notices: list[Notice] = []
    members: list[MemberState] = []
    for room in ROOMS:
        senders = draw(st.lists(st.sampled_from(USERS), max_size=5))
        gaps = draw(st.lists(st.integers(1, 3), min_size=len(senders), max_size=len(senders)))
        notices += [Notice(room, sender, seq, f"{room}-{seq}")
                    for sender, seq in zip(senders, accumulate(gaps), strict=True)]
        for user in sorted(draw(st.sets(st.sampled_from(USERS)))):
            pending = draw(st.sampled_from([None, FRESH, STALE]))
            claim = None if pending is None else draw(st.integers(100, 103))
            members.append(MemberState(room, user, draw(st.integers(0, 16)), pending, claim))
    return draw(st.permutations(notices)), draw(st.permutations(members))


def written(members: list[MemberState], claims: dict[tuple[str, str], int]) -> list[MemberState]:
    """The members after the claims were written (and the batch was not acked)."""
    return [replace(m, pending_at=NOW, claim=claims[(m.room, m.user)])
            if (m.room, m.user) in claims else m for m in members]


def assert_sound(plan: PushPlan, notices: list[Notice], members: list[MemberState]) -> None:
    """Claim and again are disjoint; each seq is an unread message of the batch in the
    member's room from someone else."""
    assert not set(plan.claim) & set(plan.again)
    read = {(m.room, m.user): m.read_seq for m in members}
    for (room, user), seq in [*plan.claim.items(), *plan.again.items()]:
        assert seq in {n.seq for n in notices if n.room == room and n.sender != user}
        assert seq > read[(room, user)]


@settings(max_examples=300, deadline=None, database=None)
@given(scenarios(), st.data())
def test_a_redelivered_batch_publishes_its_claims_again_and_never_claims_twice(
        scenario: Scenario, data: st.DataObject) -> None:
    notices, members = scenario
    first = plan_pushes(notices, members, STALE_BEFORE)
    assert_sound(first, notices, members)
    after = written(members, first.claim)
    shuffled = data.draw(st.permutations(notices))
    for again in (plan_pushes(notices, after, STALE_BEFORE),
                  plan_pushes(shuffled, after, STALE_BEFORE)):
        assert_sound(again, notices, after)
        assert again.claim == {} and again.again == first.claim
    cut = data.draw(st.integers(0, len(notices)))
    for part in (shuffled[:cut], shuffled[cut:]):
        plan = plan_pushes(part, after, STALE_BEFORE)
        assert_sound(plan, part, after)
        here = {(n.room, n.seq) for n in part}
        for key, seq in first.claim.items():
            assert key not in plan.claim
            assert plan.again.get(key) == (seq if (key[0], seq) in here else None)


@settings(max_examples=300, deadline=None, database=None)
@given(scenarios(), st.data())
def test_a_redelivered_batch_never_claims_a_digest_twice(
        scenario: Scenario, data: st.DataObject) -> None:
    notices, members = scenario
    candidates = digest_candidates(plan_pushes(notices, members, STALE_BEFORE).unread)
    users = [UserState(user, "daily", pending, None if pending is None else "z:1")
             for user in candidates
             for pending in [data.draw(st.sampled_from([None, FRESH, STALE]))]]
    first = plan_digests(notices, candidates, users, STALE_BEFORE)
    assert first.again == {} and set(first.claim) <= set(candidates)
    after = [replace(u, pending_at=NOW, claim=first.claim[u.user])
             if u.user in first.claim else u for u in users]
    shuffled = data.draw(st.permutations(notices))
    # the candidates must not depend on the order the batch arrived in
    again_candidates = digest_candidates(plan_pushes(shuffled, members, STALE_BEFORE).unread)
    assert again_candidates == candidates
    again = plan_digests(shuffled, again_candidates, after, STALE_BEFORE)
    assert again.claim == {} and again.again == first.claim
