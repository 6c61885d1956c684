"""Presence and typing across gateways, against real gateway and sequencer processes.

Presence: a user is online while any connection of theirs, on any gateway, is open (and
:data:`~gateway.presence.OFFLINE_GRACE` after the last one closes); members subscribed to a
shared room get ``presence`` frames; a gateway killed with ``kill -9`` has its users
announced offline within ``BURROW_PRESENCE_TTL`` x 4/3. Typing: ephemeral (never stored,
no seq), throttled per connection and room, for members only.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import MongoClient

from burrow.storage import database
from burrow.storage.presence import PresenceStore
from gateway.presence import OFFLINE_GRACE
from tests.conftest import until
from tests.integration.conftest import Raw, Stack, raw_ws

pytestmark = pytest.mark.integration
T = 30  # seconds: every wait is bounded


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): each test
    has rooms of its own, and the presence tests users of their own too (a user's presence
    spans rooms: an earlier test's offline grace must not reach a later one's subscriber);
    the gateways a test adds stop after it."""
    return shared_stack


def db_find(stack: Stack, collection: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    client: MongoClient[dict[str, Any]]
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        return list(client.get_default_database()[collection].find(query))



async def frames_until(ws: Raw, kind: str, timeout: float = T) -> list[dict[str, Any]]:
    """Every frame up to and including the first of type *kind*."""
    seen = []
    while True:
        frame = await ws.recv(timeout)
        seen.append(frame)
        if frame["type"] == kind:
            return seen


async def presence_event(ws: Raw, user: str, timeout: float = T) -> dict[str, Any]:
    """The next presence frame about *user* (a subscriber may also hear of itself)."""
    while True:
        frame = await ws.recv_until("presence", timeout)
        if frame["user"] == user:
            return frame


def about(frames: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] in ("presence", "typing") and f["user"] == user]


async def subscribe(ws: Raw, room: str) -> None:
    await ws.send({"type": "subscribe", "room": room})
    assert (await ws.recv_until("subscribed"))["room"] == room


def presence_of(stack: Stack, room: str, user: str, gateway: int = 0) -> dict[str, Any]:
    status, body = stack.http("GET", f"/v1/rooms/{room}/presence", user, gateway=gateway)
    assert status == 200, body
    assert body["room"] == room
    return {m["user"]: (m["online"], m["active"]) for m in body["members"]}


async def test_online_until_the_last_connection_on_any_gateway_closes(stack: Stack) -> None:
    stack.add_gateway()
    stack.room("den", "alice", "bob", "carol")
    async with raw_ws(stack.gateways[1].ws_url, stack.token("bob")) as bob:
        await subscribe(bob, "den")
        assert presence_of(stack, "den", "bob") == {
            "alice": (False, False), "bob": (True, True), "carol": (False, False)}
        async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as first:
            online = await presence_event(bob, "alice")
            assert online == {"type": "presence", "room": "den", "user": "alice",
                              "status": "online", "version": online["version"]}
            assert presence_of(stack, "den", "alice")["alice"] == (True, True)
            async with raw_ws(stack.gateways[1].ws_url, stack.token("alice")) as second:
                await second.send({"type": "ping"})
                await second.recv_until("pong")
            # The second connection closed; once its grace is over (its document gone and
            # its change settled) alice is still online: the first one is open.
            await until(lambda: len(db_find(stack, "presence", {"user": "alice"})) == 1
                        and all(s["settled"] == s["version"] for s in
                                db_find(stack, "presence_status", {"_id": "alice"})))
            assert db_find(stack, "presence_status", {"_id": "alice"})[0]["online"] is True
            assert presence_of(stack, "den", "bob", gateway=1)["alice"] == (True, True)
            await first.send({"type": "send", "room": "den", "client_id": "still",
                              "body": "here"})
            # The sentinel: nothing about alice came to bob before her message.
            assert about(await frames_until(bob, "message"), "alice") == []
        started = time.monotonic()
        offline = await presence_event(bob, "alice")
        assert time.monotonic() - started >= OFFLINE_GRACE - 1  # the grace was kept
        assert offline == {"type": "presence", "room": "den", "user": "alice",
                           "status": "offline", "version": offline["version"]}
        assert offline["version"] > online["version"]
        assert presence_of(stack, "den", "bob")["alice"] == (False, False)


async def test_presence_is_for_members_only(stack: Stack) -> None:
    stack.room("vault", "ava")
    assert stack.http("GET", "/v1/rooms/vault/presence", "mallory")[0] == 403
    assert stack.http("GET", "/v1/rooms/vault/presence", None)[0] == 401
    status, body = stack.http("GET", "/v1/rooms/a.b/presence", "ava")
    assert (status, body["error"]["code"]) == (400, "bad_room")
    admin = stack.token("root", roles=("admin",))
    status, body = stack.http("GET", "/v1/rooms/vault/presence", None, token=admin)
    assert (status, body["members"]) == (200, [{"user": "ava", "online": False,
                                               "active": False}])


async def test_a_gateway_killed_with_kill_9_has_its_users_offline_in_bounded_time(
        stack: Stack) -> None:
    ttl = 3.0
    # Gateway 0 (the stack's) keeps the default TTL: nobody connects to it here.
    for _ in range(2):
        stack.add_gateway(BURROW_PRESENCE_TTL=str(ttl))
    stack.room("wake", "wes", "will")
    async with raw_ws(stack.gateways[2].ws_url, stack.token("will")) as will:
        await subscribe(will, "wake")
        async with raw_ws(stack.gateways[1].ws_url, stack.token("wes")):
            assert (await presence_event(will, "wes"))["status"] == "online"
            stack.gateways[1].app.signal(signal.SIGKILL)
            killed = time.monotonic()
            offline = await presence_event(will, "wes")
            elapsed = time.monotonic() - killed
    assert (offline["user"], offline["status"]) == ("wes", "offline")
    # It can never come before TTL - TTL / 3 (a heartbeat is at most TTL / 3 old). The
    # documented upper bound, TTL + one sweep period, is a timing target: the benchmark's
    # business, not a test's on a busy machine (the wait above is bounded by T).
    assert ttl * 2 / 3 - 0.5 <= elapsed, elapsed
    assert presence_of(stack, "wake", "will", gateway=2)["wes"] == (False, False)
    assert db_find(stack, "presence", {"user": "wes"}) == []


async def test_typing_reaches_other_members_is_never_stored_and_is_throttled(
        stack: Stack) -> None:
    stack.add_gateway()
    stack.add_gateway(BURROW_TYPING_INTERVAL="30")  # a burst can never outlast it
    stack.room("chat", "alice", "bob")
    async with raw_ws(stack.gateways[1].ws_url, stack.token("bob")) as bob, \
            raw_ws(stack.gateways[2].ws_url, stack.token("alice")) as alice:
        await subscribe(bob, "chat")
        await subscribe(alice, "chat")
        for _ in range(5):
            await alice.send({"type": "typing", "room": "chat"})
        assert await bob.recv_until("typing") == {"type": "typing", "room": "chat",
                                                  "user": "alice"}
        await alice.send({"type": "send", "room": "chat", "client_id": "sentinel",
                          "body": "done typing"})
        # Sentinels: the burst gave one event; the typist sees no typing of her own and
        # no error for the dropped frames.
        after = await frames_until(bob, "message")
        assert [f["type"] for f in after if f["type"] in ("typing", "error")] == []
        assert after[-1]["seq"] == 1
        mine = await frames_until(alice, "message")
        assert [f["type"] for f in mine if f["type"] in ("typing", "error")] == []
    stored = db_find(stack, "messages", {"room": "chat"})
    assert [(m["seq"], m["client_id"]) for m in stored] == [(1, "sentinel")]


async def test_typing_is_let_through_again_after_the_interval(stack: Stack) -> None:
    interval = 1.0
    stack.add_gateway(BURROW_TYPING_INTERVAL=str(interval))
    stack.room("pace", "alice", "bob")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob, \
            raw_ws(stack.gateways[1].ws_url, stack.token("alice")) as alice:
        await subscribe(bob, "pace")
        await alice.send({"type": "typing", "room": "pace"})
        await bob.recv_until("typing")
        first = time.monotonic()
        second: asyncio.Task[dict[str, Any]] = asyncio.create_task(bob.recv_until("typing"))
        while not second.done():  # a client repeating typing while the user types
            await alice.send({"type": "typing", "room": "pace"})
            await asyncio.wait([second], timeout=0.1)
            assert time.monotonic() - first < T
        assert second.result()["user"] == "alice"
        assert time.monotonic() - first >= interval - 0.2


async def test_typing_from_a_stranger_is_forbidden_and_reaches_nobody(stack: Stack) -> None:
    stack.room("club", "alice")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as alice, \
            raw_ws(stack.gateways[0].ws_url, stack.token("mallory")) as mallory:
        await subscribe(alice, "club")
        await mallory.send({"type": "typing", "room": "club"})
        refused = await mallory.recv()
        assert (refused["type"], refused["code"], refused["room"]) == (
            "error", "forbidden", "club")
        await alice.send({"type": "send", "room": "club", "client_id": "s", "body": "x"})
        assert [f["type"] for f in await frames_until(alice, "message")
                if f["type"] == "typing"] == []


@pytest.mark.parametrize(("frame", "code"), [
    ({"type": "typing"}, "bad_room"),
    ({"type": "typing", "room": ""}, "bad_room"),
    ({"type": "typing", "room": "room.*"}, "bad_room"),
    ({"type": "typing", "room": 7}, "bad_room"),
    ('{"type": "typing", "room": "r"', "bad_json"),
    ({"type": "Typing", "room": "r"}, "unknown_type"),
])
async def test_malformed_typing_frames_get_an_error_and_the_connection_survives(
        stack: Stack, frame: object, code: str) -> None:
    async with raw_ws(stack.gateways[0].ws_url, stack.token("amy")) as ws:
        await ws.send(frame)
        error = await ws.recv()
        assert (error["type"], error["code"]) == ("error", code)
        await ws.send({"type": "ping", "id": 2})
        assert await ws.recv() == {"type": "pong", "id": 2}


async def test_a_typing_frame_with_extra_fields_is_taken_without_an_answer(
        stack: Stack) -> None:
    stack.room("loose", "amy")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("amy")) as ws:
        await ws.send({"type": "typing", "room": "loose", "state": "started"})
        await ws.send({"type": "ping", "id": 3})
        assert await ws.recv() == {"type": "pong", "id": 3}


class Change:
    """One gateway's handling of a connection change, run step by step: the change, then
    the version, then the count, then the settle (the order of ``PresenceTracker._settle``)."""

    def __init__(self, store: PresenceStore, announced: list[tuple[int, bool]]) -> None:
        self.store, self.announced = store, announced
        self.version = 0
        self.online = False

    async def bump(self) -> None:
        self.version = (await self.store.bump_many(["u"]))["u"]

    async def count(self) -> None:
        self.online = "u" in await self.store.online(["u"])

    async def settle(self) -> None:
        if await self.store.settle("u", self.version, self.online):
            self.announced.append((self.version, self.online))


@pytest.fixture
async def store(mongo_url: str) -> AsyncIterator[PresenceStore]:
    client = database.open_client(mongo_url, 5)
    yield PresenceStore(database.database(client), ttl=60)
    await client.close()


async def test_two_connects_racing_on_two_gateways_announce_online_once(
        store: PresenceStore) -> None:
    """Both connections are recorded before either gateway counts: each sees two, yet
    the user, offline before, is announced online (counting "am I the only one" would
    announce nothing)."""
    announced: list[tuple[int, bool]] = []
    a, b = Change(store, announced), Change(store, announced)
    await store.connected("c1", "u", "A")
    await store.connected("c2", "u", "B")
    await a.bump()
    await b.bump()
    await a.count()
    await b.count()
    await b.settle()
    await a.settle()  # older: changes nothing
    assert announced == [(b.version, True)]


async def online_then_counted_close_and_reopen(
        store: PresenceStore, announced: list[tuple[int, bool]]) -> tuple[Change, Change, Change]:
    """u comes online on gateway A; A closes that connection and counts (0) before u's
    connection on B lands, which B then counts (1). Neither has settled yet."""
    first = Change(store, announced)
    await store.connected("c1", "u", "A")
    await first.bump()
    await first.count()
    await first.settle()
    closing, opening = Change(store, announced), Change(store, announced)
    await store.disconnected("c1")
    await closing.bump()
    await closing.count()
    await store.connected("c2", "u", "B")
    await opening.bump()
    await opening.count()
    return first, closing, opening


async def test_a_close_and_a_reconnect_elsewhere_never_end_offline(
        store: PresenceStore) -> None:
    announced: list[tuple[int, bool]] = []
    first, closing, opening = await online_then_counted_close_and_reopen(store, announced)
    # B settles first; A's stale "offline" comes last and must not win.
    await opening.settle()
    await closing.settle()
    assert announced == [(first.version, True)]
    status = await store.status.find_one({"_id": "u"})
    assert status is not None and status["online"] is True


async def test_an_offline_then_online_pair_is_ordered_by_version(
        store: PresenceStore) -> None:
    """When the close is counted before the reconnect lands, both are announced; the
    version tells clients which came last, whatever order the broker delivers them in."""
    announced: list[tuple[int, bool]] = []
    _, closing, opening = await online_then_counted_close_and_reopen(store, announced)
    await closing.settle()
    await opening.settle()
    assert [online for _, online in announced] == [True, False, True]
    assert max(announced) == (opening.version, True)


async def test_racing_connection_changes_end_on_the_true_status(store: PresenceStore) -> None:
    """Truly concurrent changes: the stored status always ends on the user's true status,
    and the announcements, in version order (the order clients apply them in),
    alternate and end on it: each flip of the stored status is announced once."""
    announced: list[tuple[int, bool]] = []
    pause = random.Random(20261207)  # seeded: the same interleaving pauses every run

    async def change(conn_id: str, up: bool) -> None:
        step = Change(store, announced)
        await asyncio.sleep(pause.random() / 50)
        if up:
            await store.connected(conn_id, "u", "gw")
        else:
            await store.disconnected(conn_id)
        await step.bump()
        await asyncio.sleep(pause.random() / 50)
        await step.count()
        await asyncio.sleep(pause.random() / 50)
        await step.settle()

    for round_ in range(6):
        conns = [f"{round_}-{i}" for i in range(4)]
        await asyncio.gather(*(change(c, True) for c in conns))
        await asyncio.gather(*(change(c, False) for c in conns[: 4 if round_ % 2 else 3]))
        truth = "u" in await store.online(["u"])
        status = await store.status.find_one({"_id": "u"})
        assert status is not None and status["online"] is truth
        statuses = [online for _, online in sorted(announced)]
        assert statuses[-1] is truth
        assert all(a is not b for a, b in itertools.pairwise(statuses)), statuses
        await asyncio.gather(*(store.disconnected(c) for c in conns))
        await change("reset", False)


async def test_a_batch_of_users_gets_versions_counts_and_statuses_in_one_go(
        store: PresenceStore) -> None:
    """The batched forms the gateway uses: more users than one ``$in`` page, some seen
    before and some new, some online; each gets a fresh version and its own count."""
    users = [f"b{i}" for i in range(120)]
    await store.connected_many([(f"conn-{u}", u) for u in users[::3]], "gw")
    first = await store.bump_many(users[:60])
    second = await store.bump_many(users)
    assert sorted(second) == sorted(users)
    assert all(second[u] > first[u] for u in users[:60])
    online = await store.online(users)
    assert online == set(users[::3])
    changed = [u for u in users if await store.settle(u, second[u], u in online)]
    assert changed == users[::3]  # the others were offline already


async def test_concurrent_batches_never_hand_out_one_version_twice(store: PresenceStore) -> None:
    users = [f"c{i}" for i in range(30)]
    batches = await asyncio.gather(*(store.bump_many(users) for _ in range(4)))
    for user in users:
        # Each batch may read a version a later increment made, but the highest is the
        # number of increments: none was lost, whatever raced the first upserts.
        assert max(b[user] for b in batches) == 4


class Interleaved:
    """The real status collection, with *between* run right after its first update: a
    settle of another gateway landing between the two updates of ours."""

    def __init__(self, collection: Any, between: Callable[[], Awaitable[object]]) -> None:
        self.collection, self.between, self.updates = collection, between, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.collection.update_one(*args, **kwargs)
        self.updates += 1
        if self.updates == 1:
            await self.between()
        return result


async def test_a_settle_that_races_in_between_is_answered_by_trying_again(
        store: PresenceStore) -> None:
    """u is online (settled at 1). Our count at version 5 says online: nothing to flip.
    Before we record that, another gateway stores "offline" at version 3 (an older
    count). Ours must not be lost: it flips the status back and announces it."""
    await store.status.insert_one({"_id": "u", "version": 5, "online": True, "settled": 1})
    other = PresenceStore(store.status.database, ttl=60)
    store.status = Interleaved(store.status, lambda: other.settle("u", 3, False))  # type: ignore[assignment]
    assert await store.settle("u", 5, True) is True
    assert store.status.updates == 3  # no flip, no keep (raced), then the flip
    assert await other.status.find_one({"_id": "u"}) == {
        "_id": "u", "version": 5, "online": True, "settled": 5}


async def test_a_settle_older_than_the_stored_one_changes_nothing(store: PresenceStore) -> None:
    await store.status.insert_one({"_id": "u", "version": 7, "online": False, "settled": 7})
    assert await store.settle("u", 6, True) is False
    assert await store.settle("u", 7, True) is False
    assert (await store.status.find_one({"_id": "u"}))["online"] is False
