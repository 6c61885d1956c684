"""Digests and backend emails through the real queues, worker processes and an SMTP server.

A notifier schedules digests for stored messages, a digester sends them to a capturing
SMTP server (:mod:`tests.fakes.smtp`) that a separate process can reach. Delay tiers are
shortened through the settings the workers read.
"""

from __future__ import annotations

import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from tests.conftest import eventually, until
from tests.fakes.smtp import FakeSmtpServer
from tests.integration.conftest import Running, Stack, raw_ws

pytestmark = pytest.mark.integration

PERIOD = 4  # seconds: the "hourly" digest period in these tests


def mail_workers(stack: Stack, relay: FakeSmtpServer, **env: str) -> list[Running]:
    """A notifier (it schedules digests) and a digester, each a process of its own."""
    return stack.add_workers("notifier", "digester", BURROW_SMTP_URL=relay.url,
                             BURROW_DIGEST_HOURLY=str(PERIOD), BURROW_DIGEST_DAILY="8",
                             BURROW_EMAIL_RETRIES="1,2",
                             BURROW_PUBLIC_URL=stack.gateways[0].url(""), **env)


def digester(stack: Stack, relay: FakeSmtpServer, **env: str) -> Running:
    return mail_workers(stack, relay, **env)[-1]


async def publish(stack: Stack, routing_key: str, body: Any, exchange: str = "burrow.jobs",
                  message_id: str = "m1", user: str = "burrow-backend") -> None:
    """Publish as a backend service (the burrow-backend broker user) would; into a queue
    a backend may not publish to (a digest, a stored message), as the admin moving
    messages back in the management UI would."""
    connection = await aio_pika.connect(stack.vhost.url(user))
    async with connection:
        channel = await connection.channel()
        target = await channel.get_exchange(exchange, ensure=False)
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        await target.publish(aio_pika.Message(raw, message_id=message_id,
                                              content_type="application/json"),
                             routing_key=routing_key)


def dead_letters(stack: Stack, queue: str) -> list[dict[str, Any]]:
    got = stack.vhost.api("POST", f"/api/queues/{{vhost}}/{queue}/get",
                          {"count": 50, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert isinstance(got, list)
    return got


def update(stack: Stack, collection: str, query: dict[str, Any],
           change: dict[str, Any]) -> None:
    """Change the database behind the workers' backs (to stage a redelivery)."""
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.get_default_database()[collection].update_one(query, change)


def scrape(worker: Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's /metrics as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(worker.url("/metrics"), timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def set_email(stack: Stack, user: str, digest: str = "hourly") -> None:
    """*user*'s address, verified, as after they followed the link mailed to it (the link
    and what an unverified address gets: tests/integration/test_email_verification.py)."""
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.get_default_database().users.update_one(
            {"_id": user}, {"$set": {"email": f"{user}@example.test", "email_verified": True,
                                     "digest": digest}}, upsert=True)


async def test_a_digest_lists_unread_messages_per_room_at_most_once_per_period(
        relay: FakeSmtpServer, stack: Stack) -> None:
    worker = digester(stack, relay)
    stack.room("general", "alice", "bob")
    stack.room("random", "alice", "bob")
    set_email(stack, "bob")
    alice = await stack.client("alice")
    await alice.send("general", "first <b>bold</b>")
    await alice.send("general", "second")
    await alice.send("random", "third")

    [first] = await relay.wait_for_async(1, timeout=60)
    assert first.rcpt_tos == ("bob@example.test",)
    mail = first.message
    assert mail["Subject"] == "3 unread messages in 2 rooms"
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for body in ("first <b>bold</b>", "second", "third"):
        assert body in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    assert "general" in text and "random" in text
    assert mail["List-Unsubscribe"].startswith("<" + stack.gateways[0].url("/v1/unsubscribe"))

    # A digest job that comes due right after a digest (a duplicate, one moved back) waits
    # for the period instead of sending a second mail now.
    await alice.send("general", "fourth")
    await publish(stack, "digest.due", {"kind": "digest", "user": "bob", "id": "extra-1"},
                  user="burrow-admin")
    [_, second] = await relay.wait_for_async(2, timeout=60)
    sent = [parsedate_to_datetime(m.message["Date"]) for m in (first, second)]
    assert (sent[1] - sent[0]).total_seconds() >= PERIOD - 1  # Date has 1 s resolution
    later = second.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "fourth" in later and "first" not in later  # only what was not emailed yet
    assert second.message["Subject"] == "1 unread message in 1 room"
    assert worker.app.exited is None


async def test_a_digest_leaves_out_what_the_member_has_read(relay: FakeSmtpServer,
                                                            stack: Stack) -> None:
    """Bob reads the first two messages after his digest is scheduled and before it is
    due: the digest lists only the third, in the one room with something unread."""
    digester(stack, relay)
    stack.room("general", "alice", "bob")
    stack.room("random", "alice", "bob")
    set_email(stack, "bob")
    alice = await stack.client("alice")
    acks = [await alice.send("general", body) for body in ("first", "second", "third")]
    await alice.send("random", "elsewhere")

    def scheduled() -> bool:
        with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
            user = client.get_default_database().users.find_one({"_id": "bob"})
            return bool(user and user.get("digest_pending_at"))

    await until(scheduled)
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob:
        await bob.send({"type": "read", "room": "general", "seq": acks[1].seq})
        await bob.send({"type": "read", "room": "random", "seq": 1})
        await bob.send({"type": "ping", "id": "after-reads"})
        assert (await bob.recv_until("pong"))["id"] == "after-reads"
    [mail] = await relay.wait_for_async(1, timeout=60)
    text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "third" in text
    assert not {"first", "second", "elsewhere"} & set(text.split())
    assert mail.message["Subject"] == "1 unread message in 1 room"


async def test_a_redelivered_digest_job_is_not_sent_twice(relay: FakeSmtpServer,
                                                          stack: Stack) -> None:
    digester(stack, relay, BURROW_WORKER_CONCURRENCY="1")  # jobs in queue order
    stack.room("general", "alice", "bob", "carol")
    set_email(stack, "bob")
    alice = await stack.client("alice")
    await alice.send("general", "hello")
    [first] = await relay.wait_for_async(1, timeout=60)
    job_id = first.message["Message-ID"].split("digest-")[1].split("@")[0]
    # as if the digest had not been recorded: only the job id tells it was sent
    update(stack, "users", {"_id": "bob"}, {"$unset": {"last_digest_at": ""}})
    update(stack, "memberships", {"room": "general", "user": "bob"},
           {"$unset": {"emailed_seq": ""}})
    # the same job again, as after a crash between sending and acking: dropped
    await publish(stack, "digest.due", {"kind": "digest", "user": "bob", "id": job_id},
                  user="burrow-admin")
    set_email(stack, "carol")  # carol's digest comes after it in the queue
    await publish(stack, "digest.due", {"kind": "digest", "user": "carol", "id": "carol-1"},
                  user="burrow-admin")
    got = await relay.wait_for_async(2, timeout=60)
    assert [m.rcpt_tos for m in got] == [("bob@example.test",), ("carol@example.test",)]


async def test_the_unsubscribe_link_turns_digests_off(relay: FakeSmtpServer,
                                                     stack: Stack) -> None:
    digester(stack, relay)
    stack.room("general", "alice", "bob")
    set_email(stack, "bob")
    alice = await stack.client("alice")
    await alice.send("general", "hello")
    [mail] = await relay.wait_for_async(1, timeout=60)
    link = mail.message["List-Unsubscribe"].strip("<>")
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    async with httpx.AsyncClient(timeout=10) as http:
        page = await http.get(link)  # what a link scanner does: no effect
        assert page.status_code == 200 and "<form" in page.text
        assert stack.http("GET", "/v1/me/settings", "bob")[1]["digest"] == "hourly"
        done = await http.post(link, content=b"List-Unsubscribe=One-Click")
        assert done.status_code == 200
        assert stack.http("GET", "/v1/me/settings", "bob")[1]["digest"] == "off"
        tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
        refused = await http.post(tampered)
        assert refused.status_code == 400 and "not valid" in refused.text


async def test_backend_email_jobs_are_sent_and_malformed_ones_parked_with_a_reason(
        relay: FakeSmtpServer, stack: Stack) -> None:
    worker = digester(stack, relay)
    set_email(stack, "dora")
    await publish(stack, "email.due", b"{not json", message_id="broken")
    await publish(stack, "email.due", {"kind": "email", "id": "no-subject", "to": "x@y.test",
                                       "text": "hi"}, message_id="no-subject")
    await publish(stack, "email.due", {"kind": "email", "id": "welcome-dora", "user": "dora",
                                       "subject": "Welcome", "text": "Hello Dora",
                                       "html": "<p>Hello Dora</p>"})
    [mail] = await relay.wait_for_async(1, timeout=60)
    assert mail.rcpt_tos == ("dora@example.test",)
    assert mail.message["Subject"] == "Welcome"
    html = mail.message.get_body(("html",))
    assert html is not None and html.get_content().strip() == "<p>Hello Dora</p>"

    def parked() -> dict[str, str]:
        return {m["properties"]["message_id"]: m["properties"]["headers"]["x-burrow-error"]
                for m in dead_letters(stack, "email.dead")}

    assert eventually(lambda: len(parked()) == 2)
    reasons = parked()
    assert "not JSON" in reasons["broken"]
    assert "subject" in reasons["no-subject"]
    assert worker.app.exited is None


async def test_an_email_refused_for_now_is_retried_then_sent(relay: FakeSmtpServer,
                                                             stack: Stack) -> None:
    worker = digester(stack, relay)
    relay.fail_next(451)
    await publish(stack, "email.due", {"kind": "email", "id": "retry-me", "to": "e@x.test",
                                       "subject": "Later", "text": "eventually"})
    [mail] = await relay.wait_for_async(1, timeout=60)
    assert mail.message["Subject"] == "Later"
    assert dead_letters(stack, "email.dead") == []
    # The relay has the mail a moment before the worker counts the job done: wait for it.
    done = ("burrow_jobs_total", (("outcome", "done"), ("queue", "email.due")))
    await until(lambda: scrape(worker).get(done) == 1)
    seen = scrape(worker)
    assert seen[("burrow_emails_total", (("outcome", "retry"),))] == 1
    assert seen[("burrow_emails_total", (("outcome", "sent"),))] == 1
    assert seen[("burrow_jobs_total", (("outcome", "retried"), ("queue", "email.due")))] == 1
    assert seen[("burrow_jobs_total", (("outcome", "done"), ("queue", "email.due")))] == 1
    assert seen[("burrow_email_seconds_count", ())] == 2


async def test_an_email_refused_for_good_is_parked(relay: FakeSmtpServer, stack: Stack) -> None:
    digester(stack, relay)
    relay.refuse("nobody@x.test", 550)
    await publish(stack, "email.due", {"kind": "email", "id": "bounce", "to": "nobody@x.test",
                                       "subject": "Hi", "text": "bounces"}, message_id="bounce")
    assert eventually(lambda: dead_letters(stack, "email.dead"))
    [parked] = dead_letters(stack, "email.dead")
    assert "550" in parked["properties"]["headers"]["x-burrow-error"]
    assert relay.messages == []
