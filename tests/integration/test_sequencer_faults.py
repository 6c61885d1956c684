"""A sequencer shard keeps going whatever one batch runs into.

During a broker restart aio-pika raises ChannelInvalidStateError (a RuntimeError, not an
AMQPError) for a publish on a channel that is being reopened. That once ended a shard's
task for good: the shard's deliveries sat unacked in a dead task, and its rooms got no
store, no ack and no fan-out until the process was restarted (found by ``./dev bench
--faults``). Here the failure is put into a real sequencer's batch, against the real
broker and database, and the same send must still be stored once and acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from functools import partial

import aio_pika
import pytest
from aiormq.exceptions import ChannelInvalidStateError

from burrow.core.envelopes import BATCHED_ACKS, Send, decode_acks
from burrow.core.sequencing import Plan
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from burrow.storage import database
from burrow.storage.messages import MessageStore
from consumers.sequencer import Reply, Sequencer
from queues import topology
from queues.declare import declare
from tests.conftest import Vhost

pytestmark = pytest.mark.integration
T = 30


class FailingOnce(Sequencer):
    """A sequencer whose first fan-out fails the way a broker restart makes it fail."""

    failures = 0

    async def _publish(self, plan: Plan[Reply]) -> None:
        if self.failures == 0:
            self.failures += 1
            raise ChannelInvalidStateError("<RobustChannel ...> closed")
        await super()._publish(plan)


class Crashing(FailingOnce):
    """The first batch hits a plain bug instead."""

    async def _publish(self, plan: Plan[Reply]) -> None:
        if self.failures == 0:
            self.failures += 1
            raise KeyError("a bug")
        await Sequencer._publish(self, plan)


@contextlib.asynccontextmanager
async def gateway_link(vhost: Vhost) -> AsyncIterator[tuple[aio_pika.abc.AbstractExchange,
                                                             asyncio.Queue[bytes], str]]:
    """What a gateway holds: the ingress exchange, its reply queue, and the acks on it."""
    connection = await aio_pika.connect(vhost.url("burrow-gateway"))
    try:
        channel = await connection.channel()
        name = f"gateway.test.{uuid.uuid4().hex[:8]}"
        queue = await channel.declare_queue(name, exclusive=True)
        await queue.bind(topology.REPLY, routing_key=name)
        acks: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            for _, frame in decode_acks(message.body):
                acks.put_nowait(frame.encode())

        await queue.consume(on_reply, no_ack=True)
        yield await channel.get_exchange(topology.INGRESS, ensure=False), acks, name
    finally:
        await connection.close()


@pytest.mark.parametrize("kind", [FailingOnce, Crashing])
async def test_a_shard_survives_a_failed_batch_and_stores_the_send_once(
        vhost: Vhost, mongo_url: str, process_env: dict[str, str],
        kind: type[FailingOnce]) -> None:
    settings = Settings.from_env({**process_env, "BURROW_AMQP_URL": vhost.url("burrow-sequencer"),
                                  "BURROW_MONGO_URL": mongo_url})
    part = topology.for_workers(settings, ("sequencer",))  # what `consumers sequencer` declares
    runtime = Runtime.open(settings, "test-sequencer", on_channel=partial(declare, topo=part))
    sequencer = kind(settings)
    try:
        await asyncio.wait_for(sequencer.start(runtime), T)  # the topology is declared
        async with gateway_link(vhost) as (ingress, acks, reply_to):
            for n in (1, 2):  # the first batch fails once and comes back; then the next
                await ingress.publish(aio_pika.Message(
                    Send("lobby", "alice", f"c{n}", f"hello {n}").to_json(),
                    correlation_id=f"corr{n}", reply_to=reply_to, headers={BATCHED_ACKS: 1},
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT), "room.lobby.msg")
                ack = await asyncio.wait_for(acks.get(), T)
                assert f'"client_id":"c{n}"'.encode() in ack and f'"seq":{n}'.encode() in ack
        assert sequencer.failures == 1
        stored = await MessageStore(database.database(runtime.db)).history("lobby")
        assert [(m.seq, m.client_id) for m in stored] == [(1, "c1"), (2, "c2")]
    finally:
        await sequencer.drain()
        await runtime.close()
