"""``--history``: the seeded database is what the stores write and read, and is built once.

A history seeded in another shape than the stores' would measure nothing: the queries
under test must find these documents through their own indexes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo import MongoClient

from bench import seed
from burrow.devstack import mongo, ports
from burrow.storage import database
from burrow.storage.messages import MessageStore
from burrow.storage.notify import NotifyStore
from burrow.storage.rooms import RoomStore

pytestmark = pytest.mark.integration


async def test_a_seeded_history_reads_back_through_the_stores(mongo_url: str) -> None:
    counts = await seed.seed(mongo_url, 2500)
    assert counts == {"messages": 2500, "rooms": 3, "memberships": 30, "users": 15,
                      "devices": 15, "push_log": 250}
    client = database.open_client(mongo_url, 10.0)
    try:
        db = client.get_default_database()
        messages = MessageStore(db)
        assert await messages.last_seqs([seed.room_of(0), seed.room_of(2)]) == {
            seed.room_of(0): seed.PER_ROOM, seed.room_of(2): 500}
        page = await messages.history(seed.room_of(1), after=995)
        assert [m.seq for m in page] == [996, 997, 998, 999, 1000]
        members = await RoomStore(db).members(seed.room_of(1))
        assert len(members) == seed.MEMBERS
        states = await NotifyStore(db).member_states([seed.room_of(1)])
        assert sorted(s.read_seq for s in states) == [
            seed.PER_ROOM * j // seed.MEMBERS for j in range(seed.MEMBERS)]
        # the unique dedup index holds the seeded keys: a resend of one is refused
        assert await messages.existing([(seed.room_of(0), seed.member_of(0, 1), "h1")])
    finally:
        await client.close()


def test_a_seeded_directory_is_built_once_and_copied(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = seed.seeded_directory(1200, cache)
    marker = first.parent / "SEEDED"
    built = marker.stat().st_mtime_ns
    assert seed.seeded_directory(1200, cache) == first
    assert marker.stat().st_mtime_ns == built  # not seeded again
    storage = tmp_path / "run" / "mongo"
    seed.copy_into(1200, storage, cache)
    server = mongo.EmbeddedMongo(storage, ports.free_port())
    server.start()
    try:
        server.wait_ready()
        with MongoClient(server.database_url("burrow")) as client:
            assert client.burrow.messages.count_documents({}) == 1200
    finally:
        server.stop()
