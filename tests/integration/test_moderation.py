"""Room roles and moderation actions (issue 17 item 1, docs/moderation.md) on the real
stack: the owner promotes, a moderator mutes, sets slow mode, locks, removes, bans and
unbans, each action a ``moderation`` event in the room's order and an audit record; a
banned user's open WebSocket loses the room at once and cannot be added back; the owner
transfers the room; hostile requests are refused and store nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from pymongo import MongoClient

from burrow.core import ids
from queues import topology
from tests.conftest import eventually
from tests.integration.conftest import Stack, raw_ws

pytestmark = pytest.mark.integration


def post(stack: Stack, path: str, user: str | None, body: Any, key: str | None = "auto",
         roles: tuple[str, ...] = ()) -> tuple[int, Any]:
    """POST *body* as *user* (None: no token) with Idempotency-Key *key* ("auto": a
    fresh one; None: none); returns (status, JSON answer)."""
    headers = {} if user is None else {
        "Authorization": f"Bearer {stack.token(user, roles=roles)}"}
    if key is not None:
        headers["Idempotency-Key"] = uuid.uuid4().hex if key == "auto" else key
    answer = httpx.post(stack.gateways[0].url(path), headers=headers, timeout=30,
                        **({"content": body} if isinstance(body, bytes) else {"json": body}))
    return answer.status_code, answer.json()


def act(stack: Stack, room: str, user: str, body: Any, key: str | None = "auto",
        roles: tuple[str, ...] = ()) -> tuple[int, Any]:
    """A moderation action in *room* as *user*."""
    return post(stack, f"/v1/rooms/{room}/moderation", user, body, key, roles)


async def test_moderators_act_and_every_action_is_a_room_event_in_order(
        stack: Stack) -> None:
    stack.room("mod", "olga", "mia", "bob", "carl", "dan")
    dan = await stack.client("dan")
    await dan.subscribe("mod", 0)
    taken: list[tuple[str, int]] = []

    def ok(user: str, body: dict[str, Any], key: str | None = "auto") -> dict[str, Any]:
        status, answer = act(stack, "mod", user, body, key)
        assert status == 200, answer
        assert (answer["action"], answer["user"]) == (body["action"], body.get("user"))
        taken.append((body["action"], answer["seq"]))
        return answer

    ok("olga", {"action": "promote", "user": "mia"})
    muted = ok("mia", {"action": "mute", "user": "carl", "seconds": 600, "reason": "flood"},
               key="mute-carl")
    assert muted["seconds"] == 600 and muted["until"] > 0 and muted["reason"] == "flood"
    # the same request again: the same answer, nothing stored twice
    assert act(stack, "mod", "mia", {"action": "mute", "user": "carl", "seconds": 600,
                                     "reason": "flood"}, "mute-carl") == (200, muted)
    ok("mia", {"action": "slow_mode", "seconds": 30})
    ok("mia", {"action": "lock"})
    status, info = stack.http("GET", "/v1/rooms/mod", "carl")
    assert status == 200, info
    assert (info["owner"], info["role"], info["slow_mode_s"], info["locked"]) == (
        "olga", "member", 30, True)
    assert info["muted_until"] == muted["until"]
    ok("mia", {"action": "unlock"})
    ok("mia", {"action": "unmute", "user": "carl"})
    ok("mia", {"action": "remove", "user": "carl", "reason": "left to cool down"})
    # bob's open WebSocket loses the room the moment he is banned
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob:
        await bob.send({"type": "subscribe", "room": "mod", "v": 2})
        await bob.recv_until("subscribed")
        ok("mia", {"action": "ban", "user": "bob", "reason": "spam"})
        gone = await bob.recv_until("unsubscribed", timeout=10)
        assert gone == {"type": "unsubscribed", "room": "mod", "reason": "removed"}
    assert stack.http("GET", "/v1/rooms/mod", "bob")[0] == 404
    status, refused = stack.http("PUT", "/v1/rooms/mod/members/bob", "olga")
    assert (status, refused["error"]["code"]) == (403, "banned"), refused
    status, bans = stack.http("GET", "/v1/rooms/mod/bans", "mia")
    assert [(b["user"], b["by"], b["reason"]) for b in bans["bans"]] == [("bob", "mia", "spam")]
    ok("mia", {"action": "unban", "user": "bob"})
    assert stack.http("PUT", "/v1/rooms/mod/members/bob", "olga")[0] == 200
    # a moderator deletes someone else's message; a member still may not
    status, sent = post(stack, "/v1/rooms/mod/messages", "dan", {"body": "hm"})
    assert status == 201, sent
    delete = f"/v1/rooms/mod/messages/{sent['id']}/delete"
    for user, expected in (("bob", 403), ("mia", 201)):
        status, answer = post(stack, delete, user, b"")
        assert status == expected, answer
    # the owner transfers the room: exactly one owner, the old one a moderator
    ok("olga", {"action": "transfer", "user": "mia"})
    status, members = stack.http("GET", "/v1/rooms/mod/members", "dan")
    roles = {m["user"]: m["role"] for m in members["members"]}
    assert roles == {"olga": "moderator", "mia": "owner", "bob": "member", "dan": "member"}
    status, again = act(stack, "mod", "olga", {"action": "transfer", "user": "dan"})
    assert (status, again["error"]["code"]) == (403, "forbidden")

    # dan saw every action as a moderation frame, in the room's order, with its seq
    seen: list[dict[str, Any]] = []
    while len(seen) < len(taken):
        seen.append(await asyncio.wait_for(dan.moderation.get(), 30))
    assert [(f["action"], f["seq"]) for f in seen] == taken
    assert seen[1] == {"type": "moderation", "room": "mod", "seq": taken[1][1],
                       "id": seen[1]["id"], "sender": "mia", "client_id": "mute-carl",
                       "ts": seen[1]["ts"], "action": "mute", "user": "carl",
                       "seconds": 600, "until": muted["until"], "reason": "flood"}
    # the audit, newest first, with reasons; paged
    status, audit = stack.http("GET", "/v1/rooms/mod/moderation/audit", "olga")
    assert status == 200, audit
    records = audit["records"]
    assert [(r["action"], r["seq"]) for r in records] == taken[::-1]
    assert [(r["by"], r["reason"]) for r in records if r["action"] in ("mute", "ban")] == [
        ("mia", "spam"), ("mia", "flood")]
    status, page = stack.http("GET", f"/v1/rooms/mod/moderation/audit?limit=2&before="
                              f"{records[1]['id']}", "olga")
    assert [r["id"] for r in page["records"]] == [r["id"] for r in records[2:4]], page
    # a v1 reader sees the events as messages of kind moderation, in words
    status, history = stack.http("GET", "/v1/rooms/mod/messages?limit=500", "dan")
    shown = [m for m in history["messages"] if m.get("kind") == "moderation"]
    assert [m["seq"] for m in shown] == [seq for _, seq in taken]
    assert shown[1]["body"] == "* mia mute carl (600 s): flood"
    with MongoClient(stack.mongo_url) as client:
        db = client.get_default_database()
        assert db.messages.count_documents({"room": "mod", "kind": "moderation"}) == len(taken)
        assert db.moderation_audit.count_documents({"room": "mod"}) == len(taken)


async def test_hostile_moderation_is_refused_and_stores_nothing(stack: Stack) -> None:
    stack.room("hm", "olga", "mia", "max", "bob")
    assert act(stack, "hm", "olga", {"action": "promote", "user": "mia"})[0] == 200
    assert act(stack, "hm", "olga", {"action": "promote", "user": "max"})[0] == 200
    assert post(stack, "/v1/rooms/hm/moderation", None, {"action": "lock"})[0] == 401
    for action in ("promote", "demote", "remove", "mute", "unmute", "ban", "unban",
                   "slow_mode", "lock", "unlock", "transfer"):
        body: dict[str, Any] = {"action": action}
        if action not in ("slow_mode", "lock", "unlock"):
            body["user"] = "mia"
        if action in ("mute", "slow_mode"):
            body["seconds"] = 60
        status, refused = act(stack, "hm", "bob", body)
        assert (status, refused["error"]["code"]) == (403, "forbidden"), (action, refused)
    for body in ({"action": "ban", "user": "olga"}, {"action": "ban", "user": "max"},
                 {"action": "mute", "user": "max", "seconds": 5}):
        status, refused = act(stack, "hm", "mia", body)
        assert (status, refused["error"]["code"]) == (403, "forbidden"), refused
    status, refused = act(stack, "hm", "olga", {"action": "remove", "user": "olga"})
    assert (status, refused["error"]["code"]) == (409, "owner_stays")
    status, refused = act(stack, "hm", "mia", {"action": "remove", "user": "nobody"})
    assert (status, refused["error"]["code"]) == (404, "not_member")
    for body, expected in [
            (b"{not json", (400, "bad_json", None)),
            ({"action": "kick", "user": "bob"}, (400, "bad_request", "action")),
            ({"action": "mute", "user": "bob", "seconds": 0}, (400, "bad_request", "seconds")),
            ({"action": "mute", "user": "bob", "seconds": 31 * 86400},
             (400, "bad_request", "seconds")),
            ({"action": "slow_mode", "seconds": 3601}, (400, "bad_request", "seconds")),
            ({"action": "ban", "user": "bob", "why": "x"}, (400, "bad_request", "why")),
            ({"action": "ban", "user": "bob", "reason": "x" * 501},
             (400, "bad_request", "reason")),
            ({"action": "ban", "user": "bob", "reason": "x" * 10240},
             (413, "too_large", None))]:
        status, refused = act(stack, "hm", "mia", body)
        assert (status, refused["error"]["code"], refused["error"].get("field")) == expected
    status, refused = act(stack, "hm", "mia", {"action": "lock"}, key=None)
    assert (status, refused["error"]["field"]) == (400, "Idempotency-Key")
    assert act(stack, "hm", "eve", {"action": "lock"})[0] == 404  # not disclosed
    assert act(stack, "nowhere", "olga", {"action": "lock"})[0] == 404
    # a key used for one action is not another action's
    assert act(stack, "hm", "mia", {"action": "lock"}, key="same")[0] == 200
    status, refused = act(stack, "hm", "mia", {"action": "unlock"}, key="same")
    assert (status, refused["error"]["code"]) == (409, "key_reused")
    assert stack.http("GET", "/v1/rooms/hm/moderation/audit", "bob")[0] == 403
    assert stack.http("GET", "/v1/rooms/hm/bans", "eve")[0] == 404

    # clients cannot produce a moderation event: no such frame, no such field ...
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob", roles=("admin",))) as ws:
        await ws.send({"type": "moderation", "room": "hm", "client_id": "c1",
                       "action": "lock"})
        assert (await ws.recv_until("error"))["code"] == "unknown_type"
        # a send naming a kind is a plain message: the field means nothing there
        await ws.send({"type": "send", "room": "hm", "client_id": "c3", "body": "hi",
                       "kind": "moderation", "action": "lock"})
        assert (await ws.recv_until_any(("ack", "error")))["type"] == "ack"
    status, refused = post(stack, "/v1/rooms/hm/messages", "bob",
                           {"body": "", "kind": "moderation"})
    assert (status, refused["error"]["field"]) == (400, "kind")
    # ... and the sequencer refuses one published without admin (behind it, a message
    # of the same room is stored right after the last moderation event)
    connection = await aio_pika.connect(stack.vhost.url("burrow-backend"))
    async with connection:
        channel = await connection.channel()
        ingress = await channel.get_exchange(topology.INGRESS, ensure=False)
        for frame in ({"kind": "moderation", "moderation": {"action": "lock"},
                       "client_id": "forged"},
                      {"client_id": "after"}):
            await ingress.publish(aio_pika.Message(orjson.dumps(
                {"room": "hm", "sender": "svc", "body": "", **frame})),
                ids.message_key("hm"))
    with MongoClient(stack.mongo_url) as client:
        db = client.get_default_database()
        eventually(lambda: db.messages.find_one({"room": "hm", "client_id": "after"}))
        events = db.messages.count_documents({"room": "hm", "kind": "moderation"})
        assert events == 3  # two promotions and the lock
        after = db.messages.find_one({"room": "hm", "client_id": "after"})
        assert after is not None and after["seq"] == 5  # lock 3, c3's message 4
        assert "kind" not in db.messages.find_one({"room": "hm", "client_id": "c3"})
        assert db.messages.find_one({"client_id": "forged"}) is None
        assert db.moderation_audit.count_documents({"room": "hm"}) == 3
        assert db.room_bans.count_documents({}) == 0
