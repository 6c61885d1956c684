"""Broker users get exactly their role's rights on a real broker (G6)."""

from __future__ import annotations

import aio_pika
import pytest
from aio_pika.exceptions import ProbableAuthenticationError
from aiormq.exceptions import ChannelAccessRefused

from queues import topology
from queues.declare import declare
from tests.conftest import Vhost

pytestmark = pytest.mark.integration


@pytest.fixture
async def declared(vhost: Vhost) -> Vhost:
    async with await aio_pika.connect(vhost.url("burrow-worker")) as connection:
        await declare(await connection.channel(), topology.build())
    return vhost


async def test_gateway_may_publish_sends_and_own_its_queue(declared: Vhost) -> None:
    async with await aio_pika.connect(declared.url("burrow-gateway")) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("gateway.test-1", exclusive=True)
        fanout = await channel.get_exchange(topology.FANOUT, ensure=False)
        await queue.bind(fanout, "room.r1.msg")
        ingress = await channel.get_exchange(topology.INGRESS, ensure=False)
        await ingress.publish(aio_pika.Message(b"{}"), "room.r1.msg")


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


@pytest.mark.parametrize(("user", "action"), [
    ("burrow-gateway", "declare chat.seq.9"),
    ("burrow-gateway", "consume chat.seq.0"),
    ("burrow-gateway", "publish burrow.jobs"),
    ("burrow-backend", "consume chat.seq.0"),
    ("burrow-backend", "declare chat.seq.9"),
    ("burrow-worker", "declare gateway.stolen"),
])
async def test_roles_are_refused_outside_their_rights(declared: Vhost, user: str,
                                                      action: str) -> None:
    verb, name = action.split()
    async with await aio_pika.connect(declared.url(user)) as connection:
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            if verb == "declare":
                await channel.declare_queue(name, durable=True,
                                            arguments={"x-queue-type": "quorum"})
            elif verb == "consume":
                queue = await channel.get_queue(name, ensure=False)
                await queue.consume(ignore)
            else:
                exchange = await channel.get_exchange(name, ensure=False)
                await exchange.publish(aio_pika.Message(b"{}"), "push.due")


async def test_a_wrong_password_is_refused(vhost: Vhost) -> None:
    url = vhost.url("burrow-gateway").replace("burrow-gateway-test", "guess")
    with pytest.raises(ProbableAuthenticationError):
        await aio_pika.connect(url)


@pytest.mark.parametrize(("user", "exchange", "key"), [
    ("burrow-gateway", topology.FANOUT, "room.r1.msg"),          # a forged stored message
    ("burrow-gateway", topology.FANOUT, "room.r1.anything"),
    ("burrow-gateway", topology.FANOUT, "#"),
    ("burrow-gateway", topology.INGRESS, "room.r1.typing"),     # only sends go to ingress
    ("burrow-backend", topology.INGRESS, "room.r1.member"),
    ("burrow-backend", topology.INGRESS, "room.bad room.msg"),
])
async def test_topic_permissions_refuse_forged_routing_keys(declared: Vhost, user: str,
                                                             exchange: str, key: str) -> None:
    """A compromised gateway cannot fan out a message as if the sequencer had stored it,
    nor a backend publish anything but sends into ingress (topic permissions)."""
    async with await aio_pika.connect(declared.url(user)) as connection:
        channel = await connection.channel()
        target = await channel.get_exchange(exchange, ensure=False)
        with pytest.raises(ChannelAccessRefused):
            await target.publish(aio_pika.Message(b"{}"), key)


async def test_topic_permissions_let_each_role_do_its_job(declared: Vhost) -> None:
    for user, exchange, key in (
            ("burrow-gateway", topology.INGRESS, "room.r1.msg"),
            ("burrow-gateway", topology.FANOUT, "room.r1.typing"),
            ("burrow-gateway", topology.FANOUT, "room.r1.presence"),
            ("burrow-gateway", topology.FANOUT, "room.r1.member"),
            ("burrow-backend", topology.INGRESS, "room.r1.msg"),
            ("burrow-worker", topology.FANOUT, "room.r1.msg")):
        async with await aio_pika.connect(declared.url(user)) as connection:
            channel = await connection.channel()
            target = await channel.get_exchange(exchange, ensure=False)
            await target.publish(aio_pika.Message(b"{}"), key)  # confirmed, not refused
