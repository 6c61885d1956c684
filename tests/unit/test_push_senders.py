"""The FCM and APNs senders (burrow/push/fcm.py, apns.py) against local fakes of the providers.

The real clients (firebase-admin, aioapns) talk HTTP/2 over TLS to :mod:`tests.fakes`, which
run in their own threads; a test waits on what a fake recorded, never on a sleep. What the
SDKs do on their own (firebase-admin's retries of 503, its OAuth flow) is asserted as
measured, so a change of SDK behaviour shows up here.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import firebase_admin
import pytest

from burrow.push import Device, Notification, Outcome, Sender
from burrow.push.apns import ApnsSender, apns_id, collapse_id
from burrow.push.fcm import FcmSender
from tests.fakes import Reply
from tests.fakes.apns import ApnsFake, device_token, make_p8_key
from tests.fakes.fcm import FcmFake

NOTE = Notification(id="n-1", title="Ada in #general", body="lunch?", collapse_key="room:42",
                    data={"room": "42", "seq": "7"}, badge=3)
TOPIC = "chat.burrow.app"
OTHER_TOPIC = "chat.burrow.beta"
KEY_ID = "KEY1234567"
TEAM_ID = "TEAM123456"


def fcm_device(token: str, kind: str = "registration_token") -> Device:
    assert kind in ("registration_token", "fid")
    return Device(id=f"dev-{token}", user="ada", platform="fcm", token=token,
                  token_kind="fid" if kind == "fid" else "registration_token")


def apns_device(token: str, app: str = "") -> Device:
    return Device(id=f"dev-{token[:8]}", user="ada", platform="apns", token=token, app=app)


def fid() -> str:
    """A Firebase installation id's shape: 22 characters of base64url, starting c-f."""
    return "c" + uuid.uuid4().hex[:21]


# --- FCM ---------------------------------------------------------------------------------


@pytest.fixture
def fcm_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FcmFake]:
    with FcmFake("burrow-test") as fake:
        for name, value in fake.client_env().items():
            monkeypatch.setenv(name, value)  # before any sender builds its clients
        yield fake


@pytest.fixture
async def fcm(fcm_fake: FcmFake, tmp_path: Path) -> AsyncIterator[FcmSender]:
    sender = FcmSender(fcm_fake.project_id, fcm_fake.write_service_account(tmp_path / "sa.json"),
                       endpoint=fcm_fake.base_url, timeout=5)
    yield sender
    await sender.close()


async def test_fcm_sends_one_message_per_device_to_its_token_or_fid(
        fcm: FcmSender, fcm_fake: FcmFake) -> None:
    """Registration tokens go as ``token``, installation ids as ``fid``; every field lands."""
    installation = fid()
    devices = [fcm_device("reg-token-1"), fcm_device(installation, "fid")]

    results = await fcm.send(NOTE, devices)

    assert [(r.device, r.outcome) for r in results] == [(d, Outcome.SENT) for d in devices]
    seen = {r.target: r for r in fcm_fake.requests}
    assert set(seen) == {"reg-token-1", installation}
    assert seen["reg-token-1"].target_kind == "token"
    assert seen[installation].target_kind == "fid"
    for request in seen.values():
        assert (request.title, request.body) == (NOTE.title, NOTE.body)
        assert request.data == {"room": "42", "seq": "7", "notification_id": "n-1"}
        assert request.android_collapse_key == "room:42"
        assert request.apns_collapse_id == "room:42"
        assert request.message["android"]["notification"] == {"tag": "room:42",
                                                              "notification_count": 3}
        assert request.message["apns"]["payload"] == {"aps": {"badge": 3}}
        assert request.http_version == "2"  # ALPN h2 over TLS, as against Google
        assert request.status == 200


async def test_fcm_oauth_flow_goes_through_the_fake_token_endpoint(
        fcm: FcmSender, fcm_fake: FcmFake) -> None:
    """One JWT-bearer grant, verified by the fake, whose token every send then carries."""
    await fcm.send(NOTE, [fcm_device("reg-token-1")])
    await fcm.send(NOTE, [fcm_device("reg-token-2")])

    [grant] = fcm_fake.token_requests
    assert grant.granted
    assert grant.client_email is not None and grant.client_email.startswith("fcm-sender-")
    assert grant.http_version == "1.1"  # google-auth fetches tokens through requests
    [bearer] = {r.bearer for r in fcm_fake.requests}
    assert bearer is not None and bearer.startswith("ya29.fake-")


async def test_fcm_a_revoked_bearer_gets_401_and_the_sdk_fetches_a_new_one(
        fcm: FcmSender, fcm_fake: FcmFake) -> None:
    """The fake checks the bearer: a forgotten one is refused, firebase-admin re-authorises."""
    await fcm.send(NOTE, [fcm_device("reg-token-1")])
    fcm_fake.revoke_access_tokens()

    [result] = await fcm.send(NOTE, [fcm_device("reg-token-1")])

    assert result.outcome is Outcome.SENT
    assert [r.status for r in fcm_fake.requests] == [200, 401, 200]
    assert len(fcm_fake.token_requests) == 2


async def test_fcm_a_key_the_token_endpoint_does_not_know_fails_every_device(
        fcm_fake: FcmFake, tmp_path: Path) -> None:
    """A wrong service-account key is refused at the token endpoint: FAILED, nothing sent."""
    account = fcm_fake.write_service_account(tmp_path / "sa.json", known=False)
    sender = FcmSender(fcm_fake.project_id, account, endpoint=fcm_fake.base_url, timeout=5)
    try:
        results = await sender.send(NOTE, [fcm_device("reg-token-1"), fcm_device(fid(), "fid")])
    finally:
        await sender.close()

    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
    assert all("invalid_grant" in r.reason for r in results)
    assert [g.granted for g in fcm_fake.token_requests] == [False]
    assert fcm_fake.requests == []


async def test_fcm_anonymous_credentials_send_without_authorization(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """``credentials=None`` (local servers only): no token fetch, no Authorization header."""
    with FcmFake("burrow-test", require_auth=False) as fake:
        for name, value in fake.client_env().items():
            monkeypatch.setenv(name, value)
        sender = FcmSender(fake.project_id, None, endpoint=fake.base_url, timeout=5)
        try:
            [result] = await sender.send(NOTE, [fcm_device("reg-token-1")])
        finally:
            await sender.close()
        assert result.outcome is Outcome.SENT
        [request] = fake.requests
        assert request.bearer is None and "authorization" not in request.headers
        assert fake.token_requests == []


async def test_fcm_anonymous_credentials_against_an_authenticating_server_fail(
        fcm_fake: FcmFake) -> None:
    """401 makes the SDK refresh the credential; anonymous ones cannot: FAILED, no raise."""
    sender = FcmSender(fcm_fake.project_id, None, endpoint=fcm_fake.base_url, timeout=5)
    try:
        results = await sender.send(NOTE, [fcm_device("reg-token-1"), fcm_device("reg-token-2")])
    finally:
        await sender.close()
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]


async def test_fcm_unregistered_token_is_invalid(fcm: FcmSender, fcm_fake: FcmFake) -> None:
    fcm_fake.unregister("gone-token")
    [result] = await fcm.send(NOTE, [fcm_device("gone-token")])
    assert (result.outcome, result.reason) == (Outcome.INVALID, "UNREGISTERED")


async def test_fcm_malformed_token_is_invalid(fcm: FcmSender, fcm_fake: FcmFake) -> None:
    """FCM's INVALID_ARGUMENT "The registration token is not a valid FCM registration token"."""
    [result] = await fcm.send(NOTE, [fcm_device("not a token!")])
    assert (result.outcome, result.reason) == (Outcome.INVALID, "INVALID_ARGUMENT")
    assert [r.status for r in fcm_fake.requests] == [400]


async def test_fcm_invalid_argument_about_the_payload_is_failed(fcm: FcmSender,
                                                                fcm_fake: FcmFake) -> None:
    """The same error code about the message, not the token: the device is not deleted."""
    fcm_fake.script("reg-token-1", [Reply(400, message="Invalid JSON payload received. "
                                                       "Unknown name \"colour\" at 'message'")])
    [result] = await fcm.send(NOTE, [fcm_device("reg-token-1")])
    assert (result.outcome, result.reason) == (Outcome.FAILED, "INVALID_ARGUMENT")


async def test_fcm_sender_id_mismatch_is_invalid(fcm: FcmSender, fcm_fake: FcmFake) -> None:
    """The token belongs to another Firebase project: it will never work for this one."""
    fcm_fake.script("foreign-token", [403])
    [result] = await fcm.send(NOTE, [fcm_device("foreign-token")])
    assert (result.outcome, result.reason) == (Outcome.INVALID, "SENDER_ID_MISMATCH")


async def test_fcm_third_party_auth_error_is_failed_after_two_token_refreshes(
        fcm: FcmSender, fcm_fake: FcmFake) -> None:
    """FCM answers THIRD_PARTY_AUTH_ERROR with 401, which firebase-admin takes for its own
    token's fault: it refreshes twice (three sends in all) before reporting the error."""
    fcm_fake.script("ios-token", [401, 401, 401])
    [result] = await fcm.send(NOTE, [fcm_device("ios-token")])
    assert (result.outcome, result.reason) == (Outcome.FAILED, "THIRD_PARTY_AUTH_ERROR")
    assert [r.status for r in fcm_fake.requests] == [401, 401, 401]
    assert len(fcm_fake.token_requests) == 3


async def test_fcm_quota_exceeded_is_retry_with_retry_after(fcm: FcmSender,
                                                            fcm_fake: FcmFake) -> None:
    """429 is not retried by the SDK: one request, RETRY, the server's Retry-After."""
    fcm_fake.script("busy-token", [Reply(429, retry_after="7"), 429])
    [first] = await fcm.send(NOTE, [fcm_device("busy-token")])
    [second] = await fcm.send(NOTE, [fcm_device("busy-token")])
    assert (first.outcome, first.reason, first.retry_after) == (
        Outcome.RETRY, "QUOTA_EXCEEDED", 7.0)
    assert (second.outcome, second.retry_after) == (Outcome.RETRY, None)
    assert len(fcm_fake.requests) == 2


async def test_fcm_503_then_200_is_sent_by_the_sdk_s_own_retry(fcm: FcmSender,
                                                              fcm_fake: FcmFake) -> None:
    """firebase-admin retries 500/503 itself, the first time at once."""
    fcm_fake.script("flaky-token", [503])
    [result] = await fcm.send(NOTE, [fcm_device("flaky-token")])
    assert result.outcome is Outcome.SENT
    assert [r.status for r in fcm_fake.requests] == [503, 200]


async def test_fcm_persistent_503_is_retry_after_five_attempts(fcm: FcmSender,
                                                              fcm_fake: FcmFake) -> None:
    """Five attempts with the SDK's back-off (0, 1, 2, 4 s) and Retry-After ignored: a send
    to a down FCM costs about 7 s before the sender can say RETRY."""
    fcm_fake.script("down-token", [Reply(503, retry_after="30")] * 5)
    started = time.monotonic()
    [result] = await fcm.send(NOTE, [fcm_device("down-token")])
    elapsed = time.monotonic() - started
    assert (result.outcome, result.reason, result.retry_after) == (
        Outcome.RETRY, "UNAVAILABLE", 30.0)
    assert [r.status for r in fcm_fake.requests] == [503] * 5
    assert 7.0 <= elapsed < 30.0


async def test_fcm_timeout_is_retry(fcm_fake: FcmFake, tmp_path: Path) -> None:
    """A request FCM does not answer within the timeout: RETRY (not retried by the SDK)."""
    account = fcm_fake.write_service_account(tmp_path / "sa.json")
    sender = FcmSender(fcm_fake.project_id, account, endpoint=fcm_fake.base_url, timeout=1)
    fcm_fake.hold("slow-token")
    try:
        [result] = await sender.send(NOTE, [fcm_device("slow-token")])
    finally:
        fcm_fake.release()
        await sender.close()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "DEADLINE_EXCEEDED: ReadTimeout")
    assert len(fcm_fake.requests) == 1


async def test_fcm_unreachable_server_is_retry_for_every_device(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    with FcmFake("burrow-test") as fake:
        account = fake.write_service_account(tmp_path / "sa.json")
        ca_file = tmp_path / "ca.pem"  # the fake deletes its own files when it stops
        ca_file.write_bytes(fake.ca_file.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    # The fake is gone: both its token endpoint and FCM refuse connections.
    sender = FcmSender(fake.project_id, account, endpoint=fake.base_url, timeout=5)
    try:
        results = await sender.send(NOTE, [fcm_device("reg-token-1"), fcm_device(fid(), "fid")])
    finally:
        await sender.close()
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RETRY]
    assert all(r.reason == "token endpoint: ConnectionError" for r in results)

    anonymous = FcmSender(fake.project_id, None, endpoint=fake.base_url, timeout=5)
    try:
        results = await anonymous.send(NOTE, [fcm_device("reg-token-1")])
    finally:
        await anonymous.close()
    assert [(r.outcome, r.reason) for r in results] == [(Outcome.RETRY, "UNAVAILABLE: ConnectError")]


async def test_fcm_mixed_batch_gives_one_result_per_device_in_order(
        fcm: FcmSender, fcm_fake: FcmFake) -> None:
    fcm_fake.unregister("gone-token")
    fcm_fake.script("busy-token", [Reply(429, retry_after="3")])
    fcm_fake.script("foreign-token", [403])
    installation = fid()
    devices = [fcm_device("ok-token"), fcm_device("gone-token"), fcm_device("bad token"),
               fcm_device("busy-token"), fcm_device(installation, "fid"),
               fcm_device("foreign-token"), fcm_device("")]

    results = await fcm.send(NOTE, devices)

    assert [r.device for r in results] == devices
    assert [(r.outcome, r.reason, r.retry_after) for r in results] == [
        (Outcome.SENT, "", None), (Outcome.INVALID, "UNREGISTERED", None),
        (Outcome.INVALID, "INVALID_ARGUMENT", None), (Outcome.RETRY, "QUOTA_EXCEEDED", 3.0),
        (Outcome.SENT, "", None), (Outcome.INVALID, "SENDER_ID_MISMATCH", None),
        (Outcome.INVALID, "empty token", None)]
    assert len(fcm_fake.requests) == 6  # the empty token never left


async def test_fcm_more_than_500_devices_go_in_several_calls(fcm: FcmSender,
                                                            fcm_fake: FcmFake) -> None:
    """send_each_async takes at most 500 messages; the sender splits, order is kept."""
    devices = [fcm_device(f"token-{i}") for i in range(501)]
    fcm_fake.unregister("token-500")
    results = await fcm.send(NOTE, devices)
    assert [r.device for r in results] == devices
    assert [r.outcome for r in results] == [Outcome.SENT] * 500 + [Outcome.INVALID]
    assert len(fcm_fake.requests) == 501


async def test_fcm_close_deletes_the_firebase_app(fcm_fake: FcmFake, tmp_path: Path) -> None:
    before = {app.name for app in firebase_admin._apps.values()}
    sender = FcmSender(fcm_fake.project_id, fcm_fake.write_service_account(tmp_path / "sa.json"),
                       endpoint=fcm_fake.base_url)
    assert len({app.name for app in firebase_admin._apps.values()} - before) == 1
    await sender.close()
    await sender.close()  # idempotent
    assert {app.name for app in firebase_admin._apps.values()} == before


async def test_senders_are_senders_and_accept_no_devices(fcm: FcmSender, apns: ApnsSender,
                                                         fcm_fake: FcmFake,
                                                         apns_fake: ApnsFake) -> None:
    senders: list[Sender] = [fcm, apns]  # mypy checks the Protocol
    assert [s.platform for s in senders] == ["fcm", "apns"]
    for sender in senders:
        assert await sender.send(NOTE, []) == []
    assert fcm_fake.requests == [] and apns_fake.requests == []


def test_fcm_refuses_anonymous_credentials_for_google() -> None:
    with pytest.raises(ValueError, match="local endpoint"):
        FcmSender("burrow-test", None)


# --- APNs --------------------------------------------------------------------------------


@pytest.fixture
def apns_key() -> str:
    return make_p8_key()


@pytest.fixture
def apns_fake(apns_key: str) -> Iterator[ApnsFake]:
    with ApnsFake(key=apns_key, key_id=KEY_ID, team_id=TEAM_ID,
                  topics={TOPIC, OTHER_TOPIC}) as fake:
        yield fake


def apns_sender(fake: ApnsFake, key: str, timeout: float = 5.0) -> ApnsSender:
    return ApnsSender(key=key, key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC, use_sandbox=True,
                      host="127.0.0.1", port=fake.port, ssl_context=fake.client_context(),
                      timeout=timeout, max_connection_attempts=1)


@pytest.fixture
async def apns(apns_fake: ApnsFake, apns_key: str) -> AsyncIterator[ApnsSender]:
    sender = apns_sender(apns_fake, apns_key)
    yield sender
    await sender.close()


async def test_apns_sends_an_alert_with_collapse_id_and_stable_apns_id(
        apns: ApnsSender, apns_fake: ApnsFake) -> None:
    token = device_token()
    [result] = await apns.send(NOTE, [apns_device(token)])

    assert (result.outcome, result.reason) == (Outcome.SENT, "")
    [request] = apns_fake.requests
    assert request.token == token
    assert request.topic == TOPIC
    assert request.push_type == "alert"
    assert request.collapse_id == "room:42"
    assert request.apns_id == apns_id("n-1", TOPIC, token)
    assert request.payload == {
        "aps": {"alert": {"title": NOTE.title, "body": NOTE.body}, "badge": 3,
                "sound": "default"},
        "room": "42", "seq": "7", "notification_id": "n-1"}
    assert request.http_version == "2"
    # The provider token the fake verified: ES256, kid = key id, iss = team id.
    assert request.headers["authorization"].startswith("bearer ")


async def test_apns_device_app_overrides_the_default_topic(apns: ApnsSender,
                                                          apns_fake: ApnsFake) -> None:
    token = device_token()
    apns_fake.bind(token, OTHER_TOPIC)
    [result] = await apns.send(NOTE, [apns_device(token, app=OTHER_TOPIC)])
    assert result.outcome is Outcome.SENT
    assert [r.topic for r in apns_fake.requests] == [OTHER_TOPIC]


async def test_apns_unregistered_is_invalid(apns: ApnsSender, apns_fake: ApnsFake) -> None:
    token = device_token()
    apns_fake.unregister(token)
    [result] = await apns.send(NOTE, [apns_device(token)])
    assert (result.outcome, result.reason) == (Outcome.INVALID, "Unregistered")


@pytest.mark.parametrize("case", ["bad token", "other app's token"])
async def test_apns_tokens_apple_rejects_are_invalid(apns: ApnsSender, apns_fake: ApnsFake,
                                                     case: str) -> None:
    if case == "bad token":
        device, reason = apns_device("not-hex"), "BadDeviceToken"
    else:
        token = device_token()
        apns_fake.bind(token, OTHER_TOPIC)
        device, reason = apns_device(token), "DeviceTokenNotForTopic"
    [result] = await apns.send(NOTE, [device])
    assert (result.outcome, result.reason) == (Outcome.INVALID, reason)


async def test_apns_too_many_requests_is_retry(apns: ApnsSender, apns_fake: ApnsFake) -> None:
    """aioapns exposes no response headers: a Retry-After from Apple cannot reach the Result."""
    token = device_token()
    apns_fake.script(token, [Reply(429, retry_after="5")])
    [result] = await apns.send(NOTE, [apns_device(token)])
    assert (result.outcome, result.reason, result.retry_after) == (
        Outcome.RETRY, "TooManyRequests", None)
    assert apns_fake.requests[0].status == 429


async def test_apns_503_then_200_needs_a_resend(apns: ApnsSender, apns_fake: ApnsFake) -> None:
    """aioapns does not retry Apple's errors: the 503 is a RETRY, the resend is SENT."""
    token = device_token()
    apns_fake.script(token, [503])
    [first] = await apns.send(NOTE, [apns_device(token)])
    [second] = await apns.send(NOTE, [apns_device(token)])
    assert (first.outcome, first.reason) == (Outcome.RETRY, "ServiceUnavailable")
    assert second.outcome is Outcome.SENT
    assert [r.status for r in apns_fake.requests] == [503, 200]
    # The same notification to the same device: the same apns-id both times.
    assert len({r.apns_id for r in apns_fake.requests}) == 1


async def test_apns_a_wrong_key_is_failed(apns_fake: ApnsFake) -> None:
    """The fake verifies the provider JWT: another key's signature is InvalidProviderToken."""
    sender = apns_sender(apns_fake, make_p8_key())
    try:
        results = await sender.send(NOTE, [apns_device(device_token()),
                                           apns_device(device_token())])
    finally:
        await sender.close()
    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.FAILED, "InvalidProviderToken")] * 2


async def test_apns_other_client_errors_are_failed(apns: ApnsSender, apns_fake: ApnsFake) -> None:
    [result] = await apns.send(NOTE, [apns_device(device_token(), app="com.example.notours")])
    assert (result.outcome, result.reason) == (Outcome.FAILED, "TopicDisallowed")


async def test_apns_long_collapse_key_is_hashed_to_64_bytes(apns: ApnsSender,
                                                           apns_fake: ApnsFake) -> None:
    long_key = "room:" + "x" * 80
    note = Notification(id="n-2", title="t", body="b", collapse_key=long_key)
    [result] = await apns.send(note, [apns_device(device_token())])
    assert result.outcome is Outcome.SENT
    [request] = apns_fake.requests
    assert request.collapse_id == collapse_id(long_key)
    assert request.collapse_id is not None and len(request.collapse_id.encode()) == 64


async def test_apns_mixed_batch_gives_one_result_per_device_in_order(
        apns: ApnsSender, apns_fake: ApnsFake) -> None:
    ok, gone, busy, ok2 = (device_token() for _ in range(4))
    apns_fake.unregister(gone)
    apns_fake.script(busy, [429])
    devices = [apns_device(ok), apns_device(gone), apns_device("zz"), apns_device(busy),
               apns_device(ok2, app=OTHER_TOPIC)]

    results = await apns.send(NOTE, devices)

    assert [r.device for r in results] == devices
    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.SENT, ""), (Outcome.INVALID, "Unregistered"), (Outcome.INVALID, "BadDeviceToken"),
        (Outcome.RETRY, "TooManyRequests"), (Outcome.SENT, "")]
    assert len({r.apns_id for r in apns_fake.requests}) == 5


async def test_apns_duplicate_devices_are_sent_once(apns: ApnsSender,
                                                    apns_fake: ApnsFake) -> None:
    """aioapns keys in-flight requests by apns-id: the same request twice would never finish."""
    token = device_token()
    first, again = apns_device(token), Device("other-id", "ada", "apns", token)
    results = await apns.send(NOTE, [first, again])
    assert [(r.device, r.outcome) for r in results] == [(first, Outcome.SENT),
                                                        (again, Outcome.SENT)]
    assert len(apns_fake.requests) == 1


async def test_apns_timeout_is_retry_and_a_late_answer_does_not_break_the_connection(
        apns_fake: ApnsFake, apns_key: str) -> None:
    """A request left unanswered is RETRY after the timeout. Its answer arriving later, while
    another request waits on the same connection, is dropped: plain aioapns raises on it
    (InvalidStateError in data_received), loses the connection and sends the other again."""
    sender = apns_sender(apns_fake, apns_key, timeout=1.0)
    slow, other = device_token(), device_token()
    apns_fake.hold(slow)
    apns_fake.hold(other)
    try:
        [timed_out] = await sender.send(NOTE, [apns_device(slow)])
        assert (timed_out.outcome, timed_out.reason) == (Outcome.RETRY, "no answer in 1.0s")
        pending = asyncio.create_task(sender.send(NOTE, [apns_device(other)]))
        await apns_fake.wait_for_async(2)
        apns_fake.release()  # answers slow (late), then other, on the one connection
        [result] = await pending
    finally:
        apns_fake.release()
        await sender.close()
    assert result.outcome is Outcome.SENT
    assert [r.token for r in apns_fake.requests] == [slow, other]
    assert apns_fake.connection_count == 1


async def test_apns_connection_keeps_no_bookkeeping_of_answered_requests(
        apns: ApnsSender, apns_fake: ApnsFake) -> None:
    """aioapns alone keeps every successful request's stream id until the connection closes
    (a leak on a busy connection); the sender's protocol forgets it (private state)."""
    gone = device_token()
    apns_fake.unregister(gone)
    devices = [apns_device(device_token()) for _ in range(50)] + [apns_device(gone)]
    results = await apns.send(NOTE, devices)
    assert [r.outcome for r in results] == [Outcome.SENT] * 50 + [Outcome.INVALID]
    assert apns._apns is not None
    [connection] = apns._apns.pool.connections
    assert (connection.request_streams, connection.requests, connection.request_statuses) == (
        {}, {}, {})


async def test_apns_connections_of_one_sender_share_one_provider_token(
        apns: ApnsSender, apns_fake: ApnsFake) -> None:
    """Apple refuses tokens recreated more often than every 20 minutes; aioapns alone signs
    one per connection (ECDSA signatures differ even for the same claims)."""
    await apns.send(NOTE, [apns_device(device_token())])
    await apns.close()  # the next send opens a new connection
    await apns.send(NOTE, [apns_device(device_token())])
    assert apns_fake.connection_count == 2
    assert len({r.headers["authorization"] for r in apns_fake.requests}) == 1


async def test_apns_unreachable_server_is_retry(apns_key: str) -> None:
    with ApnsFake(key=apns_key, key_id=KEY_ID, team_id=TEAM_ID, topics={TOPIC}) as fake:
        sender = apns_sender(fake, apns_key)
    try:  # the fake is gone: connections are refused
        results = await sender.send(NOTE, [apns_device(device_token()),
                                           apns_device(device_token())])
    finally:
        await sender.close()
    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.RETRY, "MaxAttemptsExceeded")] * 2


async def test_apns_trusts_the_environment_s_ca_without_an_ssl_context(
        apns_fake: ApnsFake, apns_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """How a worker process reaches the fake: SSL_CERT_FILE in its environment (OpenSSL's
    default verify paths, read by aioapns' ssl.create_default_context())."""
    for name, value in apns_fake.client_env().items():
        monkeypatch.setenv(name, value)
    sender = ApnsSender(key=apns_key, key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC,
                        host="127.0.0.1", port=apns_fake.port, timeout=5)
    try:
        [result] = await sender.send(NOTE, [apns_device(device_token())])
    finally:
        await sender.close()
    assert result.outcome is Outcome.SENT


def test_apns_refuses_a_key_path_instead_of_its_contents(tmp_path: Path) -> None:
    path = tmp_path / "AuthKey_KEY1234567.p8"
    path.write_text(make_p8_key())
    with pytest.raises(ValueError):
        ApnsSender(key=str(path), key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC)


def test_apns_id_is_a_stable_uuid_per_notification_and_device() -> None:
    a, b = device_token(), device_token()
    assert apns_id("n-1", TOPIC, a) == apns_id("n-1", TOPIC, a)
    assert len({apns_id("n-1", TOPIC, a), apns_id("n-1", TOPIC, b), apns_id("n-2", TOPIC, a),
                apns_id("n-1", OTHER_TOPIC, a)}) == 4
    assert str(uuid.UUID(apns_id("n-1", TOPIC, a))) == apns_id("n-1", TOPIC, a)


def test_collapse_id_keeps_short_keys_and_hashes_long_ones() -> None:
    assert collapse_id("room:42") == "room:42"
    assert collapse_id("é" * 32) == "é" * 32  # 64 bytes exactly
    assert len(collapse_id("é" * 33)) == 64
    assert json.dumps(collapse_id("x" * 65)).isascii()
