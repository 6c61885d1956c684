"""The procedures of docs/admin.md, done through the management HTTP API the UI uses.

Each test follows one procedure as an operator would, against the real broker, the
real worker and gateway processes and a capturing SMTP server: read a dead queue and
replay it with a dynamic shovel (the job is then done exactly once), watch a shard's
single active consumer hand over to a standby, drain a gateway, and check that the
permissions (and the absence of policies) the guide documents are what the broker holds.
"""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import MongoClient

from burrow.core import ids
from burrow.core.envelopes import Send
from burrow.core.sequencing import Plan
from burrow.devstack import rabbitmq
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from consumers.sequencer import Reply, Sequencer
from queues import definitions, topology
from tests.conftest import until
from tests.fakes.apns import device_token
from tests.fakes.smtp import FakeSmtpServer
from tests.integration.conftest import Running, Stack
from tests.integration.test_mail_jobs import dead_letters, publish, scrape
from tests.integration.test_push_jobs import Providers, notifier, providers, register

__all__ = ["providers"]  # the fixture, for the push procedure

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "admin.md"
T = 30.0


def direct_uri(vhost: str) -> str:
    """The shovel URI of a vhost on the node itself: no host, the vhost URL-encoded."""
    return "amqp:///" + urllib.parse.quote(vhost, safe="")


def shovels(stack: Stack) -> list[dict[str, Any]]:
    got = stack.vhost.api("GET", "/api/shovels/{vhost}")
    assert isinstance(got, list)
    return got


def queue_info(stack: Stack, queue: str) -> dict[str, Any]:
    got = stack.vhost.api("GET", f"/api/queues/{{vhost}}/{queue}")
    assert isinstance(got, dict)
    return got


async def test_a_dead_job_is_read_then_replayed_once_with_a_shovel(
        relay: FakeSmtpServer, stack: Stack) -> None:
    worker = stack.add_worker("digester", BURROW_SMTP_URL=relay.url,
                              BURROW_EMAIL_RETRIES="1,2")
    # The cause: the relay turns the recipient away "for now", through every retry tier.
    relay.refuse("ops@example.test", 451)
    job = {"kind": "email", "id": "weekly-report", "to": "ops@example.test",
           "subject": "Weekly report", "text": "all green"}
    await publish(stack, "email.due", job, message_id="weekly-report")

    # Procedure "Reading a dead queue": Get messages, ack mode "Nack message requeue true".
    await until(lambda: dead_letters(stack, "email.dead"), timeout=T)
    [parked] = dead_letters(stack, "email.dead")
    assert parked["payload_encoding"] == "string"
    assert orjson.loads(parked["payload"]) == job
    properties = parked["properties"]
    assert properties["message_id"] == "weekly-report"
    headers = properties["headers"]
    assert headers["x-burrow-queue"] == "email.due"
    assert headers["x-burrow-error"].startswith("gave up after 3 attempts: smtp: ")
    assert "451" in headers["x-burrow-error"]
    assert headers["x-burrow-attempt"] == 2
    # x-death: one entry per retry tier the job expired from (newest first)
    deaths = {(d["queue"], d["reason"]): d["count"] for d in headers["x-death"]}
    assert deaths == {("email.retry.1s", "expired"): 1, ("email.retry.2s", "expired"): 1}
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == (
        "email.retry.1s", "expired")
    assert relay.messages == []
    # reading it left it there (requeued)
    assert len(dead_letters(stack, "email.dead")) == 1

    # Procedure "Replaying a dead queue": fix the cause, then shovel it back.
    relay.clear()
    # The form's default URI, amqp://, is the vhost "/": refused, nothing created.
    with pytest.raises(urllib.error.HTTPError) as refused:
        stack.vhost.api("PUT", "/api/parameters/shovel/{vhost}/replay-email-dead", {
            "value": {"src-uri": "amqp://", "src-queue": "email.dead",
                      "dest-uri": "amqp://", "dest-exchange": "burrow.jobs"}})
    assert refused.value.code == 400
    assert 'may not connect to vhost \\"/\\"' in refused.value.read().decode()
    await replay(stack, "email.dead", exchange="burrow.jobs", key="email.due")

    [mail] = await relay.wait_for_async(1, timeout=T)
    assert mail.rcpt_tos == ("ops@example.test",)
    assert mail.message["Subject"] == "Weekly report"
    done = ("burrow_jobs_total", (("outcome", "done"), ("queue", "email.due")))
    await until(lambda: scrape(worker).get(done) == 1, timeout=T)
    # exactly once: nothing left to deliver anywhere, one mail, one job done
    assert dead_letters(stack, "email.due") == []
    assert dead_letters(stack, "email.dead") == []
    assert len(relay.messages) == 1
    assert worker.app.exited is None


async def replay(stack: Stack, dead: str, *, exchange: str | None = None,
                 key: str | None = None, queue: str | None = None) -> None:
    """Procedure "Replaying a dead queue": a one-off shovel from *dead* into *exchange*
    with routing key *key*, or straight into *queue*; returns once it has moved what was
    there and deleted itself, the dead queue empty."""
    name = f"replay-{dead.replace('.', '-')}"
    uri = direct_uri(stack.vhost.name)
    destination = ({"dest-queue": queue} if queue is not None
                   else {"dest-exchange": exchange, "dest-exchange-key": key})
    stack.vhost.api("PUT", f"/api/parameters/shovel/{{vhost}}/{name}", {"value": {
        "src-protocol": "amqp091", "src-uri": uri, "src-queue": dead,
        "src-delete-after": "queue-length", "dest-protocol": "amqp091", "dest-uri": uri,
        **destination, "ack-mode": "on-confirm"}})
    await until(lambda: not any(s["name"] == name for s in shovels(stack)), timeout=T)
    assert stack.vhost.api("GET", "/api/parameters/shovel/{vhost}") == []
    assert dead_letters(stack, dead) == []


async def test_a_dead_push_is_replayed_once_the_provider_is_back(
        providers: Providers, stack: Stack) -> None:
    worker = notifier(stack, providers)
    phone = device_token()
    register(stack, "bob", "apns", phone)
    providers.apns.script(phone, [429, 429, 429])  # the first try and both retry tiers
    await publish(stack, "push.due", {"kind": "direct", "user": "bob", "title": "Deploy",
                                      "body": "done"}, message_id="deploy-1")
    await until(lambda: dead_letters(stack, "push.dead"), timeout=60)
    assert len(providers.apns.requests) == 3
    await replay(stack, "push.dead", exchange="burrow.jobs", key="push.due")
    requests = await providers.apns.wait_for_async(4, timeout=60)
    assert requests[3].token == phone
    assert requests[3].payload is not None
    assert requests[3].payload["aps"]["alert"]["body"] == "done"
    done = ("burrow_jobs_total", (("outcome", "done"), ("queue", "push.due")))
    await until(lambda: scrape(worker).get(done) == 1, timeout=T)
    assert len(providers.apns.requests) == 4  # delivered once, after three refusals
    assert dead_letters(stack, "push.due") == [] == dead_letters(stack, "push.dead")


class Poisoned(Sequencer):
    """A sequencer with a bug two sends trip over: ``stored-first`` after it is stored
    (never acked nor fanned out), ``never-stored`` before."""

    async def _store(self, sends: list[tuple[Send, Reply]]) -> Plan[Reply]:
        if any(send.client_id == "never-stored" for send, _ in sends):
            raise KeyError("a bug before the store")
        return await super()._store(sends)

    async def _publish(self, plan: Plan[Reply]) -> None:
        if any(o.stored.client_id == "stored-first" for o in plan.outcomes):
            raise KeyError("a bug after the store")
        await super()._publish(plan)


async def test_sends_that_crashed_a_sequencer_are_replayed_into_their_shard_once(
        stack: Stack, process_env: dict[str, str]) -> None:
    """Procedure for ``chat.seq.dead``: a send handed out ten times without success is
    parked with reason ``delivery_limit``; after the fix it goes back into the shard it
    came from, and is stored once whether or not the crash came after its store."""
    stack.sequencers[0].app.stop()
    settings = Settings.from_env({**process_env, "BURROW_MONGO_URL": stack.mongo_url,
                                  "BURROW_AMQP_URL": stack.vhost.url("burrow-sequencer"),
                                  "BURROW_RECONNECT_INTERVAL": "0.05"})
    runtime = Runtime.open(settings, "poisoned-sequencer")
    poisoned = Poisoned(settings)
    try:
        await asyncio.wait_for(poisoned.start(runtime), T)
        for count, client_id in enumerate(("stored-first", "never-stored"), start=1):
            await publish(stack, ids.message_key("ops"),
                          orjson.loads(Send("ops", "alice", client_id, client_id).to_json()),
                          exchange=topology.INGRESS, message_id=client_id)
            await until(lambda n=count: len(dead_letters(stack, topology.SHARD_DEAD)) == n,
                        timeout=60)
    finally:
        await poisoned.drain()
        await runtime.close()
    parked = dead_letters(stack, topology.SHARD_DEAD)
    headers = [p["properties"]["headers"] for p in parked]
    assert [h["x-death"][0]["reason"] for h in headers] == ["delivery_limit"] * 2
    [shard] = {h["x-first-death-queue"] for h in headers}
    assert shard.startswith("chat.seq.")
    assert [m["client_id"] for m in stored_messages(stack, "ops")] == ["stored-first"]

    fixed = stack.add_sequencer()
    await replay(stack, topology.SHARD_DEAD, queue=shard)
    await until(lambda: len(stored_messages(stack, "ops")) == 2, timeout=T)
    assert [(m["seq"], m["client_id"]) for m in stored_messages(stack, "ops")] == [
        (1, "stored-first"), (2, "never-stored")]
    duplicates = "burrow_sequencer_duplicates_total"
    await until(lambda: fixed.metric(duplicates) == 1, timeout=T)  # stored-first, again
    assert dead_letters(stack, topology.SHARD_DEAD) == []


def stored_messages(stack: Stack, room: str) -> list[dict[str, Any]]:
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        return list(client.get_default_database().messages.find(
            {"room": room}, {"seq": 1, "client_id": 1}).sort("seq", 1))


def connection_name(stack: Stack, connection: str) -> str:
    """The name a Burrow process gave its connection (shown in the Connections tab)."""
    got = stack.vhost.api("GET", "/api/connections/" + urllib.parse.quote(connection, safe=""))
    assert isinstance(got, dict)
    provided = got["client_properties"]["connection_name"]
    assert isinstance(provided, str)
    return provided


def shard_consumers(stack: Stack, shard: str) -> list[tuple[str, str, str]]:
    """(process, activity status, connection) per consumer of *shard*, the active first.

    Empty until the queue's statistics name the single active consumer (the management
    plugin refreshes them every few seconds), while they disagree with the consumer
    list (during a handover), and while a consumer's channel is not described yet (the
    API gives ``channel_details: []`` for a channel it has no statistics of).
    """
    info = queue_info(stack, shard)
    tag = info.get("single_active_consumer_ctag")
    consumers = sorted(info["consumer_details"], key=lambda c: c["activity_status"])
    active = [c["consumer_tag"] for c in consumers if c["activity_status"] == "single_active"]
    if tag is None or active != [tag] or not all(
            isinstance(c.get("channel_details"), dict) for c in consumers):
        return []
    return [(connection_name(stack, c["channel_details"]["connection_name"]),
             c["activity_status"], c["channel_details"]["connection_name"])
            for c in consumers]  # "single_active" sorts before "waiting"


async def terminate(process: Running) -> int | None:
    """SIGTERM *process* and wait for its exit without blocking the test's event loop."""
    process.app.signal(signal.SIGTERM)
    await until(lambda: process.app.exited is not None, timeout=T)
    return process.app.exited


def pid_of(worker: Running) -> str:
    """How a sequencer's connection name ends: its instance id (host-pid) and role."""
    assert worker.app.process is not None
    return f"-{worker.app.process.pid} (sequencer)"


async def test_a_shard_hands_over_to_a_standby_sequencer(stack: Stack) -> None:
    first = stack.sequencers[0]
    second = stack.add_sequencer()
    shard = "chat.seq.0"

    def owners() -> list[tuple[str, str]]:
        return [(name[name.rindex("-"):], status)
                for name, status, _ in shard_consumers(stack, shard)]

    # Procedure "Moving a shard", step 1: who is active, who stands by.
    await until(lambda: owners() == [(pid_of(first), "single_active"),
                                     (pid_of(second), "waiting")], timeout=T)

    # Way 1: force-close the active sequencer's connection. It reconnects by itself
    # and queues up behind the new active consumer.
    [(_, _, connection), _] = shard_consumers(stack, shard)
    stack.vhost.api("DELETE", "/api/connections/" + urllib.parse.quote(connection, safe=""))
    await until(lambda: owners() == [(pid_of(second), "single_active"),
                                     (pid_of(first), "waiting")], timeout=T)
    stack.room("general", "alice", "bob")
    alice = await stack.client("alice")
    assert (await alice.send("general", "after the first handover")).seq == 1

    # Way 2: stop the active sequencer (SIGTERM drains it); the standby takes over.
    assert await terminate(second) == 0
    await until(lambda: owners() == [(pid_of(first), "single_active")], timeout=T)
    assert (await alice.send("general", "after the second handover")).seq == 2


def gateway_presence(stack: Stack, instance: str) -> tuple[list[str], list[str]]:
    """The connections and queues the gateway *instance* holds on the broker."""
    connections = stack.vhost.api("GET", "/api/vhosts/{vhost}/connections")
    queues = stack.vhost.api("GET", "/api/queues/{vhost}")
    assert isinstance(connections, list) and isinstance(queues, list)
    names = [c.get("client_properties", {}).get("connection_name", "") for c in connections]
    return ([n for n in names if n.startswith(f"gateway {instance} ")],
            [q["name"] for q in queues if q["name"].startswith(f"gateway.{instance}.")])


async def test_a_drained_gateway_leaves_the_broker_and_its_clients_move_on(
        stack: Stack) -> None:
    leaving = stack.add_gateway(BURROW_INSTANCE_ID="gw-leaving")
    stack.room("general", "alice", "bob")
    bob = await stack.client("bob", [1, 0])  # on the leaving gateway, the other next
    await asyncio.wait_for(bob.subscribe("general"), T)
    # Procedure "Draining a gateway", step 1: its connection and its queue.
    await until(lambda: all(gateway_presence(stack, "gw-leaving")), timeout=T)
    [queue] = gateway_presence(stack, "gw-leaving")[1]
    assert queue_info(stack, queue)["exclusive"] is True

    assert await terminate(leaving) == 0  # drained, then exited
    await until(lambda: 1001 in bob.close_codes, timeout=T)
    await until(lambda: gateway_presence(stack, "gw-leaving") == ([], []), timeout=T)
    alice = await stack.client("alice", [0])
    ack = await alice.send("general", "after the drain")
    message = await asyncio.wait_for(bob.messages.get(), T)
    assert (message.room, message.seq, message.body) == ("general", ack.seq, "after the drain")


def documented_permissions() -> dict[str, tuple[str, str, str]]:
    """The permission table of docs/admin.md: user -> (configure, write, read)."""
    rows: dict[str, tuple[str, str, str]] = {}
    for line in GUIDE.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) >= 4 and re.fullmatch(r"`burrow-[a-z]+`", cells[0]):
            regexes = [c.strip("`").replace("\\|", "|") for c in cells[1:4]]
            rows[cells[0].strip("`")] = (regexes[0], regexes[1], regexes[2])
    return rows


def test_the_documented_permissions_are_the_brokers(broker: rabbitmq.RabbitNode) -> None:
    # The node was loaded from definitions.render(): the "burrow" vhost as deployed.
    live = {p["user"]: (p["configure"], p["write"], p["read"])
            for p in broker.api("GET", "/api/permissions") if p["vhost"] == definitions.VHOST}
    assert documented_permissions() == live
    tags = {u["name"]: u["tags"] for u in broker.api("GET", "/api/users")}
    assert {user: tags[user] for user in live} == {
        r.user: list(r.tags) for r in definitions.ROLES}
    assert "guest" not in tags
    # "Policies and queue limits": none; every limit is a queue argument.
    assert broker.api("GET", f"/api/policies/{definitions.VHOST}") == []
    assert broker.api("GET", f"/api/operator-policies/{definitions.VHOST}") == []
