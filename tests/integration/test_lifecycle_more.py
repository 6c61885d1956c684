"""Edits, deletes and reactions (issue 16) on the real stack, beyond test_lifecycle.py:
resume over SSE v2 (and v1's contiguous message frames), no push or digest for a deleted
message nor for a change event, two gateways converging under a random interleaving with
repeated client_ids, and hostile change frames and routes.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from burrow.client.chat import ChatClient, ChatError
from burrow.core import tokens
from tests.conftest import eventually, until
from tests.fakes.fcm import FcmFake
from tests.fakes.smtp import FakeSmtpServer
from tests.integration.conftest import Stack, raw_ws
from tests.integration.test_fallbacks import Event, SseReader, headers
from tests.integration.test_lifecycle import history_state, state
from tests.integration.test_mail_jobs import PERIOD, set_email
from tests.integration.test_push_jobs import find, register

pytestmark = pytest.mark.integration
SECRET = "the vault code is 0451"
SEQUENCED = ("message", "edit", "delete", "reaction")


async def next_sequenced(reader: SseReader) -> Event:
    while True:
        event = await asyncio.wait_for(reader.next(), 30)
        if event.kind in SEQUENCED:
            return event


async def test_sse_v2_resumes_changes_in_order_and_v1_gets_contiguous_messages(
        stack: Stack) -> None:
    stack.add_gateway()
    stack.room("sv", "alice", "bob")
    alice = await stack.client("alice", gateways=[0])
    first = await alice.send("sv", SECRET)
    second = await alice.send("sv", "two")
    await alice.edit("sv", first.id, SECRET + "!")                    # 3
    await alice.react("sv", second.id, "👍")                          # 4
    async with httpx.AsyncClient(timeout=30) as http:
        url = stack.gateways[0].url("/v1/sse?rooms=sv&since=sv:0&v=2")
        async with http.stream("GET", url, headers=headers(stack, "bob")) as stream:
            assert stream.status_code == 200
            reader = SseReader(stream.aiter_lines())
            got = [await next_sequenced(reader) for _ in range(4)]
            assert [(e.kind, e.data["seq"], e.id) for e in got] == [
                ("message", 1, "sv:1"), ("message", 2, "sv:2"), ("edit", 3, "sv:3"),
                ("reaction", 4, "sv:4")]
            assert (got[2].data["target"], got[2].data["body"]) == (first.id, SECRET + "!")
            assert (got[3].data["emoji"], got[3].data["op"]) == ("👍", "add")
            last = reader.last_id
        assert last == "sv:4"
        # while bob is away: a delete, a reaction taken back, a message
        await alice.delete("sv", first.id)                                # 5
        await alice.react("sv", second.id, "👍", remove=True)             # 6
        third = await alice.send("sv", "three")                           # 7
        url = stack.gateways[1].url("/v1/sse?rooms=sv&v=2")
        async with http.stream("GET", url, headers=headers(
                stack, "bob", **{"Last-Event-ID": last})) as stream:
            reader = SseReader(stream.aiter_lines())
            resumed = [await next_sequenced(reader) for _ in range(3)]
            assert [(e.kind, e.data["seq"], e.id) for e in resumed] == [
                ("delete", 5, "sv:5"), ("reaction", 6, "sv:6"), ("message", 7, "sv:7")]
            assert resumed[1].data["op"] == "remove"
            assert SECRET not in str([e.data for e in resumed])
            await alice.edit("sv", third.id, "three, edited")             # 8, live
            live = await next_sequenced(reader)
            assert (live.kind, live.data["seq"], live.id) == ("edit", 8, "sv:8")
        # v1: every seq as a message frame, the changes with a fallback body
        url = stack.gateways[1].url("/v1/sse?rooms=sv&since=sv:0")
        async with http.stream("GET", url, headers=headers(stack, "bob")) as stream:
            reader = SseReader(stream.aiter_lines())
            v1 = [await next_sequenced(reader) for _ in range(8)]
            assert [(e.kind, e.data["seq"]) for e in v1] == [("message", n)
                                                             for n in range(1, 9)]
            assert [e.data.get("kind") for e in v1] == [
                None, None, "edit", "reaction", "delete", "reaction", None, "edit"]
            assert v1[7].data["body"] == "* three, edited"
            assert SECRET not in str([e.data for e in v1])
        # long-poll v2 from a cursor in the middle: the rest, in order, then nothing more
        answer = await http.get(stack.gateways[0].url("/v1/poll"), params={
            "rooms": "sv", "cursor": "sv:4", "timeout": "0", "v": "2"},
            headers=headers(stack, "bob"))
        body = answer.json()
        assert [(e["type"], e["seq"]) for e in body["events"]] == [
            ("delete", 5), ("reaction", 6), ("message", 7), ("edit", 8)]
        assert body["cursor"] == "sv:8"
        answer = await http.get(stack.gateways[1].url("/v1/poll"), params={
            "rooms": "sv", "cursor": body["cursor"], "timeout": "0", "v": "2"},
            headers=headers(stack, "bob"))
        assert answer.json()["events"] == []


@pytest.fixture
def fcm(tmp_path: Path) -> Iterator[tuple[FcmFake, dict[str, str]]]:
    with FcmFake() as fake:
        account = fake.write_service_account(tmp_path / "service-account.json")
        yield fake, {"BURROW_FCM_PROJECT": fake.project_id,
                     "BURROW_FCM_CREDENTIALS": str(account),
                     "BURROW_FCM_ENDPOINT": fake.base_url, **fake.client_env(),
                     "BURROW_PUSH_DELAY": "4", "BURROW_PUSH_RETRIES": "1,2"}


async def test_no_push_or_digest_for_a_deleted_message_nor_for_changes(
        fcm: tuple[FcmFake, dict[str, str]], relay: FakeSmtpServer, stack: Stack) -> None:
    """Bob is offline with a phone and hourly digests. In "gone" alice's message is
    deleted before its push is due; in "quiet" bob has read alice's message and she then
    edits it and reacts; in "kept" a control message: one push and one digest, both for
    the control message only."""
    fake, env = fcm
    stack.vhost.load_topology()
    stack.add_workers("notifier", "digester", **env, BURROW_SMTP_URL=relay.url,
                      BURROW_DIGEST_HOURLY=str(PERIOD), BURROW_DIGEST_DAILY="8",
                      BURROW_EMAIL_RETRIES="1,2", BURROW_PUBLIC_URL=stack.gateways[0].url(""))
    for room in ("gone", "quiet", "kept"):
        stack.room(room, "alice", "bob")
    register(stack, "bob", "fcm", "fid-" + "q" * 18, token_kind="fid")
    set_email(stack, "bob")
    alice = await stack.client("alice")
    quiet = await alice.send("quiet", "read already")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob:
        await bob.send({"type": "read", "room": "quiet", "seq": quiet.seq})
        await bob.send({"type": "ping", "id": "after-read"})
        assert (await bob.recv_until("pong"))["id"] == "after-read"
    secret = await alice.send("gone", SECRET)
    # deleted once its push is scheduled, before it is due (the branch under test)
    await until(lambda: find(stack, "memberships", {"room": "gone", "user": "bob",
                                                     "push_pending_at": {"$exists": 1}}))
    await alice.delete("gone", secret.id)
    await alice.edit("quiet", quiet.id, SECRET + " (edited)")
    await alice.react("quiet", quiet.id, "👍")
    await alice.send("kept", "control")
    [push] = await fake.wait_for_async(1, timeout=60)
    assert (push.title, push.body) == ("kept", "alice: control")
    [mail] = await relay.wait_for_async(1, timeout=60)
    text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "control" in text and SECRET not in text and "read already" not in text
    assert mail.message["Subject"] == "1 unread message in 1 room"
    # every push job came due and was decided: still only the control's push
    assert eventually(lambda: not find(stack, "memberships",
                                       {"push_pending_at": {"$exists": 1}}))
    assert [(r.title, r.body) for r in fake.requests] == [("kept", "alice: control")]
    assert SECRET not in str(fake.requests)


EMOJI = ("👍", "🎉", "a")


async def test_two_gateways_converge_under_random_changes_with_repeats(stack: Stack) -> None:
    """Several users, each with a client on each of two gateways, send, edit, delete and
    react in a seeded random interleaving, and repeat acked frames (same client_id) on
    their other gateway: every client's state built from its events in seq order is the
    same, and equals history ?v=2 for its reader."""
    stack.add_gateway()
    for seed in (7, 11):
        await converge(stack, seed)


async def converge(stack: Stack, seed: int) -> None:
    users = ["u0", "u1", "u2"]
    room = f"conv{seed}"
    stack.room(room, "u0", "u1", "u2")
    clients: dict[tuple[str, int], ChatClient] = {}
    for user in users:
        for g in (0, 1):
            clients[user, g] = await stack.client(user, gateways=[g])
            await clients[user, g].subscribe(room, since=0)
    rng = random.Random(seed)
    own: dict[str, list[str]] = {u: [] for u in users}
    acked: list[tuple[str, dict[str, Any], int]] = []  # (user, frame args, seq)
    repeats = 0

    async def op(user: str, n: int) -> None:
        nonlocal repeats
        client = clients[user, rng.randrange(2)]
        choice = rng.random()
        everyone = [m for ms in own.values() for m in ms]
        args: dict[str, Any]
        mine = [(args, seq) for who, args, seq in acked if who == user]
        if choice < 0.2 and mine:  # again, on either gateway (one op per user a round)
            args, seq = rng.choice(mine)
            ack = await client._request(dict(args), args["client_id"])
            assert ack.seq == seq, (args, ack)  # applied once (G3)
            repeats += 1
            return
        if choice < 0.4 or not everyone:
            args = {"type": "send", "room": room, "body": f"{user} #{n}"}
        elif choice < 0.55 and own[user]:
            args = {"type": "edit", "room": room, "id": rng.choice(own[user]),
                    "body": f"{user} #{n} edited"}
        elif choice < 0.65:
            target = rng.choice(own[user] if own[user] and user != "u0" else everyone)
            args = {"type": "delete", "room": room, "id": target}
        else:
            args = {"type": "react", "room": room, "id": rng.choice(everyone),
                    "emoji": rng.choice(EMOJI), "remove": rng.random() < 0.3}
        args["client_id"] = f"{user}-{seed}-{n}"
        try:
            ack = await client._request(dict(args), args["client_id"])
        except ChatError as exc:  # a concurrent delete got there first
            assert exc.code in ("not_found", "forbidden"), (args, exc.code)
            return
        acked.append((user, args, ack.seq))
        if args["type"] == "send":
            own[user].append(ack.id)

    n = 0
    for _ in range(14):  # rounds of concurrent operations by different users
        group = rng.sample(users, rng.randint(1, len(users)))
        await asyncio.gather(*(op(u, n + i) for i, u in enumerate(group)))
        n += len(group)
    assert {a["type"] for _, a, _ in acked} >= {"send", "edit", "react"}
    for who, args, seq in [a for a in acked if a[1]["type"] != "send"][:3]:
        for g in (0, 1):  # a change frame repeated on both gateways: its one seq
            ack = await clients[who, g]._request(dict(args), args["client_id"])
            assert ack.seq == seq, (args, ack)
    last = max(seq for _, _, seq in acked)
    await until(lambda: all(c.last.get(room) == last for c in clients.values()))
    views = []
    for (user, _), client in clients.items():
        messages = [client.messages.get_nowait() for _ in range(client.messages.qsize())]
        changes = [client.changes.get_nowait() for _ in range(client.changes.qsize())]
        assert sorted(x.seq for x in [*messages, *changes]) == list(range(1, last + 1))
        built = state(messages, changes, user)
        assert built == history_state(stack, room, user), (seed, user, repeats)
        views.append({m: {**s, "reactions": {e: c for e, (c, _) in s["reactions"].items()}}
                      for m, s in built.items()})
    assert all(view == views[0] for view in views)


async def test_hostile_change_frames_and_routes_are_refused_and_change_nothing(
        stack: Stack) -> None:
    flood_gateway = stack.add_gateway(BURROW_RATE_CONNECTION="5/5",
                                      BURROW_RATE_USER="100/100", BURROW_RATE_FLOOD="1000/10")
    stack.room("h1", "alice", "bob")
    stack.room("h2", "alice")
    alice = await stack.client("alice", gateways=[0])
    mine = await alice.send("h1", "original")
    elsewhere = await alice.send("h2", "other room")
    edit = await alice.edit("h1", mine.id, "edited once")
    deep = "[" * 300 + "]" * 300
    frames: list[tuple[Any, str]] = [
        ({"type": "edit", "id": mine.id, "body": "x" * 16385}, "too_large"),
        ({"type": "react", "id": mine.id, "emoji": "x" * 65}, "bad_frame"),
        ({"type": "react", "id": mine.id, "emoji": "🎉" * 17}, "bad_frame"),  # 68 bytes
        ({"type": "react", "id": mine.id, "emoji": "a\u0007"}, "bad_frame"),
        ({"type": "react", "id": mine.id, "emoji": ""}, "bad_frame"),
        ({"type": "react", "id": mine.id, "emoji": 5}, "bad_frame"),
        ({"type": "react", "id": mine.id, "emoji": {"a": "👍"}}, "bad_frame"),
        ({"type": "react", "id": mine.id, "emoji": ["👍"]}, "bad_frame"),
        ({"type": "react", "id": mine.id, "emoji": "👍", "remove": "yes"}, "bad_frame"),
        ({"type": "react", "id": mine.id, "emoji": "👍", "remove": 1}, "bad_frame"),
        ({"type": "edit", "id": mine.id, "body": 7}, "bad_frame"),
        ({"type": "edit", "id": mine.id}, "bad_frame"),
        ({"type": "delete"}, "bad_frame"),
        ({"type": "delete", "id": {"$ne": None}}, "bad_frame"),
        ({"type": "edit", "id": "nope", "body": "x"}, "not_found"),
        ({"type": "edit", "id": elsewhere.id, "body": "moved"}, "not_found"),
        ({"type": "delete", "id": elsewhere.id}, "not_found"),
        ({"type": "react", "id": elsewhere.id, "emoji": "👍"}, "not_found"),
        ({"type": "edit", "id": edit.id, "body": "x"}, "not_found"),
        ({"type": "react", "id": edit.id, "emoji": "👍"}, "not_found"),
        ({"type": "delete", "id": edit.id}, "not_found"),
    ]
    for field in ("id", "body", "emoji", "remove"):
        kind = "edit" if field == "body" else "react"
        frame = {"type": kind, "id": mine.id, "body": "b", "emoji": "👍", field: "DEEP"}
        frames.append((frame, "bad_frame"))
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as ws:
        for n, (frame, code) in enumerate(frames):
            cid = f"h-{n}"
            raw = json.dumps({"room": "h1", "client_id": cid, **frame}).replace(
                '"DEEP"', deep)
            await ws.send(raw)
            error = await ws.recv_until("error")
            assert (error["code"], error.get("client_id")) == (code, cid), (frame, error)
        # raw bytes that are not UTF-8, in a binary frame: an error, the socket stays
        await ws.send(b'{"type":"edit","room":"h1","client_id":"utf","id":"'
                      + mine.id.encode() + b'","body":"\xff\xfe"}')
        assert (await ws.recv_until("error"))["code"] == "bad_frame"
        await ws.send({"type": "ping", "id": "still"})
        assert (await ws.recv_until("pong"))["id"] == "still"
    # a non-member (G6), someone else's message, a forged token
    async with raw_ws(stack.gateways[0].ws_url, stack.token("carol")) as ws:
        await ws.send({"type": "edit", "room": "h1", "client_id": "c1", "id": mine.id,
                       "body": "carol's"})
        assert (await ws.recv_until("error"))["code"] == "forbidden"
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as ws:
        for frame in ({"type": "edit", "body": "bob's"}, {"type": "delete"}):
            await ws.send({"room": "h1", "client_id": f"b-{frame['type']}", "id": mine.id,
                           **frame})
            assert (await ws.recv_until("error"))["code"] == "forbidden"
    forged = tokens.mint("not the secret" * 3, "alice", 3600, ())
    path = f"/v1/rooms/h1/messages/{mine.id}"
    async with httpx.AsyncClient(timeout=30) as http:
        def post(suffix: str, user: str | None, body: Any, key: str,
                 token: str | None = None) -> Any:
            return http.post(stack.gateways[0].url(path + suffix), content=json.dumps(body),
                             headers={"Authorization": f"Bearer {token or stack.token(user or '')}",
                                      "Idempotency-Key": key})
        assert (await post("/edit", "alice", {"body": "x" * 16385}, "k1")).status_code == 413
        assert (await post("/edit", "alice", {"body": "x"}, "k2", forged)).status_code == 401
        assert (await post("/edit", "bob", {"body": "x"}, "k3")).status_code == 403
        assert (await post("/edit", "carol", {"body": "x"}, "k4")).status_code == 403
        assert (await post("/reactions", "bob", {"emoji": {"a": 1}}, "k5")).status_code == 400
        assert (await post("/reactions", "bob", {"emoji": "👍", "remove": "no"},
                           "k6")).status_code == 400
        answer = await http.post(
            stack.gateways[0].url(f"/v1/rooms/h1/messages/{elsewhere.id}/edit"),
            content=json.dumps({"body": "moved"}),
            headers={"Authorization": f"Bearer {stack.token('alice')}", "Idempotency-Key": "k7"})
        assert answer.status_code == 404, answer.text
    # a flood of changes meets the send limit (G7), and nothing refused is stored
    async with raw_ws(flood_gateway.ws_url, stack.token("alice")) as ws:
        for n in range(12):
            await ws.send({"type": "react", "room": "h1", "client_id": f"f-{n}",
                           "id": mine.id, "emoji": "🎉", "remove": n % 2 == 1})
        codes = [(await ws.recv_until_any(("ack", "error"))) for _ in range(12)]
        assert any(f.get("code") == "rate_limited" for f in codes), codes
        stored = sum(1 for f in codes if f["type"] == "ack")
    status, history = stack.http("GET", "/v1/rooms/h1/messages?v=2&limit=500", "alice")
    assert status == 200
    assert [(m["seq"], m["type"], m["body"], m.get("edit_count"))
            for m in history["messages"] if m["type"] == "message"] == [
        (1, "message", "edited once", 1)]
    assert [m["seq"] for m in history["messages"]] == list(range(1, 3 + stored))
    status, other = stack.http("GET", "/v1/rooms/h2/messages?v=2", "alice")
    assert [(m["seq"], m["body"], m.get("edit_count", 0)) for m in other["messages"]] == [
        (1, "other room", 0)]
