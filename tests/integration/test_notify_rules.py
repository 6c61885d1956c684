"""Notification rules (issue 17, item 5) on the real stack: the settings routes against
hostile input, and the notifier and digester applying levels and quiet hours (local
APNs server, capturing SMTP server). The rules themselves, with every time-zone case:
tests/unit/test_notify_rules.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pymongo import MongoClient

from tests.conftest import until
from tests.fakes.apns import ApnsRequest, device_token
from tests.fakes.smtp import FakeSmtpServer
from tests.integration.conftest import Stack
from tests.integration.test_mail_jobs import mail_workers, publish, set_email
from tests.integration.test_push_jobs import Providers, find, providers, register

pytestmark = pytest.mark.integration
__all__ = ["providers"]  # the fixture (local FCM and APNs servers)

ROUTE = "/v1/me/rooms/team/notifications"
DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def membership(stack: Stack, room: str, user: str) -> dict[str, Any] | None:
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        doc: dict[str, Any] | None = client.get_default_database().memberships.find_one(
            {"room": room, "user": user}, {"_id": 0, "read_seq": 0, "joined_at": 0})
        return doc


def test_the_rule_routes_refuse_hostile_input(stack: Stack) -> None:
    stack.room("team", "alice", "bob")
    stack.room("secret", "carol")
    assert stack.http("GET", ROUTE, "bob") == (200, {
        "room": "team", "level": "all", "snooze_until": None})
    soon = now_ms() + 3_600_000
    assert stack.http("PUT", ROUTE, "bob", {"level": "mentions", "snooze_until": soon}) == (
        200, {"room": "team", "level": "mentions", "snooze_until": soon})
    assert stack.http("PUT", ROUTE, "bob", {"snooze_until": None})[1]["snooze_until"] is None
    assert stack.http("GET", ROUTE, "bob")[1]["level"] == "mentions"
    before = membership(stack, "team", "bob")
    assert before == {"room": "team", "user": "bob", "role": "member",
                      "notify_level": "mentions"}

    # not a member: 403 alike for a room that exists and one that does not
    for room in ("secret", "nowhere"):
        for method, body in (("GET", None), ("PUT", {"level": "nothing"})):
            status, answer = stack.http(method, f"/v1/me/rooms/{room}/notifications",
                                        "bob", body)
            assert (status, answer["error"]["code"]) == (403, "forbidden"), answer
    assert membership(stack, "nowhere", "bob") is None  # nothing upserted
    assert membership(stack, "secret", "carol") == {"room": "secret", "user": "carol",
                                                    "role": "owner"}
    assert stack.http("GET", ROUTE, None)[0] == 401
    assert stack.http("PUT", ROUTE, None, {"level": "all"})[0] == 401
    assert stack.http("GET", "/v1/me/rooms/bad%20room!/notifications", "bob")[0] == 400

    far = now_ms() + 400 * DAY_MS
    for body, field in ((b"{not json", None), (b"", None), (b"[1]", None),
                        ({"level": "loud"}, "level"), ({"level": 1}, "level"),
                        ({"level": None}, "level"), ({"level": ["all"]}, "level"),
                        ({"mute": True}, "mute"), ({"snooze_until": "soon"}, "snooze_until"),
                        ({"snooze_until": True}, "snooze_until"),
                        ({"snooze_until": 1.5e12}, "snooze_until"),
                        ({"snooze_until": now_ms() - 1000}, "snooze_until"),
                        ({"snooze_until": far}, "snooze_until"),
                        ({"snooze_until": 10**30}, "snooze_until"),
                        ({"level": "x" * 20000}, None)):
        status, answer = stack.http("PUT", ROUTE, "bob", body)
        assert 400 <= status < 500, (body, status, answer)
        if field is not None:
            assert (status, answer["error"].get("field")) == (400, field), (body, answer)
    assert membership(stack, "team", "bob") == before  # nothing half-written

    # the user-wide rules in /v1/me/settings: the same strictness
    status, settings = stack.http("PUT", "/v1/me/settings", "bob", {
        "snooze_until": soon, "quiet_hours": {"start": "22:00", "end": "07:00",
                                              "tz": "Europe/Paris"}})
    assert status == 200, settings
    assert settings["snooze_until"] == soon
    assert settings["quiet_hours"] == {"start": "22:00", "end": "07:00", "tz": "Europe/Paris"}
    for quiet in ({"start": "22:00", "end": "22:00", "tz": "UTC"},
                  {"start": "22:00", "end": "07:00", "tz": "Mars/Base"},
                  {"start": "22:00", "end": "07:00", "tz": "../../../etc/passwd"},
                  {"start": "25:00", "end": "07:00", "tz": "UTC"},
                  {"start": 22, "end": "07:00", "tz": "UTC"},
                  {"start": "22:00", "end": "07:00"}, "22:00-07:00", [],
                  {"start": "22:00", "end": "07:00", "tz": "UTC", "extra": 1}):
        status, answer = stack.http("PUT", "/v1/me/settings", "bob", {"quiet_hours": quiet})
        assert (status, answer["error"]["field"]) == (400, "quiet_hours"), (quiet, answer)
    for snooze in (now_ms() - 1, far, "tomorrow", False):
        status, answer = stack.http("PUT", "/v1/me/settings", "bob", {"snooze_until": snooze})
        assert (status, answer["error"]["field"]) == (400, "snooze_until"), (snooze, answer)
    assert stack.http("GET", "/v1/me/settings", "bob")[1] == settings  # unchanged
    cleared = stack.http("PUT", "/v1/me/settings", "bob",
                         {"snooze_until": None, "quiet_hours": None})[1]
    assert (cleared["snooze_until"], cleared["quiet_hours"]) == (None, None)


def body_of(request: ApnsRequest) -> str:
    assert request.payload is not None
    return str(request.payload["aps"]["alert"]["body"])


def quiet_around_now(zone: str) -> dict[str, str]:
    """Quiet hours that hold now in *zone*, with an hour or more on either side."""
    local = datetime.now(UTC).astimezone(ZoneInfo(zone))
    return {"start": f"{(local - timedelta(hours=1)).hour:02d}:00",
            "end": f"{(local + timedelta(hours=2)).hour:02d}:00", "tz": zone}


async def test_levels_and_quiet_hours_decide_pushes_and_digests(
        providers: Providers, relay: FakeSmtpServer, stack: Stack) -> None:
    notifier, _ = mail_workers(stack, relay, **{
        **providers.env, "BURROW_IDLE_AFTER": "60", "BURROW_WORKER_CONCURRENCY": "1"})
    # bob: "mentions" in every room; carol: "nothing" in "calls"; dan: quiet hours that
    # hold now in Tokyo; erin: the same hours in London (8 or 9 hours off): not now.
    # fay (no phone, an email) is told by her digest: "nothing" in calls, "mentions" in
    # chat, "all" in replies.
    # gus snoozed the chat room for an hour, hal all his pushes.
    stack.room("chat", "alice", "bob", "dan", "erin", "fay", "gus", "hal")
    stack.room("calls", "alice", "bob", "carol", "fay")
    stack.room("replies", "bob", "alice", "fay")
    phones = {user: device_token() for user in ("bob", "carol", "dan", "erin", "gus", "hal")}
    for user, phone in phones.items():
        register(stack, user, "apns", phone)
    for room in ("chat", "calls", "replies"):
        assert stack.http("PUT", f"/v1/me/rooms/{room}/notifications", "bob",
                          {"level": "mentions"})[0] == 200
    for user, room, level in (("carol", "calls", "nothing"), ("fay", "calls", "nothing"),
                              ("fay", "chat", "mentions"), ("fay", "replies", "all")):
        assert stack.http("PUT", f"/v1/me/rooms/{room}/notifications", user,
                          {"level": level})[0] == 200
    hours = quiet_around_now("Asia/Tokyo")
    assert stack.http("PUT", "/v1/me/settings", "dan", {"quiet_hours": hours})[0] == 200
    london = {**hours, "tz": "Europe/London"}
    assert stack.http("PUT", "/v1/me/settings", "erin", {"quiet_hours": london})[0] == 200
    set_email(stack, "fay")
    hour = now_ms() + 3_600_000
    assert stack.http("PUT", "/v1/me/rooms/chat/notifications", "gus",
                      {"snooze_until": hour})[0] == 200
    assert stack.http("PUT", "/v1/me/settings", "hal", {"snooze_until": hour})[0] == 200

    # bob writes over HTTP: no connection of his is active when his pushes are due
    async with httpx.AsyncClient() as http:
        answer = await http.post(stack.gateways[0].url("/v1/rooms/replies/messages"),
                                 json={"body": "who is in?"},
                                 headers={"Authorization": f"Bearer {stack.token('bob')}",
                                          "Idempotency-Key": "q1"})
    assert answer.status_code == 201, answer.text
    question = answer.json()["id"]
    alice = await stack.client("alice")
    await alice.send("chat", "plain news")
    await alice.send("calls", "call now", mentions=["bob", "carol", "fay"])
    await alice.send("replies", "me", reply_to=question)
    expected = {(phones["erin"], "alice: plain news"),
                (phones["bob"], "alice mentioned you: call now"),
                (phones["bob"], "alice: me")}
    try:
        pushed = await providers.apns.wait_for_async(3, timeout=60)
    except TimeoutError:
        raise AssertionError(notifier.log_tail()) from None
    assert {(r.token, body_of(r)) for r in pushed} == expected
    # every room push has been taken; one job at a time, so a sentinel behind them
    # comes after they all decided: nobody else was pushed
    await until(lambda: not find(stack, "memberships", {"push_pending_at": {"$exists": 1}}),
                timeout=60)
    await publish(stack, "push.due", {"kind": "direct", "user": "erin", "title": "t",
                                      "body": "sentinel"})
    await providers.apns.wait_for_async(4, timeout=60)
    assert {(r.token, body_of(r)) for r in providers.apns.requests} == {
        *expected, (phones["erin"], "sentinel")}
    # dan's quiet push was dropped, not marked pushed: his digest would still tell it
    assert find(stack, "memberships", {"room": "chat", "user": "dan"})[0].get(
        "pushed_seq") is None

    [mail] = await relay.wait_for_async(1, timeout=60)
    assert mail.rcpt_tos == ("fay@example.test",)
    text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "who is in?" in text and "alice: me" in text  # "all" in replies
    assert "call now" not in text  # "nothing" in calls, although it mentions her
    assert "plain news" not in text  # "mentions" in chat
    assert mail.message["Subject"] == "2 unread messages in 1 room"
