"""Mentions (issue 16, item 6) on the real stack: checked by the gateway and the
sequencer, stored, served on every read path, pushed at once past the room's delayed
push (to local APNs), and marked in the digest (to a capturing SMTP server)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from burrow.client import ChatError, Message
from tests.conftest import until
from tests.fakes.apns import ApnsRequest, device_token
from tests.fakes.smtp import FakeSmtpServer
from tests.integration.conftest import Stack, raw_ws
from tests.integration.test_mail_jobs import mail_workers, publish, set_email
from tests.integration.test_push_jobs import Providers, find, providers, register

pytestmark = pytest.mark.integration
__all__ = ["providers"]  # the fixture (local FCM and APNs servers)

DELAY = 8  # push.delay seconds here: a mention must not wait for it


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): rooms and
    users of each test's own (squad and crowd with ann, ben and cid, then team; a user
    stays online for the offline grace after a test's connections close, and an online
    member is not pushed); the workers of the second stop after it. The first runs no
    notifier and loads no topology: no notify queue keeps its messages."""
    return shared_stack


def mentions_of(entries: list[dict[str, Any]]) -> list[Any]:
    return [e.get("mentions") for e in entries]


async def test_mentions_are_checked_stored_and_served_everywhere(stack: Stack) -> None:
    stack.room("squad", "ann", "ben", "cid")
    stack.room("crowd", "ann", *[f"u{i}" for i in range(100)])  # 101 > BURROW_ROOM_MENTION_MAX
    ann, ben = await stack.client("ann"), await stack.client("ben")
    await ben.subscribe("squad", since=0)
    await ann.send("squad", "plain")
    named = await ann.send("squad", "hi @ben", mentions=["ben", "ann"])  # self: dropped
    await ann.send("squad", "hello @room", mention_room=True)
    for call, code in [
            (ann.send("squad", "@zed", mentions=["zed"]), "bad_mention"),
            (ann.send("squad", "@ben @u1", mentions=["ben", "u1"]), "bad_mention"),
            (ann.send("crowd", "@room", mention_room=True), "room_too_large")]:
        with pytest.raises(ChatError) as exc:
            await call
        assert exc.value.code == code
    after = await ann.send("squad", "after")
    assert after.seq == 4  # the refused sends took no seq, and stored nothing
    assert not find(stack, "messages", {"body": {"$in": ["@zed", "@ben @u1", "@room"]}})
    assert (await ann.send("crowd", "@u1", mentions=["u1"])).seq == 1  # names: any size
    await ann.edit("squad", named.id, "hi @ben, edited")  # an edit keeps the mentions
    received: list[Message] = [await asyncio.wait_for(ben.messages.get(), 30)
                               for _ in range(4)]
    assert [(m.mentions, m.mention_room) for m in received] == [
        ((), False), (("ben",), False), ((), True), ((), False)]
    assert received[1].mentions_user("ben") and received[2].mentions_user("cid")

    wanted = [None, {"users": ["ben"]}, {"room": True}, None]
    for v in ("1", "2"):  # history; the edited message keeps its mentions
        status, body = stack.http("GET", f"/v1/rooms/squad/messages?v={v}", "ben")
        assert status == 200, body
        messages = [m for m in body["messages"] if m.get("type", "message") == "message"
                    and m.get("kind") is None]
        assert mentions_of(messages) == wanted
        assert messages[1].get("edit_count") == 1
    for version in (1, 2):  # resume on a fresh connection: plain messages have no key
        async with raw_ws(stack.gateways[0].ws_url, stack.token("cid")) as ws:
            await ws.send({"type": "subscribe", "room": "squad", "since": 0, "v": version})
            frames = [await ws.recv_until("message") for _ in range(4)]
            assert mentions_of(frames) == wanted and "mentions" not in frames[0]
            await ws.send({"type": "send", "room": "squad", "client_id": "w1", "body": "x",
                           "mentions": {"users": "ben"}})
            refused = await ws.recv_until("error")
            assert (refused["code"], refused["client_id"]) == ("bad_frame", "w1")
    auth = {"Authorization": f"Bearer {stack.token('ann')}"}
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(stack.gateways[0].url("/v1/poll"), params={
            "rooms": "squad", "cursor": "squad:0", "timeout": "0"}, headers={
            "Authorization": f"Bearer {stack.token('ben')}"})
        events = [e for e in answer.json()["events"] if e.get("kind") is None]
        assert mentions_of(events) == wanted
        url = stack.gateways[0].url("/v1/rooms/squad/messages")
        for mentions, status, error in [
                ({"users": ["zed"]}, 409, "bad_mention"),
                ({"users": ["ben", "ben"]}, 400, "bad_request"),
                ({"room": "yes"}, 400, "bad_request"),
                ({"users": ["cid"], "room": True}, 201, None)]:
            answer = await http.post(url, headers={**auth, "Idempotency-Key": f"h-{status}"},
                                     content=orjson.dumps({"body": "x", "mentions": mentions}))
            assert answer.status_code == status, answer.text
            if error:
                assert answer.json()["error"]["code"] == error
                if status == 400:
                    assert answer.json()["error"]["field"] == "mentions"
    [stored] = find(stack, "messages", {"client_id": "h-201"})
    assert stored["mentions"] == {"users": ["cid"], "room": True}


def body_of(request: ApnsRequest) -> str:
    assert request.payload is not None
    return str(request.payload["aps"]["alert"]["body"])


async def test_a_mention_is_pushed_at_once_and_marked_in_push_and_digest(
        providers: Providers, relay: FakeSmtpServer, stack: Stack) -> None:
    notifier, _ = mail_workers(stack, relay, **{
        **providers.env, "BURROW_PUSH_DELAY": str(DELAY), "BURROW_IDLE_AFTER": "60",
        "BURROW_WORKER_CONCURRENCY": "1"})  # one job at a time: push.due in queue order
    stack.room("team", "alice", "bob", "carol", "dan", "erin")
    phones = {user: device_token() for user in ("bob", "carol", "dan")}
    for user, phone in phones.items():
        register(stack, user, "apns", phone)
    assert stack.http("PUT", "/v1/me/settings", "carol", {"previews": False})[0] == 200
    set_email(stack, "erin")  # no device: her digest tells her
    async with raw_ws(stack.gateways[0].ws_url, stack.token("dan")) as dan:
        await dan.send({"type": "subscribe", "room": "team"})  # connected and active
        assert (await dan.recv())["type"] == "subscribed"
        alice = await stack.client("alice")
        first = await alice.send("team", "erin, see this", mentions=["erin"])
        sent = time.monotonic()
        # bob, carol and dan now have a room push waiting (claimed) in the delay tier
        await until(lambda: len(find(stack, "memberships", {
            "room": "team", "user": {"$in": list(phones)},
            "push_pending_at": {"$exists": 1}})) == 3)
        await alice.send("team", "look at this", mentions=["bob", "carol", "dan"])
        try:  # both mentioned offline members, long before the room's push is due
            pushed = await providers.apns.wait_for_async(2, timeout=DELAY)
        except TimeoutError:
            raise AssertionError(notifier.log_tail()) from None
        assert time.monotonic() - sent < DELAY
        by_token = {r.token: r for r in pushed}
        assert set(by_token) == {phones["bob"], phones["carol"]}  # dan is active
        bob_push, carol_push = by_token[phones["bob"]], by_token[phones["carol"]]
        assert body_of(bob_push) == "alice mentioned you: look at this"
        assert body_of(carol_push) == "alice mentioned you"  # previews off
        assert bob_push.payload is not None and bob_push.payload["mention"] == "user"
        assert bob_push.payload["aps"]["alert"]["title"] == "team"
        assert bob_push.collapse_id == "room:team"
        await alice.send("team", "three")
        # the room's delayed push comes later and does not tell the mention again
        later = await providers.apns.wait_for_async(
            4, timeout=60, where=lambda r: r.token in (phones["bob"], phones["carol"]))
        assert [body_of(r) for r in later if r.token == phones["bob"]] == [
            "alice mentioned you: look at this", "alice: three"]
        assert [body_of(r) for r in later if r.token == phones["carol"]] == [
            "alice mentioned you", "1 new message"]
        # dan's jobs (before it in the queue, one job at a time) pushed nothing
        await until(lambda: not find(stack, "memberships", {
            "room": "team", "push_pending_at": {"$exists": 1}}))
        await publish(stack, "push.due", {"kind": "direct", "user": "carol", "title": "t",
                                          "body": "sentinel"})
        await providers.apns.wait_for_async(1, timeout=60,
                                            where=lambda r: body_of(r) == "sentinel")
        assert not [r for r in providers.apns.requests if r.token == phones["dan"]]
    [mail] = await relay.wait_for_async(1, timeout=60)
    assert mail.rcpt_tos == ("erin@example.test",)
    text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "alice: erin, see this  (@ mentioned you)" in text
    assert "erin, see this <span" in html and "@ mentioned you</span>" in html
    assert "look at this  (@" not in text  # mentions others, not erin: not marked
    assert first.seq == 1
