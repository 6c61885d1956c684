"""Burrow's topology on a real three-node RabbitMQ cluster (issue 18): every quorum queue
replicated on the three nodes with leaders spread, a send crossing nodes, and a shard that
keeps taking and delivering sends after its leader's node is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic

from burrow.devstack.cluster import Cluster
from queues import topology
from queues.definitions import VHOST
from tests.conftest import PASSWORDS, until
from tests.integration.cluster import NODES, rabbit_cluster

pytestmark = pytest.mark.integration
__all__ = ["rabbit_cluster"]  # the module's fixture
T = 30.0


async def send_through(cluster: Cluster, publish_via: int, consume_via: int,
                       room: str) -> str:
    """Publish a send for *room* as a gateway through node *publish_via* (confirmed:
    the quorum took it), take it from the shards as the sequencer through node
    *consume_via*; the shard queue it came from."""
    def url(index: int, user: str) -> str:
        return cluster.nodes[index].config.amqp_url(user, PASSWORDS[user], VHOST)

    message_id = uuid.uuid4().hex
    arrived: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with await aio_pika.connect(url(consume_via, "burrow-sequencer")) as consumer, \
            await aio_pika.connect(url(publish_via, "burrow-gateway")) as publisher:
        channel = await consumer.channel()
        for index in range(topology.DEFAULT_SHARDS):
            shard = await channel.get_queue(topology.shard_queue(index), ensure=False)

            async def take(message: AbstractIncomingMessage, name: str = shard.name) -> None:
                await message.ack()
                if message.message_id == message_id and not arrived.done():
                    arrived.set_result(name)

            await shard.consume(take, timeout=T)
        ingress = await (await publisher.channel()).get_exchange(topology.INGRESS,
                                                                  ensure=False)
        confirm = await ingress.publish(
            aio_pika.Message(b'{"text": "hi"}', message_id=message_id,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            f"room.{room}.msg", timeout=T)
        assert isinstance(confirm, Basic.Ack), confirm
        return await asyncio.wait_for(arrived, T)


async def test_quorum_queues_spread_and_survive_a_killed_node(rabbit_cluster: Cluster) -> None:
    names = set(rabbit_cluster.names)
    assert len(names) == NODES
    for node in rabbit_cluster.nodes:  # one cluster, as every node sees it
        assert {n["name"] for n in node.api("GET", "/api/nodes") if n["running"]} == names

    placement = rabbit_cluster.placement(VHOST)
    assert set(placement) == {q.name for q in topology.build().queues}
    assert {p.name: set(p.members) for p in placement.values()} == {
        name: names for name in placement}, "a quorum queue without a replica on every node"
    leaders = Counter(p.leader for p in placement.values())
    assert set(leaders) == names, f"a node leads no queue: {leaders}"
    shard_leaders = {placement[topology.shard_queue(i)].leader
                     for i in range(topology.DEFAULT_SHARDS)}
    assert len(shard_leaders) > 1, f"every shard is led by {shard_leaders}"

    room = f"r-{uuid.uuid4().hex[:12]}"
    shard = await send_through(rabbit_cluster, publish_via=0, consume_via=NODES - 1, room=room)

    # SIGKILL the node leading that room's shard; the same room goes through the two others
    victim = rabbit_cluster.names.index(placement[shard].leader)
    rabbit_cluster.kill(victim)
    first, second = (i for i in range(NODES) if i != victim)
    assert await send_through(rabbit_cluster, publish_via=first, consume_via=second,
                              room=room) == shard
    # a survivor leads it now (the API shows the election a moment after it happened)
    await until(lambda: rabbit_cluster.placement(VHOST)[shard].leader
                in names - {rabbit_cluster.names[victim]}, T)
