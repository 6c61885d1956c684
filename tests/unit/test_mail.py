"""Digest mail: unsubscribe tokens, rendering, relay URLs, and delivery to a real socket.

Delivery goes to :class:`tests.fakes.smtp.FakeSmtpServer` (aiosmtpd on its own thread) on
a free loopback port; refusals are scripted there, and "no server" is a port nobody
listens on. Nothing sleeps: the fake signals arrivals through a condition variable.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import jwt
import pytest

from burrow.core import tokens
from burrow.devstack.ports import free_port
from burrow.mail import unsubscribe
from burrow.mail.digest import (
    ELLIPSIS,
    Digest,
    DigestMessage,
    DigestRoom,
    Renderer,
    message_id_for,
    preview,
    render,
)
from burrow.mail.smtp import Mailer, Outcome, SmtpTarget, parse_smtp_url
from burrow.mail.unsubscribe import BadToken, make_token, read_token
from burrow.runtime.settings import ConfigError, Settings
from tests.fakes.smtp import FakeSmtpServer

SECRET = "unsubscribe-secret-of-at-least-32-bytes!"
OTHER_SECRET = "another-secret-that-is-32-bytes-long!!!"
SENDER = "Burrow <digest@burrow.test>"
T0 = 1_714_572_180_000  # 2024-05-01 14:03:00 UTC, in ms
NOW = datetime(2024, 5, 2, 6, 0, tzinfo=UTC)


# -- unsubscribe tokens ------------------------------------------------------------------


def test_token_round_trip() -> None:
    token = make_token(SECRET, "alice")
    assert read_token(SECRET, token) == "alice"
    assert read_token(SECRET, make_token(SECRET, "bob", "weekly"), "weekly") == "bob"


def test_token_has_no_expiry_by_default() -> None:
    token = make_token(SECRET, "alice", now=1_000_000_000)  # 2001
    assert "exp" not in jwt.decode(token, options={"verify_signature": False})
    assert read_token(SECRET, token) == "alice"


def test_token_max_age_is_optional() -> None:
    token = make_token(SECRET, "alice", now=1000.0)
    assert read_token(SECRET, token, max_age=60, now=1059.0) == "alice"
    with pytest.raises(BadToken, match="older than 60 s") as info:
        read_token(SECRET, token, max_age=60, now=1061.0)
    assert info.value.reason == "expired"


def test_token_issued_in_the_future_is_refused() -> None:
    token = make_token(SECRET, "alice", now=time.time() + 3600)
    with pytest.raises(BadToken, match="future"):
        read_token(SECRET, token)


@pytest.mark.parametrize("tamper", ["payload", "signature"])
def test_tampered_token_is_refused(tamper: str) -> None:
    header, payload, signature = make_token(SECRET, "alice").split(".")
    if tamper == "payload":  # claim to be someone else, keep the old signature
        other = make_token(SECRET, "mallory").split(".")[1]
        token = f"{header}.{other}.{signature}"
    else:
        token = f"{header}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(BadToken, match="signature") as info:
        read_token(SECRET, token)
    assert info.value.reason == "signature"


def test_token_from_another_secret_is_refused() -> None:
    with pytest.raises(BadToken, match="signature"):
        read_token(SECRET, make_token(OTHER_SECRET, "alice"))


def test_token_for_another_list_is_refused() -> None:
    token = make_token(SECRET, "alice", "weekly")
    with pytest.raises(BadToken, match="for list 'weekly', not 'digest'") as info:
        read_token(SECRET, token)
    assert info.value.reason == "audience"


@pytest.mark.parametrize("audience", ["", "burrow", "burrow:unsubscribe:"])
def test_access_token_is_not_an_unsubscribe_token(audience: str) -> None:
    # Even signed with the same secret, a chat access token (no aud, or the API's aud)
    # must not unsubscribe anyone.
    access = tokens.mint(SECRET, "alice", audience=audience)
    with pytest.raises(BadToken, match="not an unsubscribe token") as info:
        read_token(SECRET, access)
    assert info.value.reason == "audience"


@pytest.mark.parametrize("audience", [None, "burrow"])
def test_unsubscribe_token_is_not_an_access_token(audience: str | None) -> None:
    # What the gateway does: decode with its audience (or none configured).
    token = make_token(SECRET, "alice")
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, SECRET, algorithms=["HS256"], audience=audience)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 5000])
def test_malformed_token(token: str) -> None:
    with pytest.raises(BadToken, match="malformed|empty or too long") as info:
        read_token(SECRET, token)
    assert info.value.reason == "malformed"


def test_token_without_subject_is_refused() -> None:
    token = jwt.encode({"aud": unsubscribe.audience(), "iat": int(time.time())}, SECRET,
                       algorithm="HS256")
    with pytest.raises(BadToken, match="'sub'"):
        read_token(SECRET, token)


def test_short_secret_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        make_token("too-short", "alice")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        read_token("too-short", make_token(SECRET, "alice"))
    assert issubclass(BadToken, ValueError)  # callers that catch ValueError keep working


def test_bad_list_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="list name"):
        make_token(SECRET, "alice", "digest:all")


# -- rendering ---------------------------------------------------------------------------


def msg(seq: int, sender: str = "alice", body: str = "hello", minute: int = 0) -> DigestMessage:
    return DigestMessage(seq=seq, sender=sender, body=body, ts=T0 + minute * 60_000)


def room(room_id: str, name: str, messages: list[DigestMessage],
         total: int | None = None) -> DigestRoom:
    return DigestRoom(room=room_id, name=name,
                      total_unread=len(messages) if total is None else total, messages=messages)


def digest(*rooms: DigestRoom, open_url: str | None = "https://burrow.test/app") -> Digest:
    return Digest(user="u-alice", to="Alice <alice@example.test>", rooms=list(rooms),
                  unsubscribe_url="https://burrow.test/unsubscribe?t=abc&list=digest",
                  open_url=open_url, message_id="<digest.1@burrow.test>")


def parts(mail: EmailMessage) -> tuple[str, str]:
    plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
    return plain.get_content(), html.get_content()


@pytest.mark.parametrize(("counts", "expected"), [
    ([1], "1 unread message in 1 room"),
    ([2], "2 unread messages in 1 room"),
    ([2, 1], "3 unread messages in 2 rooms"),
    ([1, 1, 1], "3 unread messages in 3 rooms"),
])
def test_subject_counts(counts: list[int], expected: str) -> None:
    rooms = [room(f"r{i}", f"Room {i}", [msg(j) for j in range(n)]) for i, n in enumerate(counts)]
    assert render(digest(*rooms), SENDER, True, now=NOW)["Subject"] == expected


def test_subject_counts_unread_beyond_the_loaded_messages() -> None:
    mail = render(digest(room("r1", "General", [msg(1)], total=40)), SENDER, True, now=NOW)
    assert mail["Subject"] == "40 unread messages in 1 room"


def test_structure_and_headers() -> None:
    mail = render(digest(room("r1", "General", [msg(1)])), SENDER, True, now=NOW)
    assert mail.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]
    assert mail["From"] == SENDER
    assert mail["To"] == "Alice <alice@example.test>"
    assert mail["Date"] == "Thu, 02 May 2024 06:00:00 +0000"
    assert mail["Message-ID"] == "<digest.1@burrow.test>"
    assert mail["List-Unsubscribe"] == "<https://burrow.test/unsubscribe?t=abc&list=digest>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Auto-Submitted"] == "auto-generated"
    text, html = parts(mail)
    assert "Unsubscribe: https://burrow.test/unsubscribe?t=abc&list=digest" in text
    assert 'href="https://burrow.test/unsubscribe?t=abc&amp;list=digest"' in html
    assert 'href="https://burrow.test/app"' in html and "Open Burrow: https://burrow.test/app" in text


def test_message_id_is_kept_across_renders() -> None:
    d = digest(room("r1", "General", [msg(1)]))
    first = render(d, SENDER, True, now=NOW)
    again = render(d, SENDER, True, now=datetime(2024, 5, 3, tzinfo=UTC))
    assert first["Message-ID"] == again["Message-ID"] == "<digest.1@burrow.test>"
    stable = message_id_for("u-alice", "2024-05-02", "burrow.test")
    assert stable == message_id_for("u-alice", "2024-05-02", "burrow.test")
    assert stable != message_id_for("u-alice", "2024-05-03", "burrow.test")
    assert stable.startswith("<digest.") and stable.endswith("@burrow.test>")
    assert "u-alice" not in stable


def test_text_lists_rooms_times_and_messages() -> None:
    mail = render(digest(room("r1", "General", [msg(1, "alice", "hi there"),
                                                msg(2, "bob", "yo", minute=2)]),
                         room("r-7f3a", "", [msg(3, "carol", "x")])),
                  SENDER, True, now=NOW)
    text, html = parts(mail)
    assert "== General (2 unread) ==" in text
    assert "[2024-05-01 14:03 UTC] alice: hi there" in text
    assert "[2024-05-01 14:05 UTC] bob: yo" in text
    assert "== r-7f3a (1 unread) ==" in text  # no name: the room id
    assert "General" in html and "r-7f3a" in html and "2024-05-01 14:05 UTC" in html
    assert text.index("alice") < text.index("bob")  # oldest first


def test_hostile_text_is_escaped_in_html() -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    mail = render(digest(room("r1", "<b>Room</b>", [msg(1, "<i>eve</i>", hostile)])),
                  SENDER, True, now=NOW)
    text, html = parts(mail)
    assert "<script>" not in html and "<img" not in html and "<b>Room" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "&lt;b&gt;Room&lt;/b&gt;" in html and "&lt;i&gt;eve&lt;/i&gt;" in html
    assert hostile in text  # plain text shows it as it is: nothing interprets it there


def test_previews_off_hides_bodies() -> None:
    secret_body = "the launch code is 1234"
    mail = render(digest(room("r1", "General", [msg(1, "alice", secret_body),
                                                msg(2, "bob", secret_body, minute=1),
                                                msg(3, "alice", secret_body, minute=2)],
                              total=5)),
                  SENDER, False, now=NOW)
    raw = mail.as_bytes()
    text, html = parts(mail)
    for shown in (text, html):
        assert "launch code" not in shown
        assert "alice" in shown and "bob" in shown and "General" in shown
    assert b"launch" not in raw
    assert "alice: 2 messages" in text and "bob: 1 message" in text
    assert "(5 unread)" in text


def test_long_body_is_truncated_with_an_ellipsis() -> None:
    body = "word " * 100
    text, html = parts(render(digest(room("r1", "General", [msg(1, body=body)])), SENDER, True,
                              now=NOW))
    line = next(line for line in text.splitlines() if line.startswith("[2024"))
    shown = line.split(": ", 1)[1]
    assert shown.endswith(ELLIPSIS) and len(shown) <= 200
    assert shown[:-1].endswith("word")  # cut between words, not inside one
    assert ELLIPSIS in html


def test_preview_folds_whitespace_and_strips_controls() -> None:
    assert preview("a\n\nb\tc\x00d\u202e", 50) == "a b cd"
    assert preview("x" * 30, 10) == "x" * 9 + ELLIPSIS  # no space: a hard cut
    custom = Renderer(max_messages=3, preview_chars=20).render(
        digest(room("r1", "General", [msg(1, body="abcdefghij " * 5)])), SENDER, True, NOW)
    assert "alice: abcdefghij abcdefgh" + ELLIPSIS in parts(custom)[0]  # the space is too early
    assert preview("abcdefghij abcdefghij abc", 24) == "abcdefghij abcdefghij" + ELLIPSIS


def test_at_most_n_messages_per_room_and_k_more() -> None:
    messages = [msg(i, f"user{i}", f"message {i}", minute=i) for i in range(15)]
    text, html = parts(render(digest(room("r1", "General", messages, total=20)), SENDER, True,
                              now=NOW))
    assert "message 14" in text and "message 5" in text  # the newest ten
    assert "message 4" not in text
    assert "... and 10 more" in text and "and 10 more" in html  # 20 unread, 10 shown
    few = render(digest(room("r1", "General", messages[:3])), SENDER, True, max_messages=2,
                 now=NOW)
    assert "... and 1 more" in parts(few)[0]
    exact = render(digest(room("r1", "General", messages[:2])), SENDER, True, now=NOW)
    assert "more" not in parts(exact)[0]


def test_digest_without_rooms_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one room"):
        render(digest(), SENDER, True)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "mailto:x@y.test", "/relative",
                                 "https://burrow.test/u?t=a b", "https://burrow.test/<x>"])
def test_unsafe_urls_are_refused(url: str) -> None:
    d = digest(room("r1", "General", [msg(1)]))
    with pytest.raises(ValueError, match="unsubscribe_url"):
        render(dataclasses.replace(d, unsubscribe_url=url), SENDER, True)
    with pytest.raises(ValueError, match="open_url"):
        render(dataclasses.replace(d, open_url=url), SENDER, True)


def test_open_url_is_optional() -> None:
    text, html = parts(render(digest(room("r1", "General", [msg(1)]), open_url=None),
                              SENDER, True, now=NOW))
    assert "Open Burrow" not in text and "Open Burrow" not in html


# -- SMTP URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    # beyond loopback STARTTLS is the default, and required
    ("smtp://mail.test:2525", SmtpTarget("mail.test", 2525, use_tls=False, start_tls=True)),
    ("smtp://mail.test", SmtpTarget("mail.test", 587, use_tls=False, start_tls=True)),
    ("smtp://mail.test?starttls=1", SmtpTarget("mail.test", 587, use_tls=False, start_tls=True)),
    ("smtp://u:p@mail.test", SmtpTarget("mail.test", 587, False, True, "u", "p")),
    # plain text to another host only when the URL says so, and then without a login
    ("smtp://mail.test:25/?starttls=0", SmtpTarget("mail.test", 25, False, False)),
    ("smtp://mailpit:1025?starttls=0", SmtpTarget("mailpit", 1025, False, False)),
    ("smtps://mail.test", SmtpTarget("mail.test", 465, use_tls=True, start_tls=False)),
    ("SMTPS://mail.test:4650", SmtpTarget("mail.test", 4650, use_tls=True, start_tls=False)),
    ("smtps://mail.test?starttls=0", SmtpTarget("mail.test", 465, True, False)),
    ("smtps://digest%40burrow.test:p%40ss%3Aw0rd@mail.test:465",
     SmtpTarget("mail.test", 465, True, False, "digest@burrow.test", "p@ss:w0rd")),
    # loopback: plain by default (a local relay or capture server), login allowed
    ("smtp://[::1]:2525", SmtpTarget("::1", 2525, use_tls=False, start_tls=False)),
    ("smtp://127.0.0.1:1025", SmtpTarget("127.0.0.1", 1025, False, False)),
    ("smtp://127.8.9.10", SmtpTarget("127.8.9.10", 25, False, False)),
    ("smtp://LocalHost:1025", SmtpTarget("localhost", 1025, False, False)),
    ("smtp://u:p@127.0.0.1:1025", SmtpTarget("127.0.0.1", 1025, False, False, "u", "p")),
    ("smtp://127.0.0.1:1025?starttls=1", SmtpTarget("127.0.0.1", 1025, False, True)),
])
def test_parse_smtp_url(url: str, expected: SmtpTarget) -> None:
    assert parse_smtp_url(url) == expected
    if expected.username is None:  # what logs show parses back to the same relay
        assert parse_smtp_url(str(expected)) == expected


@pytest.mark.parametrize("url", [
    "smtp://digest:hunter2@mail.test?starttls=0",
    "smtp://digest:hunter2@10.0.0.5:25?starttls=0",
    "smtp://digest:hunter2@[2001:db8::1]:25?starttls=false",
    "smtp://digest:hunter2@0.0.0.0:25?starttls=0",  # unspecified is not loopback
    "smtp://digest:hunter2@localhost.example.com?starttls=0",
])
def test_a_password_never_goes_in_clear_beyond_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="password in clear") as info:
        parse_smtp_url(url)
    assert "hunter2" not in str(info.value)


def test_a_plain_relay_beyond_loopback_must_be_asked_for() -> None:
    assert parse_smtp_url("smtp://relay.example.com").start_tls
    assert parse_smtp_url("smtp://192.0.2.7:25").start_tls
    assert not parse_smtp_url("smtp://192.0.2.7:25?starttls=0").start_tls
    assert str(parse_smtp_url("smtp://192.0.2.7:25?starttls=0")) == (
        "smtp://192.0.2.7:25?starttls=0")  # logs show the opt-out


@pytest.mark.parametrize(("url", "ok"), [
    ("smtp://127.0.0.1:1025", True),
    ("smtp://relay.example.com", True),
    ("smtps://u:p@relay.example.com", True),
    ("smtp://u:p@relay.example.com?starttls=1", True),
    ("smtp://relay.example.com?starttls=0", True),
    ("smtp://u:p@relay.example.com?starttls=0", False),
    ("http://relay.example.com", False),
])
def test_settings_refuse_a_clear_text_password_at_startup(url: str, ok: bool) -> None:
    env = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/b", "BURROW_SMTP_URL": url}
    if ok:
        assert Settings.from_env(env).smtp_url == url
        return
    with pytest.raises(ConfigError, match="BURROW_SMTP_URL") as info:
        Settings.from_env(env)
    assert ":p@" not in str(info.value)  # the URL (with its password) is not echoed


def test_smtp_target_never_shows_the_password() -> None:
    target = parse_smtp_url("smtp://user:hunter2hunter2@mail.test:2525?starttls=1")
    assert "hunter2" not in repr(target) and "hunter2" not in str(target)
    assert str(target) == "smtp://user@mail.test:2525?starttls=1"


@pytest.mark.parametrize(("url", "message"), [
    ("http://mail.test", "smtp:// or smtps://"),
    ("mail.test:25", "smtp:// or smtps://"),
    ("", "smtp:// or smtps://"),
    ("smtp://", "no host"),
    ("smtp://:25", "no host"),
    ("smtp://mail.test:port", "port must be a number"),
    ("smtp://mail.test:70000", "port must be a number"),
    ("smtp://mail.test:0", "port must be a number"),
    ("smtp://mail.test/relay", "no path"),
    ("smtp://mail.test?tls=1", "unknown parameter 'tls'"),
    ("smtp://mail.test?starttls=maybe", "starttls must be 1 or 0"),
    ("smtps://mail.test?starttls=1", "TLS already"),
    ("smtp://user@mail.test", "no password"),
    ("smtp://:secret@mail.test", "without a user name"),
    ("smtp://[::1:25", "not a URL"),
])
def test_bad_smtp_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_smtp_url(url)
    assert "secret" not in str(info.value)


# -- sending through the fake relay ------------------------------------------------------


@pytest.fixture
def relay() -> Iterator[FakeSmtpServer]:
    with FakeSmtpServer() as server:
        yield server


def simple(to: str = "alice@example.test", subject: str = "hi") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "digest@burrow.test"
    mail["To"] = to
    mail["Subject"] = subject
    mail.set_content("hello\n")
    return mail


async def test_digest_is_delivered_and_parses_back(relay: FakeSmtpServer) -> None:
    mail = render(digest(room("r1", "Général", [msg(1, "zoë", "ça va? <b>")])), SENDER, True,
                  now=NOW)
    async with Mailer(relay.url, timeout=5) as mailer:
        result = await mailer.send(mail)
    assert result.outcome is Outcome.SENT and result.code == 250, result
    [got] = relay.wait_for(1)
    assert got.mail_from == "digest@burrow.test"
    assert got.rcpt_tos == ("alice@example.test",)
    assert got.message["Subject"] == "1 unread message in 1 room"
    assert got.message["Message-ID"] == "<digest.1@burrow.test>"
    assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = parts(got.message)
    assert "zoë: ça va? <b>" in text and "== Général (1 unread) ==" in text
    assert "zoë</strong>: ça va? &lt;b&gt;" in html


async def test_one_connection_for_many_mails(relay: FakeSmtpServer) -> None:
    async with Mailer(relay.url, timeout=5) as mailer:
        results = [await mailer.send(simple(subject=f"n{i}")) for i in range(5)]
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert [m.message["Subject"] for m in relay.wait_for(5)] == [f"n{i}" for i in range(5)]
    assert relay.connections == 1 and mailer.connections == 1


async def test_reconnects_when_the_relay_hung_up(relay: FakeSmtpServer) -> None:
    async with Mailer(relay.url, timeout=5, idle_probe=0) as mailer:
        assert (await mailer.send(simple(subject="first"))).outcome is Outcome.SENT
        relay.disconnect_clients()  # as a relay's idle timeout would
        assert (await mailer.send(simple(subject="second"))).outcome is Outcome.SENT
    assert [m.message["Subject"] for m in relay.wait_for(2)] == ["first", "second"]
    assert relay.connections == 2


async def test_recipient_refused_with_550_is_rejected(relay: FakeSmtpServer) -> None:
    relay.refuse("gone@example.test", 550)
    async with Mailer(relay.url, timeout=5) as mailer:
        result = await mailer.send(simple("gone@example.test"))
        assert result.outcome is Outcome.REJECTED and result.code == 550, result
        assert dict(result.refused) == {"gone@example.test": 550}
        # The refusal left the connection usable (aiosmtplib sent RSET).
        assert (await mailer.send(simple())).outcome is Outcome.SENT
    assert [m.rcpt_tos for m in relay.wait_for(1)] == [("alice@example.test",)]
    assert relay.connections == 1


async def test_partial_refusal_is_reported_per_recipient(relay: FakeSmtpServer) -> None:
    relay.refuse("gone@example.test", 550)
    async with Mailer(relay.url, timeout=5) as mailer:
        result = await mailer.send(simple("alice@example.test, gone@example.test"))
    assert result.outcome is Outcome.REJECTED and dict(result.refused) == {
        "gone@example.test": 550}
    assert relay.wait_for(1)[0].rcpt_tos == ("alice@example.test",)


async def test_recipient_refused_with_450_is_retry(relay: FakeSmtpServer) -> None:
    relay.refuse("busy@example.test", 450)
    async with Mailer(relay.url, timeout=5) as mailer:
        result = await mailer.send(simple("busy@example.test"))
    assert result.outcome is Outcome.RETRY and result.code == 450, result


async def test_data_451_is_retry_and_then_sent(relay: FakeSmtpServer) -> None:
    relay.fail_next(451)
    async with Mailer(relay.url, timeout=5) as mailer:
        first = await mailer.send(simple())
        assert first.outcome is Outcome.RETRY and first.code == 451, first
        assert relay.messages == []
        assert (await mailer.send(simple())).outcome is Outcome.SENT
    assert len(relay.wait_for(1)) == 1


async def test_data_554_is_rejected(relay: FakeSmtpServer) -> None:
    relay.fail_next(554, "5.7.1 message content rejected")
    async with Mailer(relay.url, timeout=5) as mailer:
        result = await mailer.send(simple())
    assert result.outcome is Outcome.REJECTED and result.code == 554
    assert "content rejected" in result.detail


async def test_no_server_listening_is_retry() -> None:
    async with Mailer(f"smtp://127.0.0.1:{free_port()}", timeout=5) as mailer:
        result = await mailer.send(simple())
    assert result.outcome is Outcome.RETRY and result.code is None
    assert "SMTPConnectError" in result.detail


async def test_credentials_from_the_url_are_used() -> None:
    with FakeSmtpServer(credentials=("digest", "s3cret")) as relay:
        async with Mailer(relay.url, timeout=5) as mailer:
            assert (await mailer.send(simple())).outcome is Outcome.SENT
        assert relay.wait_for(1)[0].login == "digest"
        wrong = relay.url.replace("s3cret", "wrong")
        async with Mailer(wrong, timeout=5) as mailer:
            result = await mailer.send(simple())
        # wrong credentials are the deployment's fault, not the mail's: keep retrying it
        assert result.outcome is Outcome.RETRY and result.code == 535, result
        assert "login failed" in result.detail


def test_fake_relay_serves_another_process(relay: FakeSmtpServer) -> None:
    script = ("import smtplib, sys\n"
              "with smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10) as s:\n"
              "    s.sendmail('w@burrow.test', ['x@example.test'],"
              " 'Subject: from a worker\\r\\n\\r\\nbody\\r\\n')\n")
    subprocess.run([sys.executable, "-c", script, str(relay.port)], check=True, timeout=30)
    [got] = relay.wait_for(1)
    assert got.message["Subject"] == "from a worker" and got.rcpt_tos == ("x@example.test",)


def test_wait_for_times_out_with_a_count(relay: FakeSmtpServer) -> None:
    with pytest.raises(TimeoutError, match="expected 1 mail.*got 0"):
        relay.wait_for(1, timeout=0.05)


async def test_starttls_is_required_once_asked_for() -> None:
    """A relay that does not offer STARTTLS (this one: none at all) gets neither the
    mail nor the password: the worker keeps the mail for a retry."""
    with FakeSmtpServer(credentials=("digest", "s3cret")) as relay:
        url = relay.url + "?starttls=1"
        async with Mailer(url, timeout=5) as mailer:
            result = await mailer.send(simple())
        assert result.outcome is Outcome.RETRY and "STARTTLS" in result.detail, result
        assert relay.messages == []
