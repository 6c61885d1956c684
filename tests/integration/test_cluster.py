"""Burrow on a real three-node RabbitMQ cluster (issue 18): every quorum queue replicated
on the three nodes with leaders spread, a send crossing nodes, a shard that keeps taking
and delivering sends after its leader's node is SIGKILLed, and a sequencer that moves to a
live node when its own is killed.

The cluster tests share one module, so one cluster (tests/integration/cluster.py: ~15 s
to start); each takes ``whole_cluster``, which restarts the node an earlier one killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from functools import partial

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic

from burrow.core.endpoints import node_name
from burrow.core.envelopes import BATCHED_ACKS, Send
from burrow.devstack.cluster import Cluster
from burrow.runtime.broker import BROKER_ERRORS
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from burrow.storage import database
from burrow.storage.messages import MessageStore
from consumers.sequencer import Sequencer
from queues import topology
from queues.declare import declare
from queues.definitions import VHOST
from tests.conftest import PASSWORDS, Vhost, until
from tests.integration.cluster import NODES, rabbit_cluster, whole_cluster
from tests.integration.test_sequencer_faults import gateway_link

pytestmark = pytest.mark.integration
__all__ = ["rabbit_cluster", "whole_cluster"]  # the module's fixtures
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


async def test_quorum_queues_spread_and_survive_a_killed_node(
        whole_cluster: Cluster) -> None:
    names = set(whole_cluster.names)
    assert len(names) == NODES
    for node in whole_cluster.nodes:  # one cluster, as every node sees it
        assert {n["name"] for n in node.api("GET", "/api/nodes") if n["running"]} == names

    placement = whole_cluster.placement(VHOST)
    assert set(placement) == {q.name for q in topology.build().queues}
    assert {p.name: set(p.members) for p in placement.values()} == {
        name: names for name in placement}, "a quorum queue without a replica on every node"
    leaders = Counter(p.leader for p in placement.values())
    assert set(leaders) == names, f"a node leads no queue: {leaders}"
    shard_leaders = {placement[topology.shard_queue(i)].leader
                     for i in range(topology.DEFAULT_SHARDS)}
    assert len(shard_leaders) > 1, f"every shard is led by {shard_leaders}"

    room = f"r-{uuid.uuid4().hex[:12]}"
    shard = await send_through(whole_cluster, publish_via=0, consume_via=NODES - 1, room=room)

    # SIGKILL the node leading that room's shard; the same room goes through the two others
    victim = whole_cluster.names.index(placement[shard].leader)
    whole_cluster.kill(victim)
    first, second = (i for i in range(NODES) if i != victim)
    assert await send_through(whole_cluster, publish_via=first, consume_via=second,
                              room=room) == shard
    # a survivor leads it now (the API shows the election a moment after it happened)
    await until(lambda: whole_cluster.placement(VHOST)[shard].leader
                in names - {whole_cluster.names[victim]}, T)


async def test_a_sequencer_moves_to_a_live_node_when_its_node_is_killed(
        whole_cluster: Cluster, mongo_url: str, process_env: dict[str, str]) -> None:
    """On a real three-node cluster: a sequencer given the three URLs connects to node 1;
    node 1 is SIGKILLed; the sequencer reconnects to node 2, its shard consumers are
    restored there, and a send published through node 3 is acked and stored once."""
    urls = whole_cluster.amqp_urls("burrow-sequencer", PASSWORDS["burrow-sequencer"], VHOST)
    settings = Settings.from_env({**process_env, "BURROW_AMQP_URL": ",".join(urls),
                                  "BURROW_MONGO_URL": mongo_url,
                                  "BURROW_RECONNECT_INTERVAL": "0.5"})
    part = topology.for_workers(settings, ("sequencer",))
    runtime = Runtime.open(settings, "test-sequencer", on_channel=partial(declare, topo=part))
    sequencer = Sequencer(settings)
    first, second = (node_name(u) for u in urls[:2])
    try:
        await asyncio.wait_for(sequencer.start(runtime), T)
        assert runtime.broker.node == first
        async with gateway_link(Vhost(whole_cluster.nodes[2], VHOST)) as (
                ingress, acks, reply_to):
            async def send(n: int) -> None:
                """Publish until acked (same client_id): while the quorum queues elect
                new leaders and the sequencer's consumers come back, a send may wait."""
                async with asyncio.timeout(T):
                    while True:
                        with contextlib.suppress(*BROKER_ERRORS, TimeoutError):
                            await ingress.publish(aio_pika.Message(
                                Send("lobby", "alice", f"c{n}", f"hello {n}").to_json(),
                                correlation_id=f"corr{n}", reply_to=reply_to,
                                headers={BATCHED_ACKS: 1},
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                "room.lobby.msg", timeout=5)
                            while f'"client_id":"c{n}"'.encode() not in (
                                    ack := await asyncio.wait_for(acks.get(), 5)):
                                pass
                            assert f'"seq":{n}'.encode() in ack
                            return

            await send(1)
            whole_cluster.kill(0)
            async with asyncio.timeout(T):
                while runtime.broker.node != second or not runtime.broker.is_up:
                    await asyncio.sleep(0.05)
            await send(2)
        stored = await MessageStore(database.database(runtime.db)).history("lobby")
        assert [(m.seq, m.client_id) for m in stored] == [(1, "c1"), (2, "c2")]
    finally:
        await sequencer.drain()
        await runtime.close()
