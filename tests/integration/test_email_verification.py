"""Digest addresses are verified before a digest goes there: the real gateway, broker,
database, notifier and digester, and the capturing SMTP server; links are followed as
a browser would, from the mails the server received.

Nothing sleeps: mails are awaited on the SMTP server's condition variable, "no mail"
is proven by a later marker mail through the same queue (one job at a time), and "no
digest" by the digester's own count of finished digest jobs.
"""

from __future__ import annotations

import re
import time
from typing import Any

import aio_pika
import httpx
import jwt
import orjson
import pytest
from pymongo import MongoClient

from burrow.core import tokens
from burrow.mail import unsubscribe, verification
from burrow.runtime.settings import Settings
from tests.conftest import JWT_SECRET, until
from tests.fakes.smtp import Captured, FakeSmtpServer
from tests.integration.conftest import Running, Stack
from tests.integration.test_mail_jobs import dead_letters, publish, scrape

pytestmark = pytest.mark.integration

LINK = re.compile(r"https?://\S+/v1/settings/email/verify\?token=[A-Za-z0-9_.-]+")
DIGESTS_DONE = ("burrow_jobs_total", (("outcome", "done"), ("queue", "digest.due")))
# The gateways' link secret, as they derive it from the JWT secret of the tests.
SECRET = Settings.from_env({"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/b",
                            "BURROW_JWT_SECRET": JWT_SECRET}).unsubscribe_key()


def put_email(stack: Stack, user: str, address: str | None,
              **more: Any) -> tuple[int, Any, httpx.Headers]:
    answer = httpx.put(stack.gateways[0].url("/v1/me/settings"), timeout=30,
                       json={"email": address, **more},
                       headers={"Authorization": f"Bearer {stack.token(user)}"})
    return answer.status_code, answer.json(), answer.headers


def settings_of(stack: Stack, user: str) -> dict[str, Any]:
    status, body = stack.http("GET", "/v1/me/settings", user)
    assert status == 200, body
    settings: dict[str, Any] = body
    return settings


def link_in(mail: Captured) -> str:
    assert mail.message["Subject"] == verification.SUBJECT, mail.message["Subject"]
    text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    found = LINK.search(text)
    assert found, text
    return found.group(0)


def user_of(link: str) -> str:
    """Whose link it is (two users may have typed the same address)."""
    claims = jwt.decode(link.rpartition("token=")[2], options={"verify_signature": False})
    user: str = claims["sub"]
    return user


async def marker(stack: Stack, relay: FakeSmtpServer, name: str) -> list[Captured]:
    """Every mail up to a marker published now: with one job at a time, whatever the
    gateway queued before is sent (or dropped) by then."""
    await publish(stack, "email.due", {"kind": "email", "id": name, "to": f"{name}@x.test",
                                       "subject": name, "text": name}, message_id=name)
    await until(lambda: any(m.rcpt_tos == (f"{name}@x.test",) for m in relay.messages), 60)
    return [m for m in relay.messages if not m.rcpt_tos[0].endswith("@x.test")]


def digester(stack: Stack, relay: FakeSmtpServer, **env: str) -> Running:
    """A notifier (it schedules digests) and a digester, as test_mail_jobs' ``digester``
    but with a 1-s hourly digest period (not 4): no test here is about the period, and
    each digest job comes due a period after its message (three in a row in one test)."""
    return stack.add_workers("notifier", "digester", BURROW_SMTP_URL=relay.url,
                             BURROW_DIGEST_HOURLY="1", BURROW_DIGEST_DAILY="8",
                             BURROW_EMAIL_RETRIES="1,2",
                             BURROW_PUBLIC_URL=stack.gateways[0].url(""), **env)[-1]


def one_at_a_time(stack: Stack, relay: FakeSmtpServer) -> Running:
    return digester(stack, relay, BURROW_WORKER_CONCURRENCY="1", BURROW_WORKER_PREFETCH="1")


async def test_no_digest_to_an_unverified_address_until_its_link_is_followed(
        relay: FakeSmtpServer, stack: Stack) -> None:
    worker = digester(stack, relay)
    stack.room("general", "alice", "bob")
    status, body, _ = put_email(stack, "bob", "bob@example.test", digest="hourly")
    assert status == 200 and body["email_verified"] is False, body
    [mail] = await relay.wait_for_async(1, timeout=60)
    assert mail.rcpt_tos == ("bob@example.test",)
    alice = await stack.client("alice")
    await alice.send("general", "secret plans")
    await until(lambda: scrape(worker).get(DIGESTS_DONE) == 1, timeout=60)
    assert len(relay.messages) == 1  # the digest job ran and sent nothing

    link = link_in(mail)
    async with httpx.AsyncClient(timeout=10) as http:
        page = await http.get(link)  # what a mail scanner does: nothing changes
        assert page.status_code == 200 and "<form" in page.text, page.text
        assert "bob@example.test" in page.text
        assert settings_of(stack, "bob")["email_verified"] is False
        done = await http.post(link)
        assert done.status_code == 200 and "confirmed" in done.text, done.text
        again = await http.post(link)
        assert again.status_code == 200 and "already" in again.text
    assert settings_of(stack, "bob")["email_verified"] is True

    await alice.send("general", "more plans")
    [_, digest] = await relay.wait_for_async(2, timeout=60)
    assert digest.rcpt_tos == ("bob@example.test",)
    text = digest.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "secret plans" in text and "more plans" in text  # nothing was lost meanwhile


async def test_a_changed_address_needs_its_own_link_and_old_links_verify_nothing(
        relay: FakeSmtpServer, stack: Stack) -> None:
    one_at_a_time(stack, relay)
    assert put_email(stack, "bob", "old@example.test")[0] == 200
    assert put_email(stack, "bob", "new@example.test")[0] == 200
    mails = await relay.wait_for_async(2, timeout=60)
    by_address = {m.rcpt_tos[0]: link_in(m) for m in mails}
    old, new = by_address["old@example.test"], by_address["new@example.test"]
    async with httpx.AsyncClient(timeout=10) as http:
        for method in ("GET", "POST"):
            refused = await http.request(method, old)
            assert refused.status_code == 410 and "no longer set" in refused.text
        assert settings_of(stack, "bob")["email_verified"] is False
        # the same address again within the cool-down: no second mail
        assert put_email(stack, "bob", "new@example.test")[0] == 200
        assert len(await marker(stack, relay, "m1")) == 2
        assert (await http.post(new)).status_code == 200
        assert (await http.post(old)).status_code == 410
    got = settings_of(stack, "bob")
    assert (got["email"], got["email_verified"]) == ("new@example.test", True)
    # a verified address set again stays verified and is not mailed
    status, body, _ = put_email(stack, "bob", "new@example.test")
    assert status == 200 and body["email_verified"] is True
    assert len(await marker(stack, relay, "m2")) == 2
    # removing it, then setting it again, asks for a new confirmation
    assert put_email(stack, "bob", None)[1]["email_verified"] is False
    assert put_email(stack, "bob", "new@example.test")[1]["email_verified"] is False
    assert len(await relay.wait_for_async(5, timeout=60)) == 5  # 2 markers, 3 links


async def test_hostile_tokens_get_a_4xx_and_change_nothing(relay: FakeSmtpServer,
                                                           stack: Stack) -> None:
    digester(stack, relay)
    # mallory has a link for her own address, then types bob's address as hers
    assert put_email(stack, "mallory", "mallory@example.test")[0] == 200
    [mallorys] = await relay.wait_for_async(1, timeout=60)
    assert put_email(stack, "mallory", "bob@example.test")[0] == 200
    assert put_email(stack, "bob", "bob@example.test")[0] == 200
    await relay.wait_for_async(3, timeout=60)
    genuine = next(link for link in map(link_in, relay.messages) if user_of(link) == "bob")

    valid = verification.make_token(SECRET, "bob", "bob@example.test")
    header, payload, signature = valid.split(".")
    other_payload = verification.make_token(SECRET, "mallory", "bob@example.test").split(".")[1]
    hostile = {
        "forged": (verification.make_token("x" * 40, "bob", "bob@example.test"), 400),
        "tampered signature": (f"{header}.{payload}.{signature[:-4]}AAAA", 400),
        "swapped payload": (f"{header}.{other_payload}.{signature}", 400),
        "expired": (verification.make_token(SECRET, "bob", "bob@example.test",
                                            now=time.time() - 25 * 3600), 410),
        "old address": (verification.make_token(SECRET, "bob", "bob@old.test"), 410),
        "unsubscribe link": (unsubscribe.make_token(SECRET, "bob"), 400),
        "access token": (tokens.mint(JWT_SECRET, "bob"), 400),
        "oversized": ("e" * 3000 + "." + "e" * 3000 + "." + "e" * 100, 400),
        "empty": ("", 400),
        "not a token": ("'><script>alert(1)</script>", 400),
    }
    base = stack.gateways[0].url(verification.PATH)
    async with httpx.AsyncClient(timeout=10) as http:
        for name, (token, status) in hostile.items():
            for method in ("GET", "POST"):
                answer = await http.request(method, base, params={"token": token})
                assert answer.status_code == status, (name, method, answer.text)
                assert "<script>" not in answer.text
        for raw in ("?token=%FF%FE.%80%81.%C0", "?token=%00", "", "?token=a&token=b"):
            for method in ("GET", "POST"):
                answer = await http.request(method, base + raw)
                assert answer.status_code == 400, (raw, method, answer.text)
        # mallory's own token names her old address, so it verifies nothing, hers or bob's
        for method in ("GET", "POST"):
            answer = await http.request(method, link_in(mallorys))
            assert answer.status_code == 410, answer.text
        for user in ("bob", "mallory"):
            got = settings_of(stack, user)
            assert (got["email"], got["email_verified"]) == ("bob@example.test", False)
        # bob's genuine link works (the refusals were not a broken route), for bob only
        assert (await http.post(genuine)).status_code == 200
    assert settings_of(stack, "bob")["email_verified"] is True
    assert settings_of(stack, "mallory")["email_verified"] is False
    log = stack.gateways[0].log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


async def test_verification_mails_are_rate_limited_per_address_and_per_user(
        relay: FakeSmtpServer, stack: Stack) -> None:
    one_at_a_time(stack, relay)
    for user in ("u1", "u2", "u3"):
        assert put_email(stack, user, "victim@example.org")[0] == 200
    # a fourth user, even with another spelling of the same mailbox, is refused
    for user, address in (("u4", "victim@example.org"), ("u5", "Victim+u5@EXAMPLE.org")):
        status, body, headers = put_email(stack, user, address, digest="hourly")
        assert status == 429 and body["error"]["code"] == "rate_limited", body
        assert int(headers["Retry-After"]) >= 1 and body["error"]["retry_after_ms"] > 0
        assert settings_of(stack, user) == settings_of(stack, "nobody")  # nothing changed
    # one user cycling through addresses: 5 an hour
    for n in range(5):
        assert put_email(stack, "spammer", f"target{n}@example.org")[0] == 200
    status, body, headers = put_email(stack, "spammer", "target5@example.org")
    assert status == 429 and "Retry-After" in headers, body
    assert settings_of(stack, "spammer")["email"] == "target4@example.org"
    sent = await marker(stack, relay, "m1")
    assert sorted(m.rcpt_tos[0] for m in sent) == sorted(
        ["victim@example.org"] * 3 + [f"target{n}@example.org" for n in range(5)])


async def test_an_address_stored_before_verification_gets_one_mail_and_no_digest(
        relay: FakeSmtpServer, stack: Stack) -> None:
    worker = digester(stack, relay)
    stack.room("general", "alice", "bob")
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.get_default_database().users.insert_one(  # as the last release stored it
            {"_id": "bob", "email": "bob@example.test", "digest": "hourly"})
    assert settings_of(stack, "bob")["email_verified"] is False
    alice = await stack.client("alice")
    await alice.send("general", "first")
    [mail] = await relay.wait_for_async(1, timeout=60)
    assert mail.rcpt_tos == ("bob@example.test",)
    link = link_in(mail)  # a verification, not the digest
    await until(lambda: scrape(worker).get(DIGESTS_DONE) == 1, timeout=60)
    await alice.send("general", "second")
    await until(lambda: scrape(worker).get(DIGESTS_DONE) == 2, timeout=60)
    # a backend's email to bob's stored address waits for the verification too
    await publish(stack, "email.due", {"kind": "email", "id": "news", "user": "bob",
                                       "subject": "News", "text": "hi"}, message_id="news")
    await until(lambda: dead_letters(stack, "email.dead"), timeout=60)
    [parked] = dead_letters(stack, "email.dead")
    assert "not verified" in parked["properties"]["headers"]["x-burrow-error"]
    assert len(relay.messages) == 1  # one verification in all, never a second

    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(link)).status_code == 200
    await alice.send("general", "third")
    [_, digest] = await relay.wait_for_async(2, timeout=60)
    text = digest.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert digest.rcpt_tos == ("bob@example.test",)
    assert "first" in text and "second" in text and "third" in text


async def test_a_gateway_can_ask_for_verifications_and_nothing_else(
        relay: FakeSmtpServer, stack: Stack) -> None:
    """Through email.verify a compromised gateway reaches email.due only, and there only
    a verification of a stored, unverified address does anything."""
    one_at_a_time(stack, relay)
    connection = await aio_pika.connect(stack.vhost.url("burrow-gateway"))
    async with connection:
        channel = await connection.channel()
        verify = await channel.get_exchange("email.verify", ensure=False)
        for job in ({"kind": "email", "id": "spam", "to": "victim@example.org",
                     "subject": "Buy", "text": "pills"},
                    {"kind": "verify", "id": "v1", "user": "bob",
                     "address": "victim@example.org"}):  # not bob's address: dropped
            await verify.publish(aio_pika.Message(
                orjson.dumps(job), message_id=str(job["id"])), "email.due")
    await until(lambda: dead_letters(stack, "email.dead"), timeout=60)
    [parked] = dead_letters(stack, "email.dead")
    assert "only 'verify' jobs" in parked["properties"]["headers"]["x-burrow-error"]
    assert await marker(stack, relay, "m1") == []
