"""Pushes through the real queues and a notifier process, to local FCM and APNs servers.

The fakes (:mod:`tests.fakes.fcm`, :mod:`tests.fakes.apns`) speak the providers' wire APIs
over TLS, check the OAuth bearer (FCM, through a real service-account token exchange) and
the provider JWT (APNs), and record every request; the notifier reaches them through its
ordinary settings. The push delay is shortened to a few seconds. Tests ask for the fakes
before the stack, so the worker processes stop before the servers they talk to.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tests.conftest import Vhost, eventually, until
from tests.fakes.apns import ApnsFake, device_token, write_p8_key
from tests.fakes.fcm import FcmFake
from tests.fakes.smtp import FakeSmtpServer
from tests.integration.conftest import Running, Stack, Start, raw_ws
from tests.integration.test_mail_jobs import dead_letters, publish, scrape

pytestmark = pytest.mark.integration

DELAY = 4  # seconds in push.delay: long enough for a client to act on a message first
TOPIC = "test.burrow.chat"


@dataclass
class Providers:
    fcm: FcmFake
    apns: ApnsFake
    env: dict[str, str]


@pytest.fixture
def providers(tmp_path: Path) -> Iterator[Providers]:
    key = write_p8_key(tmp_path / "AuthKey.p8")
    with FcmFake() as fcm, ApnsFake(key=key, key_id="KEY1234567", team_id="TEAM123456",
                                    topics=[TOPIC]) as apns:
        account = fcm.write_service_account(tmp_path / "service-account.json")
        env = {"BURROW_FCM_PROJECT": fcm.project_id, "BURROW_FCM_CREDENTIALS": str(account),
               "BURROW_FCM_ENDPOINT": fcm.base_url, **fcm.client_env(),
               "BURROW_APNS_KEY_FILE": str(tmp_path / "AuthKey.p8"),
               "BURROW_APNS_KEY_ID": "KEY1234567", "BURROW_APNS_TEAM_ID": "TEAM123456",
               "BURROW_APNS_TOPIC": TOPIC, "BURROW_APNS_SANDBOX": "true",
               "BURROW_APNS_ENDPOINT": f"127.0.0.1:{apns.port}",
               "BURROW_APNS_CA_FILE": str(apns.ca_file),
               "BURROW_PUSH_DELAY": str(DELAY), "BURROW_PUSH_RETRIES": "1,2"}
        yield Providers(fcm, apns, env)


def notifier(stack: Stack, providers: Providers, **env: str) -> Running:
    """A notifier without a digester: the broker holds the default topology (with the
    digest tiers it publishes into), as rabbitmq/definitions.json gives every broker."""
    stack.vhost.load_topology()
    return stack.add_worker("notifier", **{**providers.env, **env})


def register(stack: Stack, user: str, platform: str, token: str, **extra: str) -> str:
    status, body = stack.http("POST", "/v1/devices", user,
                              {"platform": platform, "token": token, **extra})
    assert status == 201, body
    return str(body["id"])


def find(stack: Stack, collection: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        return list(client.get_default_database()[collection].find(query))


async def test_an_offline_member_gets_one_push_per_room_after_the_delay(
        providers: Providers, stack: Stack) -> None:
    notifier(stack, providers)
    stack.room("general", "alice", "bob")
    fid = "fid-" + "b" * 18
    register(stack, "bob", "fcm", fid, token_kind="fid")
    phone = device_token()
    register(stack, "bob", "apns", phone)
    alice = await stack.client("alice")
    sent = time.monotonic()
    for body in ("one", "two", "three"):
        await alice.send("general", body)

    [android] = await providers.fcm.wait_for_async(1, timeout=60)
    [iphone] = await providers.apns.wait_for_async(1, timeout=60)
    assert time.monotonic() - sent >= DELAY  # a delay tier cannot deliver early
    assert (android.target_kind, android.target) == ("fid", fid)
    assert android.title == "general"
    assert android.body == "alice: three (+2 more)"  # collapsed: one push for the room
    assert android.data["room"] == "general" and android.data["unread"] == "3"
    assert android.bearer is not None and providers.fcm.token_requests[0].granted
    assert iphone.token == phone and iphone.topic == TOPIC
    assert iphone.collapse_id == "room:general"
    assert iphone.payload is not None
    assert iphone.payload["aps"]["alert"]["body"] == "alice: three (+2 more)"
    # alice, the sender, has no device and nothing scheduled; bob's pushes are recorded
    # (after each provider answered: the fakes saw them a moment before)
    await until(lambda: len(find(stack, "push_log", {})) == 2)
    assert len(find(stack, "push_log", {})) == 2


async def test_a_member_who_reads_in_time_gets_no_push(providers: Providers,
                                                       stack: Stack) -> None:
    notifier(stack, providers, BURROW_WORKER_CONCURRENCY="1")
    stack.room("general", "alice", "bob", "carol")
    register(stack, "bob", "apns", device_token())
    carol_phone = device_token()
    register(stack, "carol", "apns", carol_phone)
    alice = await stack.client("alice")
    ack = await alice.send("general", "read me")
    # bob reads after his push is scheduled, before it is due: the branch under test
    # (a read before the scheduling would take another, simpler one)
    await until(lambda: find(stack, "memberships", {"room": "general", "user": "bob",
                                                     "push_pending_at": {"$exists": 1}}))
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob:
        await bob.send({"type": "read", "room": "general", "seq": ack.seq})
        await bob.send({"type": "ping", "id": "after-read"})
        assert (await bob.recv_until("pong"))["id"] == "after-read"
    # carol did not read: her push comes, and bob's job (due first, one job at a time)
    # was decided before it
    [pushed] = await providers.apns.wait_for_async(1, timeout=60)
    assert pushed.token == carol_phone
    assert eventually(lambda: not find(stack, "memberships",
                                       {"room": "general", "push_pending_at": {"$exists": 1}}))
    assert [r.token for r in providers.apns.requests] == [carol_phone]


async def test_a_connected_but_idle_member_still_gets_the_push(providers: Providers,
                                                               stack: Stack) -> None:
    notifier(stack, providers, BURROW_IDLE_AFTER="2")
    stack.room("general", "alice", "bob")
    phone = device_token()
    register(stack, "bob", "apns", phone)
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as desktop:
        await desktop.send({"type": "subscribe", "room": "general"})
        assert (await desktop.recv())["type"] == "subscribed"
        alice = await stack.client("alice")
        await alice.send("general", "are you there?")
        assert (await desktop.recv_until("message"))["body"] == "are you there?"
        # the desktop stays connected and silent: idle after 2 s, long before the push is due
        [pushed] = await providers.apns.wait_for_async(1, timeout=60)
    assert pushed.token == phone


async def test_an_active_member_is_not_pushed(providers: Providers, stack: Stack) -> None:
    notifier(stack, providers, BURROW_IDLE_AFTER="60", BURROW_WORKER_CONCURRENCY="1")
    stack.room("general", "alice", "bob")
    register(stack, "bob", "apns", device_token())
    carol_phone = device_token()
    register(stack, "carol", "apns", carol_phone)
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as desktop:
        await desktop.send({"type": "subscribe", "room": "general"})
        assert (await desktop.recv())["type"] == "subscribed"
        alice = await stack.client("alice")
        await alice.send("general", "you are looking at it")
        assert eventually(lambda: find(stack, "memberships", {
            "user": "bob", "push_pending_at": {"$exists": 1}}))
        assert eventually(lambda: not find(stack, "memberships", {
            "user": "bob", "push_pending_at": {"$exists": 1}}))  # bob's job was decided
    # a push to carol through the same queue, one job at a time: bob's finished before it
    await publish(stack, "push.due", {"kind": "direct", "user": "carol", "title": "t",
                                      "body": "sentinel"})
    [pushed] = await providers.apns.wait_for_async(1, timeout=60)
    assert pushed.token == carol_phone
    assert len(providers.apns.requests) == 1


async def test_dead_tokens_are_removed_and_a_503_is_retried_through_a_tier(
        providers: Providers, stack: Stack) -> None:
    notifier(stack, providers)
    stack.room("general", "alice", "bob")
    gone = "registration-token-of-an-uninstalled-app"
    providers.fcm.unregister(gone)
    gone_id = register(stack, "bob", "fcm", gone)
    phone = device_token()
    phone_id = register(stack, "bob", "apns", phone)
    providers.apns.script(phone, [503])  # then the normal 200
    alice = await stack.client("alice")
    await alice.send("general", "hello")

    first, second = await providers.apns.wait_for_async(2, timeout=60)
    assert (first.status, second.status) == (503, 200)
    assert first.apns_id == second.apns_id  # the same notification, sent again
    assert eventually(lambda: not find(stack, "devices", {"_id": gone_id}))
    assert find(stack, "devices", {"_id": phone_id})
    assert [r.status for r in providers.fcm.requests] == [404]  # never retried
    assert dead_letters(stack, "push.dead") == []


async def test_a_push_that_keeps_failing_ends_in_the_dead_queue(providers: Providers,
                                                                stack: Stack) -> None:
    worker = notifier(stack, providers)
    phone = device_token()
    register(stack, "bob", "apns", phone)
    providers.apns.script(phone, [429, 429, 429])
    await publish(stack, "push.due", {"kind": "direct", "user": "bob", "title": "Deploy",
                                      "body": "done"}, message_id="deploy-1")
    await providers.apns.wait_for_async(3, timeout=60)  # first try and both retry tiers
    assert eventually(lambda: dead_letters(stack, "push.dead"))
    [parked] = dead_letters(stack, "push.dead")
    headers = parked["properties"]["headers"]
    assert "gave up after 3 attempts" in headers["x-burrow-error"]
    assert "TooManyRequests" in headers["x-burrow-error"]
    assert len(providers.apns.requests) == 3
    # parked a moment before the worker counts it: wait for the count
    dead = ("burrow_jobs_total", (("outcome", "dead"), ("queue", "push.due")))
    await until(lambda: scrape(worker).get(dead) == 1)
    seen = scrape(worker)
    assert seen[("burrow_pushes_total", (("outcome", "retry"), ("platform", "apns")))] == 3
    assert seen[("burrow_jobs_total", (("outcome", "retried"), ("queue", "push.due")))] == 2
    assert seen[("burrow_jobs_total", (("outcome", "dead"), ("queue", "push.due")))] == 1
    assert seen[("burrow_push_seconds_count", (("platform", "apns"),))] == 3


async def test_malformed_jobs_are_parked_with_a_reason_and_the_worker_goes_on(
        providers: Providers, stack: Stack) -> None:
    worker = notifier(stack, providers)
    phone = device_token()
    register(stack, "bob", "apns", phone)
    await publish(stack, "push.due", b"\xff not json", message_id="bytes")
    await publish(stack, "push.due", [1, 2], message_id="array")
    await publish(stack, "push.due", {"kind": "teleport", "user": "bob"}, message_id="kind")
    await publish(stack, "push.due", {"kind": "direct", "user": "bob", "title": "x" * 300,
                                      "body": "b"}, message_id="long-title")
    await publish(stack, "notify.messages", {"type": "message", "room": "r"},
                  message_id="no-seq", user="burrow-admin")
    await publish(stack, "push.due", {"kind": "direct", "user": "bob", "title": "Still here",
                                      "body": "after the garbage"})
    [pushed] = await providers.apns.wait_for_async(1, timeout=60)
    assert pushed.payload is not None
    assert pushed.payload["aps"]["alert"]["title"] == "Still here"

    def reasons(queue: str) -> dict[str, str]:
        return {m["properties"]["message_id"]: m["properties"]["headers"]["x-burrow-error"]
                for m in dead_letters(stack, queue)}

    assert eventually(lambda: len(reasons("push.dead")) == 4)
    parked = reasons("push.dead")
    assert "not JSON" in parked["bytes"]
    assert "not a JSON object" in parked["array"]
    assert "teleport" in parked["kind"]
    assert "title" in parked["long-title"]
    assert eventually(lambda: reasons("notify.dead"))
    assert "seq" in reasons("notify.dead")["no-seq"]
    assert worker.app.exited is None


async def test_kill_9_mid_job_loses_no_push_and_repeats_no_confirmed_one(
        providers: Providers, stack: Stack) -> None:
    first = notifier(stack, providers)
    stack.room("general", "alice", "bob")
    token = "bob-android-registration-token"
    register(stack, "bob", "fcm", token)
    phone = device_token()
    register(stack, "bob", "apns", phone)
    providers.apns.hold(phone)  # the APNs request stalls: the job is mid-flight
    alice = await stack.client("alice")
    await alice.send("general", "survive this")
    await providers.apns.wait_for_async(1, timeout=60)
    [android] = await providers.fcm.wait_for_async(1, timeout=60)
    assert eventually(lambda: len(find(stack, "push_log", {})) == 1)  # FCM confirmed

    first.app.signal(signal.SIGKILL)
    assert eventually(lambda: first.app.exited is not None)
    providers.apns.release()
    notifier(stack, providers)  # the job is redelivered to the new process
    _, again = await providers.apns.wait_for_async(2, timeout=60)
    assert again.token == phone and again.status == 200
    assert again.apns_id == providers.apns.requests[0].apns_id  # replaces, not duplicates
    assert again.collapse_id == "room:general"
    assert providers.fcm.requests == [android]  # the confirmed device was not pushed again


async def test_sigterm_finishes_the_job_in_hand_and_loses_nothing(
        providers: Providers, stack: Stack) -> None:
    first = notifier(stack, providers)
    phone = device_token()
    register(stack, "bob", "apns", phone)
    providers.apns.hold(phone)
    await publish(stack, "push.due", {"kind": "direct", "user": "bob", "title": "Bye",
                                      "body": "in flight", "id": "in-flight"})
    await providers.apns.wait_for_async(1, timeout=60)
    first.app.signal(signal.SIGTERM)  # stops taking jobs, waits for the one in hand
    providers.apns.release()
    assert eventually(lambda: first.app.exited is not None)
    assert first.app.exited == 0
    assert [r.status for r in providers.apns.requests] == [200]
    assert len(find(stack, "push_log", {})) == 1  # recorded before the ack
    # a later worker gets no leftover of that job: the next push is the only new request
    notifier(stack, providers)
    await publish(stack, "push.due", {"kind": "direct", "user": "bob", "title": "Next",
                                      "body": "fresh", "id": "fresh"})
    await providers.apns.wait_for_async(2, timeout=60)
    titles = [(r.payload or {}).get("aps", {}).get("alert", {}).get("title")
              for r in providers.apns.requests]
    assert titles == ["Bye", "Next"]


async def test_a_push_due_while_the_database_is_down_waits_for_it(
        providers: Providers, stack: Stack, mongo_server: Any) -> None:
    worker = notifier(stack, providers)
    phone = device_token()
    register(stack, "bob", "apns", phone)
    mongo_server.stop()
    try:
        worker.wait("up", "down")
        await publish(stack, "push.due", {"kind": "direct", "user": "bob", "title": "Patience",
                                          "body": "the database is back"})
    finally:
        mongo_server.start()
        mongo_server.wait_ready()
    [pushed] = await providers.apns.wait_for_async(1, timeout=90)
    assert pushed.token == phone
    assert dead_letters(stack, "push.dead") == []
    assert worker.app.exited is None


async def test_the_notifier_resumes_after_a_broker_restart(
        providers: Providers, stack: Stack, broker: Any) -> None:
    worker = notifier(stack, providers)
    stack.room("general", "alice", "bob")
    phone = device_token()
    register(stack, "bob", "apns", phone)
    # killed, not stopped: a restart either way, and RabbitMQ 3.10's clean stop waits 5 s
    # for its management agent (a clean stop's outage: tests/integration/test_broker_outage.py)
    broker.stop(timeout=0)
    try:
        worker.wait("down", "up")
    finally:
        broker.start()
        broker.wait_ready()
    worker.wait("up", "up")
    stack.gateways[0].wait("up", "up")
    stack.sequencers[0].wait("up", "up")
    alice = await stack.client("alice")
    await alice.send("general", "after the restart")
    [pushed] = await providers.apns.wait_for_async(1, timeout=90)
    assert pushed.token == phone
    assert worker.app.exited is None


async def test_previews_off_hides_message_bodies(providers: Providers, stack: Stack) -> None:
    notifier(stack, providers)
    stack.room("secret", "alice", "bob")
    status, _ = stack.http("PUT", "/v1/me/settings", "bob", {"previews": False})
    assert status == 200
    register(stack, "bob", "apns", device_token())
    alice = await stack.client("alice")
    await alice.send("secret", "the launch code is 0000")
    await alice.send("secret", "do not tell anyone")
    [pushed] = await providers.apns.wait_for_async(1, timeout=60)
    assert pushed.payload is not None
    assert pushed.payload["aps"]["alert"]["body"] == "2 new messages"
    assert "launch" not in str(pushed.payload)


async def test_the_backend_example_posts_a_message_a_push_and_an_email(
        providers: Providers, relay: FakeSmtpServer, stack: Stack) -> None:
    notifier(stack, providers)
    stack.add_worker("digester", BURROW_SMTP_URL=relay.url)
    stack.room("lobby", "alice", "bob")
    phone = device_token()
    register(stack, "bob", "apns", phone)
    example = Path(__file__).parents[2] / "examples" / "backend_jobs.py"
    done = await asyncio.create_subprocess_exec(
        sys.executable, str(example), "lobby", "bob", "bob@example.test",
        env={**os.environ, "BURROW_BACKEND_URL": stack.vhost.url("burrow-backend")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 0, err.decode()
    assert b"published" in out
    [mail] = await relay.wait_for_async(1, timeout=60)
    assert mail.rcpt_tos == ("bob@example.test",) and mail.message["Subject"] == "Hello"
    pushes = await providers.apns.wait_for_async(1, timeout=60,
                                                 where=lambda r: r.token == phone)
    assert pushes[0].payload is not None
    assert pushes[0].payload["aps"]["alert"]["title"] == "Hello"
    assert eventually(lambda: [(m["sender"], m["seq"]) for m in find(
        stack, "messages", {"room": "lobby"})] == [("system:example", 1)])


def logged(app: Running, msg_id: str) -> list[str]:
    """The events of *app*'s JSON log lines that name *msg_id*."""
    return [entry["event"] for entry in map(json.loads, app.log.read_text().splitlines())
            if entry.get("msg_id") == msg_id]


async def test_one_message_is_followed_through_every_process_by_its_id(
        providers: Providers, vhost: Vhost, mongo_url: str, start: Start) -> None:
    """With debug logs on, grepping one message id finds it in the gateway (answered,
    fanned out), the sequencer (stored) and the notifier (push scheduled, push due)."""
    debug = {"BURROW_LOG_LEVEL": "DEBUG", "BURROW_LOG_FORMAT": "json"}
    stack = Stack(start, vhost, mongo_url)
    sequencer = stack.add_sequencer(**debug)
    gateway = stack.add_gateway(**debug)
    worker = notifier(stack, providers, **debug)
    stack.room("general", "alice", "bob")
    register(stack, "bob", "fcm", "fid-" + "c" * 18, token_kind="fid")
    alice = await stack.client("alice")
    try:
        await asyncio.wait_for(alice.subscribe("general"), 30)
        ack = await asyncio.wait_for(alice.send("general", "follow me"), 30)
        await providers.fcm.wait_for_async(1, timeout=60)  # bob is offline: pushed
        await until(lambda: "room push due" in logged(worker, ack.id))
        assert "stored" in logged(sequencer, ack.id)
        assert "push scheduled" in logged(worker, ack.id)
        await until(lambda: len(logged(gateway, ack.id)) == 2)
        assert sorted(logged(gateway, ack.id)) == ["message delivered to 1 local frames",
                                                   "send answered"]
    finally:
        await alice.close()
