"""Messages that reference attachments (docs/attachments.md, issue 16 item 7), on the
real stack: the sequencer claims a send's uploads before it numbers it, the message
carries their metadata everywhere a message goes, refusals store nothing and leave the
uploads pending, and deleting the message deletes its files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from burrow.core.envelopes import MAX_ATTACHMENTS, Stored, message_id_of
from burrow.storage.attachments import AttachmentStore, Limits
from burrow.storage.changes import ChangeStore
from tests.integration.conftest import Raw, Stack, raw_ws
from tests.integration.test_attachments import TYPES, chunks_of
from tests.unit.test_uploads import SAMPLES, SIZES

pytestmark = pytest.mark.integration
PNG = SAMPLES["image/png"]


@pytest.fixture
def mongo(stack: Stack) -> Iterator[Database[dict[str, Any]]]:
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        yield client.get_default_database()


def upload(stack: Stack, user: str, room: str, data: bytes, kind: str, name: str) -> str:
    answer = httpx.post(stack.gateways[0].url(f"/v1/rooms/{room}/attachments"),
                        params={"name": name}, content=data, timeout=30,
                        headers={"Authorization": f"Bearer {stack.token(user)}",
                                 "Content-Type": kind})
    assert answer.status_code == 201, answer.text
    file_id: str = answer.json()["id"]
    return file_id


async def send(ws: Raw, room: str, client_id: str, attachments: Any,
               body: str = "") -> dict[str, Any]:
    """Send; the ack or error frame that answers it."""
    await ws.send({"type": "send", "room": room, "client_id": client_id, "body": body,
                   "attachments": attachments})
    return await ws.recv_until_any(("ack", "error"))


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=30, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=30, **kwargs)


def link(stack: Stack, user: str, room: str, file_id: str) -> httpx.Response:
    return httpx.get(stack.gateways[0].url(f"/v1/rooms/{room}/attachments/{file_id}"),
                     headers={"Authorization": f"Bearer {stack.token(user)}"}, timeout=30)


async def test_a_message_carries_its_attachments_everywhere(
        stack: Stack, mongo: Database[dict[str, Any]]) -> None:
    stack.room("ar", "alice", "bob")
    png = upload(stack, "alice", "ar", PNG, "image/png", "cat.png")
    txt = upload(stack, "alice", "ar", b"notes", "text/plain", "notes.txt")
    want = [{"id": png, "name": "cat.png", "type": "image/png", "size": len(PNG),
             "width": SIZES["image/png"][0], "height": SIZES["image/png"][1]},
            {"id": txt, "name": "notes.txt", "type": "text/plain", "size": 5}]
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob, \
            raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as alice:
        await bob.send({"type": "subscribe", "room": "ar", "v": 2})
        await bob.recv_until("subscribed")
        ack = await send(alice, "ar", "c1", [png, txt])
        assert ack["type"] == "ack" and ack["seq"] == 1, ack
        live = await bob.recv_until("message")
        assert live["attachments"] == want and live["body"] == ""
        # retried (same client_id): stored once, same answer
        again = await send(alice, "ar", "c1", [png, txt])
        assert (again["type"], again["seq"], again["id"]) == ("ack", 1, ack["id"])
    assert mongo.messages.count_documents({"room": "ar"}) == 1
    # history, v1 and v2
    for query in ("", "?v=2"):
        status, body = stack.http("GET", f"/v1/rooms/ar/messages{query}", "bob")
        assert status == 200 and body["messages"][0]["attachments"] == want, body
    # resume, v1 and v2
    for v in (1, 2):
        async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as ws:
            await ws.send({"type": "subscribe", "room": "ar", "since": 0, "v": v})
            assert (await ws.recv_until("message"))["attachments"] == want
    # long-poll
    answer = get(stack.gateways[0].url("/v1/poll"), params={
        "rooms": "ar", "cursor": "ar:0", "timeout": "0", "v": "2"},
        headers={"Authorization": f"Bearer {stack.token('bob')}"})
    assert answer.json()["events"][0]["attachments"] == want
    # attached: every member may now ask for a URL (no URL in the message itself)
    assert link(stack, "bob", "ar", png).status_code == 200
    assert "url" not in str(want)


async def test_a_claim_made_before_a_crash_is_claimed_again(
        stack: Stack, mongo: Database[dict[str, Any]]) -> None:
    """The sequencer claimed, then died before storing: the redelivered send claims for
    the same message id (derived from its dedup key) and succeeds."""
    stack.room("ac", "alice")
    png = upload(stack, "alice", "ac", PNG, "image/png", "a.png")
    mongo.attachments.update_one({"_id": ObjectId(png)}, {"$set": {
        "state": "attached", "message": message_id_of("ac", "alice", "c9")}})
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as alice:
        ack = await send(alice, "ac", "c9", [png])
    assert ack["type"] == "ack" and ack["id"] == message_id_of("ac", "alice", "c9"), ack
    doc = mongo.messages.find_one({"_id": ack["id"]})
    assert doc is not None and [a["id"] for a in doc["attachments"]] == [png]


async def test_refused_attachments_store_nothing_and_leave_uploads_pending(
        stack: Stack, mongo: Database[dict[str, Any]]) -> None:
    stack.room("ar", "alice", "bob")
    stack.room("as", "alice")
    mine = upload(stack, "alice", "ar", b"mine", "text/plain", "m.txt")
    bobs = upload(stack, "bob", "ar", b"bob's", "text/plain", "b.txt")
    elsewhere = upload(stack, "alice", "as", b"other room", "text/plain", "o.txt")
    unknown = str(ObjectId())
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as alice:
        for n, (attachments, code) in enumerate([
                ([bobs], "not_claimable"), ([elsewhere], "not_claimable"),
                ([unknown], "not_claimable"), ([mine, bobs], "not_claimable"),
                ([unknown] * 2, "bad_attachments"), (mine, "bad_attachments"),
                (["xyz"], "bad_attachments"), ([mine[:-1] + "G"], "bad_attachments"),
                ([str(ObjectId()) for _ in range(MAX_ATTACHMENTS + 1)], "bad_attachments"),
                ([1], "bad_attachments")]):
            answer = await send(alice, "ar", f"bad{n}", attachments)
            assert (answer["type"], answer["code"], answer["client_id"]) == (
                "error", code, f"bad{n}"), (attachments, answer)
        assert mongo.messages.count_documents({}) == 0
        assert {r["state"] for r in mongo.attachments.find()} == {"pending"}
        # HTTP send: the same refusals
        assert stack.http("POST", "/v1/rooms/ar/messages", "alice",
                          {"body": "", "attachments": [bobs]})[0] == 400  # no Idempotency-Key: refused before anything
        for attachments, want in (([bobs], (409, "not_claimable")),
                                  ([mine, mine], (400, "bad_attachments"))):
            answer = post(stack.gateways[0].url("/v1/rooms/ar/messages"),
                                json={"body": "", "attachments": attachments},
                                headers={"Authorization": f"Bearer {stack.token('alice')}",
                                         "Idempotency-Key": f"h{len(attachments)}"})
            assert (answer.status_code, answer.json()["error"]["code"]) == want
        assert mongo.messages.count_documents({}) == 0
        # the upload a refused send named is still usable
        ok = await send(alice, "ar", "good", [mine], "here")
        assert ok["type"] == "ack" and ok["seq"] == 1, ok
        # and now taken: another message may not claim it
        taken = await send(alice, "ar", "again", [mine])
        assert (taken["type"], taken["code"]) == ("error", "not_claimable")
    assert mongo.messages.count_documents({}) == 1
    assert mongo.attachments.find_one({"_id": ObjectId(mine)})["message"] == ok["id"]


async def test_deleting_a_message_deletes_its_files(
        stack: Stack, mongo: Database[dict[str, Any]]) -> None:
    stack.room("ad", "alice", "bob")
    png = upload(stack, "alice", "ad", PNG, "image/png", "a.png")
    kept = upload(stack, "alice", "ad", b"kept", "text/plain", "k.txt")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as alice:
        ack = await send(alice, "ad", "m1", [png])
        other = await send(alice, "ad", "m2", [kept])
        url = link(stack, "bob", "ad", png).json()["url"]
        assert get(stack.gateways[0].url(url)).status_code == 200
        oid = ObjectId(png)
        assert mongo["attachments.chunks"].count_documents({"files_id": oid}) == 1
        await alice.send({"type": "delete", "room": "ad", "id": ack["id"], "client_id": "d1"})
        deleted = await alice.recv_until_any(("ack", "error"))
        assert deleted["type"] == "ack", deleted
        # a retried delete (same client_id) is applied again and answers the same
        await alice.send({"type": "delete", "room": "ad", "id": ack["id"], "client_id": "d1"})
        assert (await alice.recv_until_any(("ack", "error")))["seq"] == deleted["seq"]
    assert mongo.attachments.find_one({"_id": oid}) is None
    assert mongo["attachments.files"].find_one({"_id": oid}) is None
    assert mongo["attachments.chunks"].count_documents({"files_id": oid}) == 0
    assert mongo.messages.find_one({"_id": ack["id"]})["attachments"] == []
    for user in ("alice", "bob"):
        assert link(stack, user, "ad", png).status_code == 404
    assert get(stack.gateways[0].url(url)).status_code == 404
    body = stack.http("GET", "/v1/rooms/ad/messages?v=2", "bob")[1]
    shown = {m["id"]: m for m in body["messages"]}
    assert "attachments" not in shown[ack["id"]]
    assert [a["id"] for a in shown[other["id"]]["attachments"]] == [kept]  # untouched
    assert mongo.attachments.find_one({"_id": ObjectId(kept)})["state"] == "attached"


async def test_a_delete_cut_short_is_applied_again(db: AsyncDatabase[dict[str, Any]]) -> None:
    """A delete cut short (a crash after the GridFS file went, before its record and the
    tombstone): applying the delete again finishes it without failing; applying it once
    more changes nothing."""
    files = AttachmentStore(db, Limits(65536, TYPES, 5))
    changes = ChangeStore(db, files)
    stored = await files.store("r", "ann", "a.png", "image/png", chunks_of(PNG))
    [found] = await files.claim([stored.id], "r", "ann", "m")
    message = Stored("m", "r", 1, "ann", "c", "", 1000, attachments=(found.reference(),))
    await db.messages.insert_one(message.to_document())
    delete = Stored("d", "r", 2, "ann", "d", "", 2000, kind="delete", target="m")
    await db["attachments"].update_one({"_id": ObjectId(stored.id)},
                                       {"$set": {"state": "deleting"}})
    await files.bucket.delete(ObjectId(stored.id))  # cut short here
    await changes.apply([delete])
    await changes.apply([delete])
    doc = await db.messages.find_one({"_id": "m"})
    assert doc is not None and doc["attachments"] == [] and doc["deleted_by"] == "ann"
    assert await db["attachments"].count_documents({}) == 0
    assert await db["attachments.chunks"].count_documents({}) == 0
    assert await db["attachments.files"].count_documents({}) == 0
