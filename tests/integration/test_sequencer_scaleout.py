"""Sequencer processes share the shards out, and no message is lost, doubled or reordered
while shards move (docs/scaling.md, "Sequencer scale-out").

One run, real processes, broker and database, clients sending to 24 rooms throughout:
one sequencer holds the 4 shards; a second joins and they end up 2/2; a third takes its
share (2/1/1); SIGTERM of the first hands its shards to the others (2/2); kill -9 of
the second leaves the third with all four. Which process is active on which shard is
read from each process's ``burrow_sequencer_shard_active``; at the end every acked send
is stored once, each room's seqs run 1..n, and a subscriber saw each room's messages
once, in order, without gaps.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from burrow.client import ChatClient
from burrow.client.chat import Ack
from tests.conftest import Vhost
from tests.integration.conftest import Running, Stack, Start

pytestmark = pytest.mark.integration
T = 30
SHARDS = 4
ROOMS = [f"spread{n}" for n in range(24)]  # enough rooms for every shard to see traffic
BEAT = "0.5"  # BURROW_SEQUENCER_HEARTBEAT: settles in ~1 s, holds a shard ~1 s


def active_shards(sequencer: Running) -> set[int]:
    """The shards the process says it is the active consumer of (empty if it is gone)."""
    try:
        with urllib.request.urlopen(sequencer.url("/metrics"), timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return set()
    return {int(sample.labels["shard"]) for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "burrow_sequencer_shard_active" and sample.value == 1}


def duplicates(sequencer: Running) -> float:
    return sequencer.metric("burrow_sequencer_duplicates_total")


async def split(sequencers: list[Running], want: list[int], timeout: float = T) -> None:
    """Wait until each shard has exactly one active process among *sequencers* and their
    shares are *want* (sorted, largest first)."""
    deadline = time.monotonic() + timeout
    while True:
        held = [active_shards(s) for s in sequencers]
        every = [shard for shards in held for shard in shards]
        shares = sorted((len(h) for h in held), reverse=True)
        if sorted(every) == list(range(SHARDS)) and shares == want:
            return
        assert time.monotonic() < deadline, f"shards held: {held}, wanted shares {want}"
        await asyncio.sleep(0.2)


async def test_sequencers_share_the_shards_and_handovers_lose_nothing(
        vhost: Vhost, mongo_url: str, start: Start) -> None:
    stack = Stack(start, vhost, mongo_url)
    first = stack.add_sequencer(BURROW_SEQUENCER_HEARTBEAT=BEAT)
    stack.add_gateway()
    await asyncio.gather(*(asyncio.to_thread(stack.room, room, "alice", "bob")
                           for room in ROOMS))
    bob = await stack.client("bob")
    await asyncio.wait_for(asyncio.gather(*(bob.subscribe(room) for room in ROOMS)), T)
    alice = await stack.client("alice")
    acks: dict[str, list[Ack]] = defaultdict(list)
    sending = asyncio.Event()
    sending.set()

    async def send_throughout(client: ChatClient, lane: int) -> int:
        """Send to every room in turn, 12 at a time, until told to stop."""
        sent = 0
        rooms = itertools.cycle(ROOMS[lane::3])
        while sending.is_set():
            batch = [(next(rooms), f"{lane}-{sent + i}") for i in range(12)]
            for ack in await asyncio.wait_for(asyncio.gather(
                    *(client.send(room, body, client_id=body) for room, body in batch)),
                    T * 2):
                acks[ack.room].append(ack)
            sent += len(batch)
        return sent

    senders = [asyncio.create_task(send_throughout(alice, lane)) for lane in range(3)]
    try:
        await split([first], [4])
        second = stack.add_sequencer(BURROW_SEQUENCER_HEARTBEAT=BEAT)
        await split([first, second], [2, 2])
        assert [s.metric("burrow_sequencer_members") for s in (first, second)] == [2, 2]
        third = stack.add_sequencer(BURROW_SEQUENCER_HEARTBEAT=BEAT)
        await split([first, second, third], [2, 1, 1])
        # A handover lets go of what it has not stored (the batch in hand finished,
        # the rest given back unprocessed): nothing was stored twice so far.
        assert [duplicates(s) for s in (first, second, third)] == [0, 0, 0]
        first.app.signal(signal.SIGTERM)  # goodbye, then drain: the others take over
        assert first.exit_code(T) == 0, first.log_tail()
        await split([second, third], [2, 2])
        assert [duplicates(s) for s in (second, third)] == [0, 0]
        second.app.signal(signal.SIGKILL)
        await split([third], [4])
    finally:
        sending.clear()
    sent = sum(await asyncio.wait_for(asyncio.gather(*senders), T * 2))
    assert sent > 0 and sum(len(a) for a in acks.values()) == sent

    # every acked send stored once, each room's seqs 1..n as acked
    with MongoClient(mongo_url, serverSelectionTimeoutMS=5000) as client:
        messages = client.get_default_database().messages
        for room in ROOMS:
            docs = list(messages.find({"room": room}, {"seq": 1, "client_id": 1}).sort("seq", 1))
            assert [d["seq"] for d in docs] == list(range(1, len(docs) + 1)), room
            assert sorted((a.seq, a.client_id) for a in acks[room]) == \
                [(d["seq"], d["client_id"]) for d in docs], room
    # the subscriber saw every message once, in order, no gaps (its violations), all of them
    deadline = time.monotonic() + T
    while sum(bob.last.get(room, 0) for room in ROOMS) < sent:
        assert time.monotonic() < deadline, f"delivered {sum(bob.last.values())} of {sent}"
        await asyncio.sleep(0.1)
    assert {room: bob.last[room] for room in ROOMS} == {room: len(acks[room]) for room in ROOMS}
    for client in stack.clients:
        await client.close()
    violations = [v for client in stack.clients for v in client.violations]
    assert not violations, violations
    assert bob.messages.qsize() == sent
    assert third.app.exited is None
