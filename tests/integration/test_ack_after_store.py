"""G1 from the inside: a sequencer acks and fans out only what the database has stored.

The guarantee tests see acks and stored documents after the fact, so a sequencer that
acked before its insert completed would pass them. Here a real sequencer runs in this
process against the real broker and database, with its store wrapped: the insert is held
(a database that stalls) or fails halfway through a batch (the ordered insert stored a
prefix, then the connection broke). Nothing may reach the senders or the rooms before the
store, and after the failure every send is stored once, gap-free, and acked once with
the seq it was stored with.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import aio_pika
import orjson
import pytest
from pymongo.errors import AutoReconnect

from burrow.core import ids
from burrow.core.envelopes import BATCHED_ACKS, Send, Stored, decode_acks
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from burrow.storage.messages import MessageStore
from consumers.sequencer import Sequencer
from queues import topology
from queues.declare import declare
from tests.conftest import Vhost, until

pytestmark = pytest.mark.integration
T = 30
ROOM = "vault"


@dataclass
class Gated:
    """A message store whose inserts wait at a gate and may fail halfway."""

    store: MessageStore
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[list[tuple[int, str]]] = field(default_factory=list)  # (seq, client_id)
    fail_call: int | None = None  # this insert (0: the first) stores a prefix, then breaks
    fail_after: int = 0  # the prefix's length
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def insert(self, messages: Sequence[Stored]) -> None:
        self.calls.append([(m.seq, m.client_id) for m in messages])
        self.entered.set()
        await self.gate.wait()
        if len(self.calls) - 1 == self.fail_call:
            await self.store.insert(messages[:self.fail_after])
            raise AutoReconnect("connection closed in the middle of insert_many")
        await self.store.insert(messages)

    def __getattr__(self, name: str) -> object:  # the reads go to the real store
        return getattr(self.store, name)


@dataclass
class Gateway:
    """What a gateway sees: its acks and the room's fan-out, in one queue, in order."""

    ingress: aio_pika.abc.AbstractExchange
    channel: aio_pika.abc.AbstractChannel
    queue_name: str
    frames: asyncio.Queue[tuple[str, bytes]]

    async def send(self, client_id: str) -> None:
        await self.ingress.publish(aio_pika.Message(
            Send(ROOM, "alice", client_id, f"body of {client_id}").to_json(),
            correlation_id=client_id, reply_to=self.queue_name, headers={BATCHED_ACKS: 1},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), ids.message_key(ROOM))

    async def everything_so_far(self) -> list[tuple[str, bytes]]:
        """All that reached this queue until now: a marker published after it comes back
        behind it (one queue is FIFO), so nothing the sequencer published is in transit."""
        marker = uuid.uuid4().hex.encode()
        await self.channel.default_exchange.publish(aio_pika.Message(marker),
                                                    self.queue_name)
        seen = []
        while (item := await asyncio.wait_for(self.frames.get(), T)) != ("marker", marker):
            seen.append(item)
        return seen


@contextlib.asynccontextmanager
async def gateway(vhost: Vhost) -> AsyncIterator[Gateway]:
    # the admin user: a test queue that also takes markers from the default exchange
    connection = await aio_pika.connect(vhost.url("burrow-admin"))
    try:
        channel = await connection.channel()
        name = f"gateway.test.{uuid.uuid4().hex[:8]}"
        queue = await channel.declare_queue(name, exclusive=True)
        await queue.bind(topology.REPLY, routing_key=name)
        await queue.bind(topology.FANOUT, routing_key=ids.message_key(ROOM))
        frames: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if message.exchange == topology.REPLY:
                for _, ack in decode_acks(message.body):
                    frames.put_nowait(("ack", ack.encode()))
            elif message.exchange == topology.FANOUT:
                frames.put_nowait(("message", message.body))
            else:
                frames.put_nowait(("marker", message.body))

        await queue.consume(on_message, no_ack=True)
        ingress = await channel.get_exchange(topology.INGRESS, ensure=False)
        yield Gateway(ingress, channel, name, frames)
    finally:
        await connection.close()


@pytest.fixture
async def sequencer(vhost: Vhost, mongo_url: str,
                    process_env: dict[str, str]) -> AsyncIterator[tuple[Sequencer, Gated]]:
    settings = Settings.from_env({**process_env, "BURROW_AMQP_URL": vhost.url("burrow-sequencer"),
                                  "BURROW_MONGO_URL": mongo_url,
                                  "BURROW_RECONNECT_INTERVAL": "0.2"})
    part = topology.for_workers(settings, ("sequencer",))  # what `consumers sequencer` declares
    runtime = Runtime.open(settings, "test-sequencer", on_channel=partial(declare, topo=part))
    running = Sequencer(settings)
    try:
        await asyncio.wait_for(running.start(runtime), T)
        assert running.store is not None
        gated = Gated(running.store)
        running.store = gated  # type: ignore[assignment]
        yield running, gated
    finally:
        await running.drain()
        await runtime.close()


def acks(frames: list[tuple[str, bytes]]) -> list[tuple[str, int]]:
    """(client_id, seq) of each ack among *frames*."""
    return [(frame["client_id"], frame["seq"])
            for kind, body in frames if kind == "ack" for frame in [orjson.loads(body)]]


async def stored(gated: Gated) -> list[tuple[int, str]]:
    return [(m.seq, m.client_id) for m in await gated.store.history(ROOM)]


async def test_nothing_is_acked_or_fanned_out_while_the_store_stalls(
        vhost: Vhost, sequencer: tuple[Sequencer, Gated]) -> None:
    _, gated = sequencer
    async with gateway(vhost) as gw:
        await gw.send("c1")
        await asyncio.wait_for(gated.entered.wait(), T)  # the insert has begun, and waits
        assert await gw.everything_so_far() == []
        assert await stored(gated) == []
        gated.gate.set()
        frames = [await asyncio.wait_for(gw.frames.get(), T) for _ in range(2)]
        assert sorted(kind for kind, _ in frames) == ["ack", "message"]
        assert acks(frames) == [("c1", 1)]
    assert await stored(gated) == [(1, "c1")]


async def test_a_batch_that_fails_halfway_is_stored_once_and_acked_once(
        vhost: Vhost, sequencer: tuple[Sequencer, Gated]) -> None:
    """The ordered insert stored a prefix (c2, c3) and then the connection broke: the
    sequencer acks none of the batch, retries it, finds the prefix stored (no second
    copy, no new seq for it) and stores the rest after it; every send acked once."""
    running, gated = sequencer
    gated.fail_call, gated.fail_after = 1, 2  # the second insert stores two, then breaks
    async with gateway(vhost) as gw:
        await gw.send("c1")
        await asyncio.wait_for(gated.entered.wait(), T)  # c1's batch waits at the gate
        for n in range(2, 7):  # these queue up behind it: the next batch holds all five
            await gw.send(f"c{n}")
        await until(lambda: sum(slot.inbox.qsize() for slot in running.slots) == 5)
        gated.gate.set()
        frames = [await asyncio.wait_for(gw.frames.get(), T) for _ in range(12)]
        frames += await gw.everything_so_far()  # and nothing more: no second ack
    assert gated.calls[:2] == [[(1, "c1")], [(n, f"c{n}") for n in range(2, 7)]]
    assert len(gated.calls) >= 3  # the failed batch was inserted again
    assert sorted(acks(frames)) == [(f"c{n}", n) for n in range(1, 7)]
    fanned_out = [orjson.loads(body)["seq"] for kind, body in frames if kind == "message"]
    assert fanned_out == list(range(1, 7))
    assert await stored(gated) == [(n, f"c{n}") for n in range(1, 7)]
