"""The known gaps of the message lifecycle (issue 16), each reproduced on the real broker
and database: a change after a delete cut short between store and apply, a retry naming
other uploads, change frames repeated through another gateway after one died, the
reactions of a deleted message, a reply pipelined behind its parent in one sequencer
batch, and counting the replies of a long thread.

The crash tests run a real :class:`~consumers.sequencer.Sequencer` in this process (as
tests/integration/test_sequencer_faults.py does) to cut a batch short at one exact step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aio_pika
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database
from websockets.exceptions import ConnectionClosed

from burrow.core.envelopes import BATCHED_ACKS, Send, Stored, message_id_of
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from burrow.storage import database
from burrow.storage.attachments import AttachmentStore, Limits
from burrow.storage.messages import MessageStore
from consumers.sequencer import Sequencer
from queues import topology
from queues.declare import declare
from tests.conftest import Vhost, until
from tests.integration.conftest import Stack, raw_ws
from tests.integration.test_attachments_messages import upload
from tests.integration.test_sequencer_faults import gateway_link

pytestmark = pytest.mark.integration
T = 30
SECRET = "meet at the north gate"


@pytest.fixture
def mongo(mongo_url: str) -> Iterator[Database[dict[str, Any]]]:
    with MongoClient(mongo_url, serverSelectionTimeoutMS=5000) as client:
        yield client.get_default_database()


@asynccontextmanager
async def in_process(vhost: Vhost, mongo_url: str, process_env: dict[str, str],
                     **env: str) -> AsyncIterator[Sequencer]:
    """A real sequencer in this process, so a test can cut one of its steps short."""
    settings = Settings.from_env({**process_env, "BURROW_AMQP_URL": vhost.url("burrow-sequencer"),
                                  "BURROW_MONGO_URL": mongo_url, **env})
    part = topology.for_workers(settings, ("sequencer",))
    runtime = Runtime.open(settings, "test-sequencer", on_channel=partial(declare, topo=part))
    sequencer = Sequencer(settings)
    try:
        await asyncio.wait_for(sequencer.start(runtime), T)
        yield sequencer
    finally:
        await sequencer.drain()
        await runtime.close()


def publisher(ingress: aio_pika.abc.AbstractExchange, reply_to: str) -> Any:
    async def publish(send: Send) -> None:
        await ingress.publish(aio_pika.Message(
            send.to_json(), correlation_id=send.client_id, reply_to=reply_to,
            headers={BATCHED_ACKS: 1}, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            f"room.{send.room}.msg")
    return publish


async def answers(acks: asyncio.Queue[bytes], n: int) -> dict[str, dict[str, Any]]:
    """The next *n* ack or error frames, by client_id."""
    found = [json.loads(await asyncio.wait_for(acks.get(), T)) for _ in range(n)]
    return {frame["client_id"]: frame for frame in found}


async def test_a_change_after_a_delete_cut_short_is_refused_and_the_delete_completes(
        vhost: Vhost, mongo_url: str, process_env: dict[str, str],
        mongo: Database[dict[str, Any]]) -> None:
    """Gap 1. The delete is stored, then applying it fails (a bug: the batch is given
    back). Meanwhile an edit and a reaction of the deleted message arrive. Whichever
    comes first, the redelivered delete or them, they are refused and the delete
    completes: the message never gets a body or a reaction again."""
    async with in_process(vhost, mongo_url, process_env) as sequencer, \
            gateway_link(vhost) as (ingress, acks, reply_to):
        publish = publisher(ingress, reply_to)
        await publish(Send("gr", "alice", "m1", SECRET))
        [sent] = (await answers(acks, 1)).values()
        assert sent["type"] == "ack" and sent["seq"] == 1
        assert sequencer.changes is not None
        apply = sequencer.changes.apply
        cut_short = asyncio.Event()

        async def failing_once(events: Any, **read: Any) -> None:
            if not cut_short.is_set() and any(e.kind == "delete" for e in events):
                cut_short.set()  # stored, not applied: and here come the late changes
                await publish(Send("gr", "alice", "e1", "back again", kind="edit",
                                   target=sent["id"]))
                await publish(Send("gr", "bob", "r1", "", kind="reaction",
                                   target=sent["id"], emoji="👍"))
                raise KeyError("a bug between storing and applying")
            await apply(events, **read)

        sequencer.changes.apply = failing_once  # type: ignore[method-assign]
        await publish(Send("gr", "alice", "d1", "", kind="delete", target=sent["id"]))
        got = await answers(acks, 3)
    assert cut_short.is_set()
    assert (got["d1"]["type"], got["d1"]["seq"]) == ("ack", 2), got
    assert (got["e1"]["type"], got["e1"].get("code")) == ("error", "not_found"), got
    assert (got["r1"]["type"], got["r1"].get("code")) == ("error", "not_found"), got
    doc = mongo.messages.find_one({"_id": sent["id"]})
    assert doc is not None and doc["body"] == "" and doc["deleted_at"] is not None, doc
    assert "original_body" not in doc and doc["deleted_by"] == "alice"
    assert [d["seq"] for d in mongo.messages.find({"room": "gr"})] == [1, 2]
    assert mongo.reactions.count_documents({}) == 0
    assert SECRET not in str(list(mongo.messages.find({})))


async def test_a_retry_naming_other_uploads_is_the_first_send(
        stack: Stack, mongo: Database[dict[str, Any]]) -> None:
    """Gap 2. The sequencer claimed the first attempt's uploads, then died before
    storing. The client retries its client_id naming another upload: the first claim
    wins, the message lists its uploads, and the other upload stays pending for a later
    send."""
    stack.room("ga", "alice")
    first = upload(stack, "alice", "ga", b"first", "text/plain", "first.txt")
    other = upload(stack, "alice", "ga", b"other", "text/plain", "other.txt")
    mid = message_id_of("ga", "alice", "c1")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url,
                                                                tz_aware=True)
    try:  # the first attempt's claim, made by the real code
        files = AttachmentStore(database.database(client), Limits(1 << 20, frozenset(), 10))
        await files.claim([first], "ga", "alice", mid)
    finally:
        await client.close()
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as ws:
        await ws.send({"type": "send", "room": "ga", "client_id": "c1", "body": "retry",
                       "attachments": [other]})
        ack = await ws.recv_until_any(("ack", "error"))
        assert (ack["type"], ack["id"], ack["seq"]) == ("ack", mid, 1), ack
        doc = mongo.messages.find_one({"_id": mid})
        assert doc is not None and [a["id"] for a in doc["attachments"]] == [first], doc
        states = {str(d["_id"]): (d["state"], d.get("message"))
                  for d in mongo.attachments.find({})}
        assert states == {first: ("attached", mid), other: ("pending", None)}, states
        # the same again once stored: dedup answers, the other upload still untouched
        await ws.send({"type": "send", "room": "ga", "client_id": "c1", "body": "retry",
                       "attachments": [other]})
        again = await ws.recv_until_any(("ack", "error"))
        assert (again["type"], again["id"], again["seq"]) == ("ack", mid, 1), again
        # and a later send may use it
        await ws.send({"type": "send", "room": "ga", "client_id": "c2", "body": "later",
                       "attachments": [other]})
        later = await ws.recv_until_any(("ack", "error"))
        assert (later["type"], later["seq"]) == ("ack", 2), later
    assert mongo.attachments.find_one({"_id": ObjectId(other)})["message"] == later["id"]


async def test_repeated_change_frames_after_a_gateway_died_are_applied_once(
        stack: Stack, mongo: Database[dict[str, Any]]) -> None:
    """Gap 3, and gap 4 on the real stack. A client's change frames reach the sequencer
    through a gateway that is killed before the client reads their acks; the client
    repeats them (same client_id) through the other gateway, also after later changes
    of the same message: each is applied once, and an old frame repeated never undoes
    a newer change. Then the message is deleted: its reactions go from history and
    from the database, a repeated reaction frame brings none back, a new one is
    refused."""
    doomed = stack.add_gateway()
    stack.room("gw", "alice", "bob")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as ws:
        await ws.send({"type": "send", "room": "gw", "client_id": "m1", "body": "v0"})
        mid = (await ws.recv_until("ack"))["id"]
    frames = {
        "e1": ("alice", {"type": "edit", "id": mid, "body": "v1"}),
        "r1": ("bob", {"type": "react", "id": mid, "emoji": "👍"}),
        "r2": ("bob", {"type": "react", "id": mid, "emoji": "🎉"}),
    }
    async with contextlib.AsyncExitStack() as open_sockets:
        sockets = {user: await open_sockets.enter_async_context(
            raw_ws(doomed.ws_url, stack.token(user))) for user in ("alice", "bob")}
        for cid, (user, frame) in frames.items():
            await sockets[user].send({"room": "gw", "client_id": cid, **frame})
        # stored, and the gateway dies before its clients read a single ack
        await until(lambda: mongo.messages.count_documents(
            {"room": "gw", "client_id": {"$in": list(frames)}}) == 3)
        doomed.app.signal(signal.SIGKILL)
        assert doomed.exit_code(T) == -signal.SIGKILL
        for ws in sockets.values():  # their gateway is gone
            with contextlib.suppress(ConnectionClosed):
                await ws.ws.close()
    stored = {d["client_id"]: d["seq"] for d in mongo.messages.find(
        {"room": "gw", "client_id": {"$in": list(frames)}})}

    async def repeat(cid: str, user: str, frame: dict[str, Any]) -> dict[str, Any]:
        async with raw_ws(stack.gateways[0].ws_url, stack.token(user)) as ws:
            await ws.send({"room": "gw", "client_id": cid, **frame})
            return await ws.recv_until_any(("ack", "error"))

    for cid, (user, frame) in frames.items():  # through the other gateway: one seq each
        ack = await repeat(cid, user, frame)
        assert (ack["type"], ack["seq"]) == ("ack", stored[cid]), ack
    # newer changes, then the old frames once more: they change nothing
    assert (await repeat("e2", "alice", {"type": "edit", "id": mid, "body": "v2"})
            )["type"] == "ack"
    assert (await repeat("r3", "bob", {"type": "react", "id": mid, "emoji": "👍",
                                       "remove": True}))["type"] == "ack"
    for cid, (user, frame) in frames.items():
        assert (await repeat(cid, user, frame))["seq"] == stored[cid]
    status, body = stack.http("GET", "/v1/rooms/gw/messages?v=2", "bob")
    assert status == 200, body
    [message] = [m for m in body["messages"] if m["type"] == "message"]
    assert (message["body"], message.get("edit_count")) == ("v2", 2), message
    assert message["reactions"] == [{"emoji": "🎉", "count": 1, "me": True}], message
    assert [m["seq"] for m in body["messages"]] == list(range(1, 7))
    # gap 4: delete; the tombstone has no reactions, the records are gone
    assert (await repeat("d1", "alice", {"type": "delete", "id": mid}))["seq"] == 7
    assert mongo.reactions.count_documents({"message": mid}) == 0
    assert (await repeat("r2", "bob", frames["r2"][1]))["seq"] == stored["r2"]
    refused = await repeat("r4", "bob", {"type": "react", "id": mid, "emoji": "🎉"})
    assert (refused["type"], refused["code"]) == ("error", "not_found"), refused
    status, body = stack.http("GET", "/v1/rooms/gw/messages?v=2", "bob")
    assert status == 200, body
    [message] = [m for m in body["messages"] if m["type"] == "message"]
    assert message["reactions"] == [] and "deleted_at" in message, message
    assert mongo.reactions.count_documents({"message": mid}) == 0


async def test_a_reply_behind_its_parent_in_one_batch_is_threaded(
        vhost: Vhost, mongo_url: str, process_env: dict[str, str],
        mongo: Database[dict[str, Any]]) -> None:
    """Gap 5. A message with attachments has an id its sender knows before the ack
    (message_id_of), so a client may send a reply to it right behind it. The sequencer
    is held on a first batch while two such pairs queue up, so each pair is one batch:
    the reply to the stored parent is threaded under it; the reply to a parent refused
    in that batch (its upload is not claimable) is refused, its own upload left
    pending, and so is a reply to that reply."""
    async with in_process(vhost, mongo_url, process_env) as sequencer, \
            gateway_link(vhost) as (ingress, acks, reply_to):
        publish = publisher(ingress, reply_to)
        assert sequencer.files is not None
        store, hold = sequencer._store, asyncio.Event()

        async def held(sends: Any) -> Any:
            await asyncio.wait_for(hold.wait(), T)
            return await store(sends)

        sequencer._store = held  # type: ignore[method-assign]

        async def upload(user: str, name: str) -> str:
            async def body() -> AsyncIterator[bytes]:
                yield name.encode()
            assert sequencer.files is not None
            return (await sequencer.files.store("gb", user, name, "text/plain", body())).id

        mine, bobs, own = (await upload("alice", "a.txt"), await upload("bob", "b.txt"),
                           await upload("alice", "c.txt"))
        await publish(Send("gb", "alice", "first", "held"))
        await until(lambda: not any(s.inbox.qsize() for s in sequencer.slots))  # taken
        parent = message_id_of("gb", "alice", "p1")
        orphan = message_id_of("gb", "alice", "x2")
        for send in [
                Send("gb", "alice", "x1", "not mine", attachments=(bobs,)),
                Send("gb", "alice", "x2", "to a refused one", attachments=(own,),
                     reply_to=message_id_of("gb", "alice", "x1")),
                Send("gb", "alice", "x3", "to its refused reply", reply_to=orphan),
                Send("gb", "alice", "p1", "parent", attachments=(mine,)),
                Send("gb", "bob", "r1", "reply", reply_to=parent),
                Send("gb", "alice", "r2", "reply to the reply",
                     reply_to=message_id_of("gb", "bob", "r1"))]:
            await publish(send)
        await until(lambda: sum(s.inbox.qsize() for s in sequencer.slots) == 6)
        hold.set()
        got = await answers(acks, 7)
    assert [got[c]["seq"] for c in ("first", "p1", "r1")] == [1, 2, 3], got
    assert [(got[c]["type"], got[c].get("code")) for c in ("x1", "x2", "x3", "r2")] == [
        ("error", "not_claimable"), ("error", "not_found"), ("error", "not_found"),
        ("error", "not_found")], got
    reply = mongo.messages.find_one({"client_id": "r1"})
    assert reply is not None and (reply["reply_to"], reply["thread"]) == (parent, parent)
    root = mongo.messages.find_one({"_id": parent})
    assert root is not None and (root["reply_count"], root["last_reply"]["seq"]) == (1, 3)
    assert {str(d["_id"]): d["state"] for d in mongo.attachments.find({})} == {
        mine: "attached", bobs: "pending", own: "pending"}
    assert mongo.messages.count_documents({"room": "gb"}) == 3


async def test_reply_counts_read_only_the_new_replies(mongo_url: str) -> None:
    """Gap 6. The root's count is brought up to date from the replies above the last
    one counted (a short range of the thread_seq index), not from the whole thread:
    each stored reply counted once, however often and in whatever order it runs."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        store = MessageStore(database.database(client))
        await store.ensure_indexes()
        now = int(datetime.now(UTC).timestamp() * 1000)

        def message(seq: int, thread: str | None = "root") -> Stored:
            return Stored(id="root" if seq == 1 else f"m{seq}", room="rc", seq=seq,
                          sender=f"u{seq % 3}", client_id=f"c{seq}", body="x", ts=now,
                          reply_to=thread, thread=thread)

        await store.insert([message(1, None), *(message(s) for s in range(2, 6))])
        await store.count_replies(["root"])
        await store.count_replies(["root"])  # again: a redelivery
        await store.insert([message(6), message(7, None), message(8)])
        await asyncio.gather(*(store.count_replies(["root"]) for _ in range(3)))
        root = await store.messages.find_one({"_id": "root"})
        assert root is not None and root["reply_count"] == 6, root
        assert (root["last_reply"]["seq"], root["last_reply"]["id"]) == (8, "m8")
        await store.count_replies(["nothing-here"])  # no such root: nothing written
        assert await store.messages.count_documents({"_id": "nothing-here"}) == 0
    finally:
        await client.close()
