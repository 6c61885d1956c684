"""A process given several broker URLs connects to one that answers and, when its node goes
away, moves to another, its consumers restored there.

Two private RabbitMQ nodes would take too long to start for the suite, so the "nodes" are
the session broker behind loopback TCP proxies (one per URL) that a test closes, and a
loopback port nobody listens on. A node of a real three-node cluster killed under a
sequencer: tests/integration/test_cluster.py (one cluster for the cluster tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aio_pika
import pytest
from prometheus_client import REGISTRY

from burrow.devstack import ports, rabbitmq
from burrow.runtime.broker import BrokerLink
from tests.conftest import Vhost
from tests.integration.conftest import Stack, Start

pytestmark = pytest.mark.integration
T = 30


class Proxy:
    """A loopback TCP proxy to the broker; :meth:`close` drops it and its connections at
    once, as a node's death resets its peers' sockets."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.connections += 1
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # a reset, not a clean AMQP close

    def url(self, broker_url: str, broker_port: int) -> str:
        return broker_url.replace(f":{broker_port}/", f":{self.port}/")


@contextlib.asynccontextmanager
async def proxies(broker: rabbitmq.RabbitNode, count: int) -> AsyncIterator[list[Proxy]]:
    opened = [await Proxy(broker.config.amqp_port).open() for _ in range(count)]
    try:
        yield opened
    finally:
        for proxy in opened:
            proxy.close()


def on_node(name: str) -> float | None:
    return REGISTRY.get_sample_value("burrow_broker_node", {"node": name})


async def test_a_link_whose_node_goes_away_moves_to_the_next_and_consumes_again(
        vhost: Vhost, broker: rabbitmq.RabbitNode) -> None:
    """Connected through proxy A, the link loses A (reset) and reconnects through B, the
    next URL; the queue and consumer declared on its robust channel are restored there and
    receive again. Back on A it would wait forever: A is closed for good."""
    direct = vhost.url("burrow-admin")
    port = broker.config.amqp_port
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        received.put_nowait(message.body)

    async def declare(channel: aio_pika.abc.AbstractRobustChannel) -> None:
        queue = await channel.declare_queue("failover.probe", auto_delete=True)
        await queue.consume(on_message, no_ack=True)

    async with proxies(broker, 2) as (a, b), \
            await aio_pika.connect(direct) as publisher:
        a_url, b_url = a.url(direct, port), b.url(direct, port)
        link = BrokerLink([a_url, b_url], "failover-test", 0.2, declare)
        link.start()
        channel = await publisher.channel()

        async def roundtrip(body: bytes) -> None:
            # the consumer may not be restored yet: publish until it receives (the queue
            # is auto-delete, so it may be gone between the loss and the restore)
            async with asyncio.timeout(T):
                while True:
                    await channel.default_exchange.publish(
                        aio_pika.Message(body), "failover.probe", mandatory=False)
                    with contextlib.suppress(TimeoutError):
                        assert await asyncio.wait_for(received.get(), 0.5) == body
                        return

        try:
            await asyncio.wait_for(link.opened(), T)
            assert (link.node, a.connections, b.connections) == (f"127.0.0.1:{a.port}", 1, 0)
            assert on_node(f"127.0.0.1:{a.port}") == 1
            await roundtrip(b"before")

            a.close()
            async with asyncio.timeout(T):
                while link.node != f"127.0.0.1:{b.port}" or not link.is_up:
                    await asyncio.sleep(0.05)
            assert b.connections == 1
            assert on_node(f"127.0.0.1:{a.port}") == 0
            assert on_node(f"127.0.0.1:{b.port}") == 1
            await roundtrip(b"after")  # the consumer came back on the other "node"
        finally:
            await link.close()
    assert link.node is None and on_node(f"127.0.0.1:{b.port}") == 0


async def test_processes_skip_a_dead_first_node_and_serve(
        vhost: Vhost, mongo_url: str, start: Start, broker: rabbitmq.RabbitNode) -> None:
    """A gateway and a sequencer whose first URL is a loopback port nobody listens on
    connect through the second: a send is acked, stored and delivered."""
    port, closed = broker.config.amqp_port, ports.free_port()

    def listed(user: str) -> str:
        real = vhost.url(user)
        return f"{real.replace(f':{port}/', f':{closed}/')}, {real}"

    stack = Stack(start, vhost, mongo_url)
    sequencer = stack.add_sequencer(BURROW_AMQP_URL=listed("burrow-sequencer"))
    gateway = stack.add_gateway(BURROW_AMQP_URL=listed("burrow-gateway"))
    try:
        stack.room("lobby", "alice")
        client = await stack.client("alice")
        await client.subscribe("lobby", since=0)
        ack = await asyncio.wait_for(client.send("lobby", "through the second node"), T)
        assert ack.seq == 1
        delivered = await asyncio.wait_for(client.messages.get(), T)
        assert (delivered.seq, delivered.body) == (1, "through the second node")
        status, history = stack.http("GET", "/v1/rooms/lobby/messages", "alice")
        assert status == 200 and [m["body"] for m in history["messages"]] == [
            "through the second node"]
        for process in (sequencer, gateway):
            log = process.log.read_text()
            assert f"connected to node 127.0.0.1:{port}" in log
            assert f"broker node 127.0.0.1:{closed} did not answer" in log
        assert gateway.metric("burrow_broker_node", node=f"127.0.0.1:{port}") == 1
        assert gateway.metric("burrow_broker_node", node=f"127.0.0.1:{closed}") == 0
    finally:
        for client in stack.clients:
            await client.close()
