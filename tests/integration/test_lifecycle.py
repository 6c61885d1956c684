"""Edits, deletes and reactions as room events (issue 16): real gateway and sequencer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from burrow.client.chat import Change, ChatError, Message
from tests.integration.conftest import Stack, raw_ws

SECRET = "the secret plan is in the old mill"


async def take(queue: asyncio.Queue[Any], n: int) -> list[Any]:
    return [await asyncio.wait_for(queue.get(), 30) for _ in range(n)]


def state(messages: list[Message], changes: list[Change], reader: str) -> dict[str, Any]:
    """A v2 receiver's view: apply events in seq order (what history must equal)."""
    found: dict[str, dict[str, Any]] = {}
    reactions: dict[str, dict[str, set[str]]] = {}
    for item in sorted([*messages, *changes], key=lambda x: x.seq):
        if isinstance(item, Message):
            found[item.id] = {"body": item.body, "edit_count": 0, "deleted": False}
            reactions[item.id] = {}
        elif item.kind == "edit":
            found[item.target].update(body=item.body, edit_count=item.edit_count)
        elif item.kind == "delete":
            found[item.target].update(body="", deleted=True)
        else:
            users = reactions[item.target].setdefault(item.emoji or "", set())
            (users.add if item.op == "add" else users.discard)(item.sender)
    for mid, by in reactions.items():
        found[mid]["reactions"] = {} if found[mid]["deleted"] else {
            e: (len(u), reader in u) for e, u in by.items() if u}
    return found


def history_state(stack: Stack, room: str, reader: str) -> dict[str, Any]:
    status, body = stack.http("GET", f"/v1/rooms/{room}/messages?v=2&limit=500", reader)
    assert status == 200, body
    return {m["id"]: {"body": m["body"], "edit_count": m.get("edit_count", 0),
                      "deleted": "deleted_at" in m,
                      "reactions": {r["emoji"]: (r["count"], r["me"]) for r in m["reactions"]}}
            for m in body["messages"] if m["type"] == "message"}


async def test_edit_delete_react_everywhere(stack: Stack) -> None:
    stack.room("lc", "alice", "bob")
    alice, bob = await stack.client("alice"), await stack.client("bob")
    await alice.subscribe("lc", since=0)
    await bob.subscribe("lc", since=0)
    first = await alice.send("lc", SECRET)
    other = await bob.send("lc", "bob's")
    edit = await alice.edit("lc", first.id, SECRET + " v2", client_id="e1")
    again = await alice.edit("lc", first.id, SECRET + " v2", client_id="e1")
    assert again.seq == edit.seq == 3  # applied once (G3)
    await bob.react("lc", first.id, "👍")
    await alice.react("lc", first.id, "👍")
    await alice.react("lc", first.id, "🎉")
    await alice.react("lc", first.id, "🎉", remove=True)
    # refusals: no seq taken
    for call, code in [
            (bob.edit("lc", first.id, "mine now"), "forbidden"),
            (bob.delete("lc", first.id), "forbidden"),
            (alice.edit("lc", "nope", "x"), "not_found"),
            (alice.edit("lc", edit.id, "x"), "not_found"),
            (alice.react("lc", first.id, "x" * 65), "bad_frame"),
            (alice.react("lc", first.id, "a\x01"), "bad_frame")]:
        with pytest.raises(ChatError) as exc:
            await call
        assert exc.value.code == code
    messages = await take(bob.messages, 2)
    changes = await take(bob.changes, 5)
    assert [c.seq for c in changes] == [3, 4, 5, 6, 7]
    # history equals what the v2 receiver built
    assert history_state(stack, "lc", "bob") == state(messages, changes, "bob")
    assert history_state(stack, "lc", "bob")[first.id]["reactions"] == {"👍": (2, True)}
    status, versions = stack.http("GET", f"/v1/rooms/lc/messages/{first.id}/edits", "bob")
    assert status == 200 and [v["body"] for v in versions["versions"]] == [
        SECRET, SECRET + " v2"]
    assert stack.http("GET", f"/v1/rooms/lc/messages/{first.id}/edits", "carol")[0] == 403
    # a v1 subscriber: contiguous message frames, the changes with a fallback body
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as ws:
        await ws.send({"type": "subscribe", "room": "lc", "since": 0})
        frames = [await ws.recv_until("message") for _ in range(7)]
        assert [f["seq"] for f in frames] == list(range(1, 8))
        assert frames[2]["body"] == "* " + SECRET + " v2" and frames[2]["kind"] == "edit"
    # the owner deletes bob's message, bob deletes alice's? no: alice deletes her own
    await alice.delete("lc", other.id)  # alice owns the room
    deleted = await alice.delete("lc", first.id)
    with pytest.raises(ChatError) as exc:
        await alice.edit("lc", first.id, "back")
    assert exc.value.code == "not_found"
    changes += await take(bob.changes, 2)
    assert history_state(stack, "lc", "bob") == state(messages, changes, "bob")
    # the deleted text is nowhere: history, edits, resume (WS v1 and v2, poll), raw db
    status, body = stack.http("GET", "/v1/rooms/lc/messages?v=2", "bob")
    assert SECRET not in str(body)
    assert SECRET not in str(stack.http("GET", "/v1/rooms/lc/messages", "bob")[1])
    status, versions = stack.http("GET", f"/v1/rooms/lc/messages/{first.id}/edits", "bob")
    assert status == 200 and versions["versions"] == []
    for v in (1, 2):
        async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as ws:
            await ws.send({"type": "subscribe", "room": "lc", "since": 0, "v": v})
            seen = [await ws.recv_until_any(("message", "edit", "delete", "reaction"))
                    for _ in range(deleted.seq)]
            assert [f["seq"] for f in seen] == list(range(1, deleted.seq + 1))
            assert SECRET not in str(seen)
    async with httpx.AsyncClient() as http:
        answer = await http.get(stack.gateways[0].url("/v1/poll"), params={
            "rooms": "lc", "cursor": "lc:0", "timeout": "0", "v": "2"},
            headers={"Authorization": f"Bearer {stack.token('bob')}"})
        events = answer.json()["events"]
        assert [e["seq"] for e in events] == list(range(1, deleted.seq + 1))
        assert SECRET not in answer.text
        assert {e["type"] for e in events} == {"message", "edit", "delete", "reaction"}
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        db = client.get_default_database()
        assert SECRET not in str(list(db.messages.find({"room": "lc"})))
        tomb = db.messages.find_one({"_id": first.id})
        assert tomb is not None and tomb["deleted_by"] == "alice" and tomb["seq"] == 1


async def test_permissions_admin_nonmember_and_http(stack: Stack) -> None:
    stack.room("perm", "owner", "alice", "bob")
    alice = await stack.client("alice")
    sent = await alice.send("perm", "hi")
    bob = await stack.client("bob")
    with pytest.raises(ChatError) as exc:
        await bob.delete("perm", sent.id)
    assert exc.value.code == "forbidden"
    outsider = await stack.client("carol")
    with pytest.raises(ChatError) as exc:
        await outsider.react("perm", sent.id, "👍")
    assert exc.value.code == "forbidden"  # the gateway's membership check (G6)
    # over HTTP: edit, react, an admin's delete
    def call(method: str, path: str, user: str, body: Any, key: str,
             roles: tuple[str, ...] = ()) -> tuple[int, Any]:
        request = httpx.Request(method, stack.gateways[0].url(path), json=body, headers={
            "Authorization": f"Bearer {stack.token(user, roles=roles)}",
            "Idempotency-Key": key})
        with httpx.Client() as http:
            answer = http.send(request)
        return answer.status_code, answer.json() if answer.content else None
    assert call("POST", f"/v1/rooms/perm/messages/{sent.id}/edit", "bob", {"body": "x"},
                "k1")[0] == 403
    status, body = call("POST", f"/v1/rooms/perm/messages/{sent.id}/edit", "alice",
                        {"body": "edited"}, "k2")
    assert status == 201 and body["seq"] == 2
    assert call("POST", f"/v1/rooms/perm/messages/{sent.id}/reactions", "bob",
                {"emoji": "👍"}, "k3")[0] == 201
    assert call("POST", f"/v1/rooms/perm/messages/{sent.id}/reactions", "bob",
                {"emoji": 5}, "k4")[0] == 400
    status, body = call("DELETE", f"/v1/rooms/perm/messages/{sent.id}", "admin", None, "k5",
                        roles=("admin",))
    assert status == 403  # not a member: the gateway's check holds for admins too
    stack.http("PUT", "/v1/rooms/perm/members/root", "owner")
    status, body = call("DELETE", f"/v1/rooms/perm/messages/{sent.id}", "root", None, "k6",
                        roles=("admin",))
    assert status == 201, body
    status, history = stack.http("GET", "/v1/rooms/perm/messages?v=2", "alice")
    target = history["messages"][0]
    assert (target["body"], target["deleted_by"], target["reactions"]) == ("", "root", [])


async def test_too_many_reactions_and_edit_window(vhost: Any, mongo_url: str,
                                                  start: Any) -> None:
    stack = Stack(start, vhost, mongo_url)
    stack.add_sequencer(BURROW_MAX_REACTIONS="2", BURROW_EDIT_WINDOW="1")
    stack.add_gateway()
    stack.room("bounds", "alice", "bob")
    alice = await stack.client("alice")
    bob = await stack.client("bob")
    try:
        sent = await alice.send("bounds", "hello")
        await alice.edit("bounds", sent.id, "in time")
        await alice.react("bounds", sent.id, "a")
        await alice.react("bounds", sent.id, "b")
        with pytest.raises(ChatError) as exc:
            await bob.react("bounds", sent.id, "c")
        assert exc.value.code == "too_many_reactions"
        await bob.react("bounds", sent.id, "a")  # an existing emoji always works
        await asyncio.sleep(1.1)  # the window is wall-clock time by definition
        with pytest.raises(ChatError) as exc:
            await alice.edit("bounds", sent.id, "late")
        assert exc.value.code == "edit_window"
    finally:
        await alice.close()
        await bob.close()
