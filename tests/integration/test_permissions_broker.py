"""Broker users get exactly their role's rights on a real broker (G6).

Every worker kind has a user of its own: each action a compromised process could take
beyond its job is refused with ACCESS_REFUSED, and each action of its job works.
"""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.exceptions import ProbableAuthenticationError
from aiormq.exceptions import ChannelAccessRefused

from burrow.devstack import plan
from queues import topology
from queues.declare import declare
from queues.topology import DIGEST, EMAIL, PUSH
from tests.conftest import Vhost

pytestmark = pytest.mark.integration

SEQUENCER, NOTIFIER, DIGESTER = (w.user for w in plan.WORKERS)
GATEWAY, BACKEND = "burrow-gateway", "burrow-backend"
WEBHOOKS = plan.WEBHOOKS.user
JOBS, FANOUT, INGRESS = topology.JOBS, topology.FANOUT, topology.INGRESS
EVENTS = topology.EVENTS


@pytest.fixture
async def declared(vhost: Vhost) -> Vhost:
    """Each worker kind declares its part as its own user (the notifier last: it expects
    the sequencer's chat.fanout and the digester's delay tiers)."""
    for kind in ("sequencer", "digester", "notifier"):
        async with await aio_pika.connect(vhost.url(plan.worker(kind).user)) as connection:
            await declare(await connection.channel(), topology.part(topology.build(), kind))
    return vhost


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


async def act(vhost: Vhost, user: str, action: str) -> None:
    """Do *action* as *user*, waiting for the broker's answer (a refusal closes the
    channel and raises ChannelAccessRefused):

    ``declare QUEUE``, ``declare-exchange EXCHANGE``, ``consume QUEUE``,
    ``publish EXCHANGE KEY`` (confirmed, and routed to some queue),
    ``bind QUEUE EXCHANGE KEY`` (a ``gateway.*`` or ``backend.*`` queue is declared
    first, exclusive: the user's own).
    """
    verb, *args = action.split()
    async with await aio_pika.connect(vhost.url(user)) as connection:
        channel = await connection.channel(on_return_raises=True)
        if verb == "declare":
            await channel.declare_queue(args[0], durable=True,
                                        arguments={"x-queue-type": "quorum"})
        elif verb == "declare-exchange":
            await channel.declare_exchange(args[0], "topic", durable=True)
        elif verb == "consume":
            queue = await channel.get_queue(args[0], ensure=False)
            await queue.cancel(await queue.consume(ignore))
        elif verb == "publish":
            exchange = await channel.get_exchange(args[0], ensure=False)
            await exchange.publish(aio_pika.Message(b"{}"), args[1], mandatory=True)
        elif verb == "bind":
            if args[0].startswith(("gateway.", "backend.")):
                await channel.declare_queue(args[0], exclusive=True)
            queue = await channel.get_queue(args[0], ensure=False)
            await queue.bind(await channel.get_exchange(args[1], ensure=False), args[2])
        else:
            raise AssertionError(f"unknown action {action!r}")


FORBIDDEN = [
    (GATEWAY, "declare chat.seq.9"),
    (GATEWAY, "consume chat.seq.0"),
    (GATEWAY, "publish burrow.jobs push.due"),
    # the sequencer stores and fans out: no job, no send, no job queue, no stolen copy
    (SEQUENCER, "consume push.due"),
    (SEQUENCER, "consume notify.messages"),
    (SEQUENCER, "consume digest.due"),
    (SEQUENCER, "consume email.due"),
    (SEQUENCER, "publish chat.ingress room.r1.msg"),
    (SEQUENCER, "publish chat.fanout room.r1.typing"),
    (SEQUENCER, "publish burrow.jobs push.due"),
    (SEQUENCER, "publish burrow.jobs chat.seq.dead"),
    (SEQUENCER, "bind chat.seq.dead burrow.jobs email.due"),
    # the notifier reads stored messages and pushes: no send, no fan-out, no email
    (NOTIFIER, "publish chat.ingress room.r1.msg"),
    (NOTIFIER, "publish chat.fanout room.r1.msg"),
    (NOTIFIER, "consume chat.seq.0"),
    (NOTIFIER, "consume digest.due"),
    (NOTIFIER, "consume email.due"),
    (NOTIFIER, "publish burrow.jobs email.due"),
    (NOTIFIER, "publish burrow.jobs digest.due"),
    (NOTIFIER, "publish burrow.jobs chat.seq.dead"),
    (NOTIFIER, "bind push.due burrow.jobs email.due"),  # a copy of every email
    (NOTIFIER, "bind notify.messages chat.fanout room.*.typing"),
    (NOTIFIER, "bind notify.messages chat.fanout #"),
    # the digester sends mail: no push, no stored message, no shard
    (DIGESTER, "publish burrow.jobs push.due"),
    (DIGESTER, f"publish burrow.jobs {PUSH.delay(30)}"),
    (DIGESTER, "publish burrow.jobs notify.dead"),
    (DIGESTER, "publish chat.fanout room.r1.msg"),
    (DIGESTER, "publish chat.ingress room.r1.msg"),
    (DIGESTER, "consume push.due"),
    (DIGESTER, "consume notify.messages"),
    (DIGESTER, "consume chat.seq.0"),
    (DIGESTER, "bind email.due burrow.jobs push.due"),
    (DIGESTER, "bind digest.due chat.fanout room.*.msg"),
    # a backend posts sends and the documented jobs, and reads the stored stream
    (BACKEND, "consume chat.seq.0"),
    (BACKEND, "consume notify.messages"),
    (BACKEND, "consume push.due"),
    (BACKEND, "consume digest.due"),
    (BACKEND, "consume email.due"),
    (BACKEND, "publish chat.fanout room.r1.msg"),
    (BACKEND, "publish burrow.jobs notify.messages"),
    (BACKEND, "publish burrow.jobs digest.due"),
    (BACKEND, f"publish burrow.jobs {DIGEST.delay(3600)}"),
    (BACKEND, "publish burrow.jobs push.dead"),
    (BACKEND, "publish burrow.jobs chat.seq.dead"),
    (BACKEND, "bind backend.spy chat.fanout room.r1.typing"),
    (BACKEND, "bind backend.spy chat.fanout #"),
    (BACKEND, "declare-exchange burrow.jobs"),
    (GATEWAY, "declare-exchange burrow.jobs"),
    # reports: a gateway files them but cannot read them; only a backend consumes them
    (GATEWAY, "consume moderation.reports"),
    (GATEWAY, "publish burrow.jobs moderation.reports"),
    (NOTIFIER, "consume moderation.reports"),
    (DIGESTER, "consume moderation.reports"),
    (BACKEND, "publish moderation.report moderation.reports"),  # no forged report
    # the pre-publish hook: only the sequencer asks, only backends answer and listen
    (BACKEND, "publish moderation.ask moderation.hook"),
    (GATEWAY, "publish moderation.ask moderation.hook"),
    (GATEWAY, "consume moderation.hook"),
    (NOTIFIER, "consume moderation.hook"),
    (SEQUENCER, "declare moderation.answers.not-a-hex-name"),
    (BACKEND, "consume moderation.dead"),
    # backend events: only Burrow's processes publish them; others only bind
    (BACKEND, "publish burrow.events user.offline"),
    (DIGESTER, "publish burrow.events user.offline"),
    (WEBHOOKS, "publish burrow.events user.offline"),
    (WEBHOOKS, "publish burrow.jobs push.due"),
    (WEBHOOKS, "consume moderation.reports"),
    (WEBHOOKS, "bind backend.spy chat.fanout room.*.msg"),
]


@pytest.mark.parametrize(("user", "action"), FORBIDDEN)
async def test_roles_are_refused_outside_their_rights(declared: Vhost, user: str,
                                                      action: str) -> None:
    with pytest.raises(ChannelAccessRefused):
        await act(declared, user, action)


# each role's own namespace; nobody but the admin may declare in another one's
NAMESPACES = {GATEWAY: ("gateway.",), SEQUENCER: ("chat.", "moderation."), NOTIFIER: ("notify.", "push."),
              DIGESTER: ("digest.", "email."), BACKEND: ("backend.",), WEBHOOKS: ("webhook.",)}


@pytest.mark.parametrize(("user", "name"), [
    (user, f"{prefix}stolen") for user in NAMESPACES
    for other, prefixes in NAMESPACES.items() if other != user for prefix in prefixes])
async def test_nobody_declares_in_another_roles_namespace(declared: Vhost, user: str,
                                                          name: str) -> None:
    with pytest.raises(ChannelAccessRefused):
        await act(declared, user, f"declare {name}")
    await act(declared, "burrow-admin", f"declare {name}")


ALLOWED = {
    GATEWAY: ["publish chat.ingress room.r1.msg", "bind gateway.test-1 chat.fanout room.r1.msg",
              "publish moderation.report moderation.reports"],
    SEQUENCER: ["consume chat.seq.0", "publish chat.fanout room.r1.msg",
                "bind chat.seq.dead burrow.jobs chat.seq.dead",
                "publish moderation.ask moderation.hook"],
    NOTIFIER: ["consume notify.messages", "consume push.due",
               *(f"publish burrow.jobs {key}" for key in (
                   PUSH.due, PUSH.delay(30), PUSH.retry(5), PUSH.retry(300), PUSH.dead,
                   topology.NOTIFY_DEAD, DIGEST.delay(3600), DIGEST.delay(86400)))],
    DIGESTER: ["consume digest.due", "consume email.due",
               *(f"publish burrow.jobs {key}" for key in (
                   DIGEST.delay(3600), DIGEST.retry(60), DIGEST.dead, EMAIL.retry(3600),
                   EMAIL.dead))],
    BACKEND: ["publish chat.ingress room.r1.msg", "publish burrow.jobs push.due",
              f"publish burrow.jobs {PUSH.delay(30)}", "publish burrow.jobs email.due",
              "bind backend.indexer chat.fanout room.*.msg",
              "bind backend.lobby chat.fanout room.lobby.msg", "consume moderation.reports",
              "consume moderation.hook", "bind backend.events burrow.events user.offline",
              "bind backend.all-events burrow.events #"],
    WEBHOOKS: ["declare webhook.due", "bind webhook.due burrow.events #",
               "bind webhook.due burrow.jobs webhook.due", "consume webhook.due"],
}


async def test_the_hook_round_trip_uses_its_own_exchanges(declared: Vhost) -> None:
    """The sequencer asks on moderation.ask and reads its own answer queue; a backend
    takes the request from moderation.hook and answers on moderation.answer (no
    amq.default: docs/moderation.md)."""
    answers = topology.HOOK_ANSWERS_PREFIX + "0" * 32
    got: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await got.put(message)

    async with await aio_pika.connect(declared.url(SEQUENCER)) as sequencer:
        channel = await sequencer.channel(on_return_raises=True)
        queue = await channel.declare_queue(answers, exclusive=True, auto_delete=True)
        await queue.bind(topology.HOOK_ANSWER, answers)
        await queue.consume(take, no_ack=True)
        ask = await channel.get_exchange(topology.HOOK_ASK, ensure=False)
        await ask.publish(aio_pika.Message(b"{}", reply_to=answers, correlation_id="c1"),
                          topology.HOOK_QUEUE)
        async with await aio_pika.connect(declared.url(BACKEND)) as backend:
            backend_channel = await backend.channel(on_return_raises=True)
            requests = await backend_channel.get_queue(topology.HOOK_QUEUE, ensure=False)
            request = await requests.get(timeout=10)
            await request.ack()
            assert request.reply_to == answers
            answer = await backend_channel.get_exchange(topology.HOOK_ANSWER, ensure=False)
            await answer.publish(aio_pika.Message(b'{"decisions": []}',
                                                  correlation_id=request.correlation_id),
                                 request.reply_to)
        answered = await asyncio.wait_for(got.get(), 10)
        assert (answered.correlation_id, answered.body) == ("c1", b'{"decisions": []}')


@pytest.mark.parametrize("user", sorted(ALLOWED))
async def test_each_role_can_do_its_job(declared: Vhost, user: str) -> None:
    for action in ALLOWED[user]:
        await act(declared, user, action)  # routed and confirmed, not refused


async def test_a_wrong_password_is_refused(vhost: Vhost) -> None:
    url = vhost.url("burrow-gateway").replace("burrow-gateway-test", "guess")
    with pytest.raises(ProbableAuthenticationError):
        await aio_pika.connect(url)


@pytest.mark.parametrize(("user", "exchange", "key"), [
    (GATEWAY, FANOUT, "room.r1.msg"),          # a forged stored message
    (GATEWAY, FANOUT, "room.r1.anything"),
    (GATEWAY, FANOUT, "#"),
    (GATEWAY, INGRESS, "room.r1.typing"),     # only sends go to ingress
    (BACKEND, INGRESS, "room.r1.member"),
    (BACKEND, INGRESS, "room.bad room.msg"),
    (SEQUENCER, FANOUT, "room.r1.member"),    # the sequencer fans out stored messages only
    (GATEWAY, EVENTS, "message.stored"),      # each publisher its own event types only
    (GATEWAY, EVENTS, "push.sent"),
    (SEQUENCER, EVENTS, "user.offline"),
    (NOTIFIER, EVENTS, "report.filed"),
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
            (GATEWAY, INGRESS, "room.r1.msg"),
            (GATEWAY, FANOUT, "room.r1.typing"),
            (GATEWAY, FANOUT, "room.r1.presence"),
            (GATEWAY, FANOUT, "room.r1.member"),
            (BACKEND, INGRESS, "room.r1.msg"),
            (SEQUENCER, FANOUT, "room.r1.msg"),
            (GATEWAY, EVENTS, "user.offline"),
            (GATEWAY, EVENTS, "member.banned"),
            (GATEWAY, EVENTS, "report.filed"),
            (SEQUENCER, EVENTS, "message.stored"),
            (NOTIFIER, EVENTS, "push.failed")):
        async with await aio_pika.connect(declared.url(user)) as connection:
            channel = await connection.channel()
            target = await channel.get_exchange(exchange, ensure=False)
            await target.publish(aio_pika.Message(b"{}"), key)  # confirmed, not refused
