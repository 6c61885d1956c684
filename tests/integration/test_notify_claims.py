"""Push and digest claims on the real database: one winner per member, whatever races.

The notifier claims a waiting push with one conditional update per (room, seq) and
reads back who holds the claim (``NotifyStore.claim_pushes``); two notifiers (or a
redelivered batch and a new one) racing for the same members must never both win one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from burrow.storage.messages import Database
from burrow.storage.notify import NotifyStore
from burrow.storage.rooms import RoomStore

pytestmark = pytest.mark.integration

MEMBERS = [f"m{i}" for i in range(60)]  # more than one page of $in (50)


async def test_racing_push_claims_have_exactly_one_winner_per_member(db: Database) -> None:
    rooms = RoomStore(db)
    await rooms.ensure_indexes()
    for room in ("a", "b"):
        await rooms.create(room, room, MEMBERS[0], MEMBERS)
    store = NotifyStore(db)
    stale = datetime.now(UTC) - timedelta(minutes=5)
    first = {(room, m): 3 for room in ("a", "b") for m in MEMBERS}
    second = {(room, m): 4 for room in ("a", "b") for m in MEMBERS}
    won = await asyncio.gather(store.claim_pushes(first, stale),
                               store.claim_pushes(second, stale),
                               store.claim_pushes(first, stale))
    # the two claims of seq 3 are one claimant redelivered: both may see it as theirs
    assert won[0] == won[2]
    assert set(won[0]) | set(won[1]) == set(first)
    assert not set(won[0]) & set(won[1])
    states = {(s.room, s.user): s.claim for s in await store.member_states(["a", "b"])}
    assert states == {key: won[0].get(key) or won[1][key] for key in first}
    # a member with a push waiting is not claimed again until the claim goes stale
    assert await store.claim_pushes({("a", "m1"): 9}, stale) == {}
    await store.clear_pushes([("a", "m1")])
    assert await store.claim_pushes({("a", "m1"): 9}, stale) == {("a", "m1"): 9}
    # a stale claim (its job lost) is taken over
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert await store.claim_pushes({("b", "m2"): 10}, later) == {("b", "m2"): 10}


async def test_racing_digest_claims_have_exactly_one_winner_per_user(db: Database) -> None:
    await db.users.insert_many([{"_id": m, "email": f"{m}@example.test",
                                 "digest": "hourly"} for m in MEMBERS])
    store = NotifyStore(db)
    stale = datetime.now(UTC) - timedelta(minutes=5)
    won = await asyncio.gather(*(store.claim_digests({m: key for m in MEMBERS}, stale)
                                 for key in ("a:1", "b:7")))
    assert won[0] | won[1] == set(MEMBERS)
    assert not won[0] & won[1]
    states = {u.user: u.claim for u in await store.digest_states(MEMBERS)}
    assert states == {m: "a:1" if m in won[0] else "b:7" for m in MEMBERS}


async def test_members_at_level_nothing_are_not_scheduled(db: Database) -> None:
    """A member who set a room to "nothing" is left out of the batch's memberships, so
    the notifier schedules no push or digest job for them there (and only there)."""
    rooms = RoomStore(db)
    await rooms.ensure_indexes()
    for room in ("a", "b"):
        await rooms.create(room, room, "m0", ["m0", "m1", "m2"])
    await db["memberships"].update_one({"room": "a", "user": "m1"},
                                       {"$set": {"notify_level": "nothing"}})
    await db["memberships"].update_one({"room": "a", "user": "m2"},
                                       {"$set": {"notify_level": "mentions"}})
    states = await NotifyStore(db).member_states(["a", "b"])
    assert sorted((s.room, s.user) for s in states) == [
        ("a", "m0"), ("a", "m2"), ("b", "m0"), ("b", "m1"), ("b", "m2")]
