"""E-mail address verification's I/O-free core: when a mail goes out, what a link's token
binds (user, address, expiry), how hostile tokens are refused, and what the mail says."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from burrow.core import tokens
from burrow.mail import unsubscribe, verification
from burrow.mail.verification import (
    COOLDOWN,
    TOKEN_TTL,
    BadToken,
    EmailState,
    VerifyJob,
    address_key,
    make_token,
    plan,
    read_token,
)

SECRET = "verification-secret-of-at-least-32-bytes"
OTHER_SECRET = "another-secret-that-is-32-bytes-long!!!"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
T = NOW.timestamp()


# -- when a mail goes out ----------------------------------------------------------------


def test_a_new_address_is_unverified_and_gets_a_mail() -> None:
    for current in (EmailState(None), EmailState("old@example.org", verified=True, sent_at=NOW),
                    EmailState("old@example.org", sent_at=NOW)):
        got = plan(current, "new@example.org", NOW)
        assert got.send and got.state == EmailState("new@example.org", False, NOW)


def test_the_same_address_again_resends_only_after_the_cooldown_and_while_unverified() -> None:
    asked = EmailState("ann@example.org", sent_at=NOW)
    assert not plan(asked, "ann@example.org", NOW + COOLDOWN - timedelta(seconds=1)).send
    assert plan(asked, "ann@example.org", NOW + timedelta(seconds=1)).state == asked
    later = NOW + COOLDOWN
    assert plan(asked, "ann@example.org", later).send
    assert plan(asked, "ann@example.org", later).state.sent_at == later
    verified = EmailState("ann@example.org", verified=True, sent_at=NOW)
    assert plan(verified, "ann@example.org", later + timedelta(days=9)) == verification.Plan(
        verified, send=False)  # a verified address stays verified, and nobody is mailed


def test_an_address_that_never_had_a_mail_gets_one() -> None:
    legacy = EmailState("old@example.org")  # stored before verification existed
    assert verification.needs_first_mail(legacy)
    assert plan(legacy, "old@example.org", NOW).send
    assert not verification.needs_first_mail(EmailState("old@example.org", sent_at=NOW))
    assert not verification.needs_first_mail(EmailState("old@example.org", verified=True))
    assert not verification.needs_first_mail(EmailState(None))


def test_removing_the_address_forgets_its_state() -> None:
    got = plan(EmailState("ann@example.org", verified=True, sent_at=NOW), None, NOW)
    assert got == verification.Plan(EmailState(None), send=False)


# -- the token ---------------------------------------------------------------------------


def test_a_token_binds_user_address_and_expiry() -> None:
    token = make_token(SECRET, "ann", "ann@example.org", now=T)
    claim = read_token(SECRET, token, now=T + 60)
    assert claim.user == "ann"
    assert claim.names(SECRET, "ann@example.org")
    assert not claim.names(SECRET, "Ann@example.org")  # another address: not this one
    assert not claim.names(SECRET, "ann@example.org.evil")
    assert not claim.names(SECRET, None)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] == int(T + TOKEN_TTL.total_seconds())
    assert "ann@example.org" not in str(payload)  # no address in URLs and access logs


def test_a_token_expires() -> None:
    token = make_token(SECRET, "ann", "ann@example.org", now=T)
    read_token(SECRET, token, now=T + TOKEN_TTL.total_seconds() - 1)
    with pytest.raises(BadToken, match="expired") as info:
        read_token(SECRET, token, now=T + TOKEN_TTL.total_seconds())
    assert info.value.reason == "expired"


@pytest.mark.parametrize("tamper", ["payload", "signature", "algorithm"])
def test_a_tampered_token_is_refused(tamper: str) -> None:
    header, payload, signature = make_token(SECRET, "ann", "ann@example.org", now=T).split(".")
    mallory = make_token(SECRET, "mallory", "ann@example.org", now=T).split(".")[1]
    token = {"payload": f"{header}.{mallory}.{signature}",
             "signature": f"{header}.{payload}.{signature[:-4]}AAAA",
             "algorithm": jwt.encode(jwt.decode(f"{header}.{payload}.{signature}",
                                                options={"verify_signature": False}),
                                     None, algorithm="none")}[tamper]
    with pytest.raises(BadToken) as info:
        read_token(SECRET, token, now=T)
    assert info.value.reason in ("signature", "malformed")


def test_tokens_of_another_secret_or_kind_are_refused() -> None:
    with pytest.raises(BadToken, match="signature"):
        read_token(SECRET, make_token(OTHER_SECRET, "ann", "ann@example.org", now=T), now=T)
    # an unsubscribe link of the same secret cannot verify, nor the reverse
    with pytest.raises(BadToken) as info:
        read_token(SECRET, unsubscribe.make_token(SECRET, "ann", now=T), now=T)
    assert info.value.reason == "audience"
    with pytest.raises(BadToken):
        unsubscribe.read_token(SECRET, make_token(SECRET, "ann", "ann@example.org", now=T))
    # nor can a chat access token, with or without an audience
    for audience in ("", "burrow", verification.AUDIENCE + "x"):
        with pytest.raises(BadToken) as info:
            read_token(SECRET, tokens.mint(SECRET, "ann", audience=audience, now=T), now=T)
        assert info.value.reason == "audience"
    # and a verification token is not an access token
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(make_token(SECRET, "ann", "a@example.org"), SECRET, algorithms=["HS256"])


def test_a_signed_token_without_the_address_claim_is_refused() -> None:
    token = jwt.encode({"sub": "ann", "aud": verification.AUDIENCE, "iat": int(T),
                        "exp": int(T) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(BadToken, match="'eh'") as info:
        read_token(SECRET, token, now=T)
    assert info.value.reason == "claims"
    future = make_token(SECRET, "ann", "a@example.org", now=time.time() + 3600)
    with pytest.raises(BadToken, match="future"):
        read_token(SECRET, future)


@pytest.mark.parametrize("token", [
    "", "garbage", "a.b.c", "x" * 5000, "a.b.c.d", "a b.c.d", "\ufffd.\ufffd.\ufffd",
    "ey\u00e9.ey.ey", 42, None, ["a.b.c"],
    make_token(SECRET, "ann", "a@example.org", now=T) + "=",
    make_token(SECRET, "ann", "a@example.org", now=T) * 20,
])
def test_malformed_or_oversized_tokens_are_refused(token: object) -> None:
    with pytest.raises(BadToken) as info:
        read_token(SECRET, token, now=T)
    assert info.value.reason == "malformed"


# -- rate-limit keys, jobs, the mail -------------------------------------------------------


def test_one_mailbox_is_one_rate_limit_key() -> None:
    key = address_key("victim@example.org")
    for alias in ("Victim@Example.org", "victim+1@example.org", "VICTIM+spam@EXAMPLE.ORG"):
        assert address_key(alias) == key
    assert address_key("victim2@example.org") != key
    assert address_key("victim@example.com") != key
    assert "victim" not in key


def test_verify_jobs_round_trip_and_refuse_junk() -> None:
    job = VerifyJob("verify-1", "ann", "ann@example.org")
    assert VerifyJob.from_body(job.body()) == job
    assert job.body()["kind"] == verification.KIND
    for bad in ({}, {**job.body(), "id": ""}, {**job.body(), "user": ""},
                {**job.body(), "address": "no-at-sign"},
                {**job.body(), "address": "a@b.org\r\nBcc: x@y.org"},
                {**job.body(), "address": ["a@b.org"]},
                {**job.body(), "address": "a" * 250 + "@b.org"}):
        with pytest.raises(ValueError):
            VerifyJob.from_body(bad)
    assert verification.legacy_job_id("ann", "a@b.org") == verification.legacy_job_id(
        "ann", "a@b.org") != verification.legacy_job_id("ann", "c@b.org")


def test_the_mail_holds_the_link_and_nothing_the_requester_chose() -> None:
    token = make_token(SECRET, "BUY-PILLS-AT-spam.example", "ann@example.org", now=T)
    url = verification.link("https://chat.example.org", token)
    mail = verification.render("ann@example.org", url, "Burrow <no-reply@example.org>",
                               verification.message_id("verify-1", "example.org"), now=NOW)
    assert mail["To"] == "ann@example.org" and mail["Auto-Submitted"] == "auto-generated"
    assert mail["Message-ID"] == verification.message_id("verify-1", "example.org")
    assert mail["Message-ID"].startswith("<verify.") and "@example.org>" in mail["Message-ID"]
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    page = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert url in text and f'href="{url}"' in page
    assert url.startswith("https://chat.example.org/v1/settings/email/verify?token=")
    assert "24 hours" in text
    for part in (text, page, str(mail["Subject"])):
        assert "PILLS" not in part  # the user id never reaches the recipient
