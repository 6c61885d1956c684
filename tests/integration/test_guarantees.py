"""The guarantees G1-G6 (docs/architecture.md), each proven against real processes, broker
and database."""

from __future__ import annotations

import asyncio
import signal

import aio_pika
import orjson
import pytest
from pymongo import MongoClient

from burrow.core import ids
from burrow.core.envelopes import Send
from gateway.members import MEMBER_EVENTS
from queues import topology
from tests.conftest import eventually, until
from tests.integration.conftest import Stack, raw_ws

pytestmark = pytest.mark.integration
T = 30  # seconds: every wait is bounded


def stored(stack: Stack, room: str) -> list[dict[str, object]]:
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        db = client.get_default_database()
        return list(db.messages.find({"room": room}, {"_id": 1, "seq": 1, "client_id": 1,
                                                       "sender": 1}).sort("seq", 1))


async def receive(client: object, count: int) -> list[object]:
    queue = client.messages  # type: ignore[attr-defined]
    return [await asyncio.wait_for(queue.get(), T) for _ in range(count)]


async def test_g1_every_acked_message_is_stored(shared_stack: Stack) -> None:
    shared_stack.room("g1", "alice")
    alice = await shared_stack.client("alice")
    acks = await asyncio.wait_for(asyncio.gather(
        *(alice.send("g1", f"m{i}", client_id=f"c{i}") for i in range(40))), T)
    docs = stored(shared_stack, "g1")
    assert {(a.seq, a.id) for a in acks} == {(d["seq"], d["_id"]) for d in docs}
    assert len(docs) == 40


async def test_g2_one_gap_free_order_seen_by_every_receiver(shared_stack: Stack) -> None:
    shared_stack.add_gateway()
    shared_stack.room("g2", "s1", "s2", "s3", "r1", "r2")
    receivers = [await shared_stack.client("r1", [0]), await shared_stack.client("r2", [1])]
    for receiver in receivers:
        await asyncio.wait_for(receiver.subscribe("g2"), T)
    senders = [await shared_stack.client(f"s{i}", [i % 2]) for i in (1, 2, 3)]
    await asyncio.wait_for(asyncio.gather(*(
        s.send("g2", f"{s_i}-{n}") for s_i, s in enumerate(senders) for n in range(15))), T)
    streams = [await receive(r, 45) for r in receivers]
    for stream in streams:
        assert [m.seq for m in stream] == list(range(1, 46))  # type: ignore[attr-defined]
    assert [m.id for m in streams[0]] == [m.id for m in streams[1]]  # type: ignore[attr-defined]
    assert [d["seq"] for d in stored(shared_stack, "g2")] == list(range(1, 46))
    assert all(not r.violations for r in receivers)


async def test_g3_a_repeated_send_is_stored_once_with_one_seq(shared_stack: Stack) -> None:
    shared_stack.add_gateway()
    shared_stack.room("g3", "alice")
    frame = {"type": "send", "room": "g3", "client_id": "same", "body": "once"}
    async with raw_ws(shared_stack.gateways[0].ws_url, shared_stack.token("alice")) as first:
        await first.send(frame)
        ack1 = await first.recv_until("ack")
    # the retry comes through the other gateway, as after a reconnect
    async with raw_ws(shared_stack.gateways[1].ws_url, shared_stack.token("alice")) as second:
        await second.send(frame)
        await second.send(frame)
        ack2 = await second.recv_until("ack")
        ack3 = await second.recv_until("ack")
    assert ack1 == ack2 == ack3
    assert [d["seq"] for d in stored(shared_stack, "g3")] == [ack1["seq"]]


async def test_g4_resume_gives_every_later_message_once_then_live(shared_stack: Stack) -> None:
    shared_stack.room("g4", "alice", "bob")
    alice = await shared_stack.client("alice")
    for n in range(5):
        await asyncio.wait_for(alice.send("g4", f"early-{n}"), T)
    async with raw_ws(shared_stack.gateways[0].ws_url, shared_stack.token("bob")) as bob:
        await bob.send({"type": "subscribe", "room": "g4", "since": 2})
        assert await bob.recv() == {"type": "subscribed", "room": "g4", "since": 2}
        replayed = [await bob.recv() for _ in range(3)]
        assert [m["seq"] for m in replayed] == [3, 4, 5]
        # live messages sent while the replay may still run: no gap, no duplicate
        sends = asyncio.gather(*(alice.send("g4", f"late-{n}") for n in range(10)))
        live = [await bob.recv() for _ in range(10)]
        await asyncio.wait_for(sends, T)
        assert [m["seq"] for m in live] == list(range(6, 16))
        await bob.send({"type": "ping", "id": 1})
        assert await bob.recv() == {"type": "pong", "id": 1}  # nothing else was queued


async def test_g4_resume_seam_under_concurrent_sends(shared_stack: Stack) -> None:
    """Subscribing while messages pour in: bind, replay and live meet with no gap."""
    shared_stack.room("seam", "alice", "bob")
    alice = await shared_stack.client("alice")
    for n in range(20):
        await asyncio.wait_for(alice.send("seam", f"before-{n}"), T)
    pouring = asyncio.gather(*(alice.send("seam", f"during-{n}") for n in range(60)))
    bob = await shared_stack.client("bob")
    await asyncio.wait_for(bob.subscribe("seam", since=0), T)
    await asyncio.wait_for(pouring, T)
    got = await receive(bob, 80)
    assert [m.seq for m in got] == list(range(1, 81))  # type: ignore[attr-defined]
    assert not bob.violations


async def test_g5_a_redelivered_ingress_message_is_stored_once(shared_stack: Stack) -> None:
    """A backend service (or the broker, redelivering) may publish the same send twice."""
    shared_stack.room("g5", "alice", "bob")
    bob = await shared_stack.client("bob")
    await asyncio.wait_for(bob.subscribe("g5"), T)
    connection = await aio_pika.connect(shared_stack.vhost.url("burrow-backend"))
    async with connection:
        channel = await connection.channel()
        ingress = await channel.get_exchange(topology.INGRESS, ensure=False)
        body = Send("g5", "system:reminders", "job-1", "stand-up in 5").to_json()
        for _ in range(3):
            await ingress.publish(aio_pika.Message(body), ids.message_key("g5"))
    first = await asyncio.wait_for(bob.messages.get(), T)
    assert (first.seq, first.sender, first.body) == (1, "system:reminders", "stand-up in 5")
    await asyncio.wait_for(bob.send("g5", "marker"), T)
    marker = await asyncio.wait_for(bob.messages.get(), T)
    assert (marker.seq, marker.body) == (2, "marker")  # no second copy came before it
    assert [d["seq"] for d in stored(shared_stack, "g5")] == [1, 2]


async def test_g5_a_malformed_ingress_message_is_dead_lettered(shared_stack: Stack) -> None:
    shared_stack.room("g5b", "alice")
    connection = await aio_pika.connect(shared_stack.vhost.url("burrow-backend"))
    async with connection:
        channel = await connection.channel()
        ingress = await channel.get_exchange(topology.INGRESS, ensure=False)
        await ingress.publish(aio_pika.Message(b"{not json"), ids.message_key("g5b"))
        await ingress.publish(aio_pika.Message(orjson.dumps({"room": "g5b"})),
                              ids.message_key("g5b"))
    alice = await shared_stack.client("alice")
    ack = await asyncio.wait_for(alice.send("g5b", "still works"), T)
    assert ack.seq == 1
    admin = await aio_pika.connect(shared_stack.vhost.url("burrow-admin"))
    async with admin:
        dead = await (await admin.channel()).get_queue(topology.SHARD_DEAD, ensure=False)
        bodies = []
        for _ in range(2):
            message = await dead.get(timeout=T, fail=True)
            assert message is not None
            bodies.append(message.body)
    assert sorted(bodies) == sorted([b"{not json", orjson.dumps({"room": "g5b"})])


async def test_g6_strangers_cannot_read_or_write(shared_stack: Stack) -> None:
    shared_stack.room("club", "alice")
    async with raw_ws(shared_stack.gateways[0].ws_url, shared_stack.token("mallory")) as mallory:
        await mallory.send({"type": "subscribe", "room": "club"})
        assert (await mallory.recv())["code"] == "forbidden"
        await mallory.send({"type": "send", "room": "club", "client_id": "x", "body": "hi"})
        refused = await mallory.recv()
        assert (refused["code"], refused["client_id"]) == ("forbidden", "x")
        await mallory.send({"type": "read", "room": "club", "seq": 1})
        assert (await mallory.recv())["code"] == "forbidden"
    assert shared_stack.http("GET", "/v1/rooms/club/messages", "mallory")[0] == 403
    assert shared_stack.http("GET", "/v1/rooms/club/members", "mallory")[0] == 403
    assert stored(shared_stack, "club") == []


async def test_g6_a_removed_member_stops_receiving_at_once(shared_stack: Stack) -> None:
    shared_stack.add_gateway()
    shared_stack.room("team", "alice", "bob")
    async with raw_ws(shared_stack.gateways[1].ws_url, shared_stack.token("bob")) as bob:
        await bob.send({"type": "subscribe", "room": "team"})
        assert (await bob.recv())["type"] == "subscribed"
        assert shared_stack.http("DELETE", "/v1/rooms/team/members/bob", "alice")[0] == 204
        assert await bob.recv() == {"type": "unsubscribed", "room": "team", "reason": "removed"}
        await bob.send({"type": "send", "room": "team", "client_id": "late", "body": "x"})
        assert (await bob.recv())["code"] == "forbidden"


async def test_g6_admins_read_any_room(shared_stack: Stack) -> None:
    shared_stack.room("private", "alice")
    token = shared_stack.token("root", roles=("admin",))
    status, body = shared_stack.http("GET", "/v1/rooms/private/members", None, token=token)
    assert status == 200 and [m["user"] for m in body["members"]] == ["alice"]
    assert shared_stack.http("PUT", "/v1/rooms/private/members/carol", None, token=token)[0] == 200


@pytest.mark.parametrize("sequencer_back", ["while the gateway drains", "after it exited"])
async def test_sigterm_on_a_gateway_closes_with_1001_and_loses_nothing(
        stack: Stack, sequencer_back: str) -> None:
    """Every send is in flight at the SIGTERM: read by the gateway, not stored, not acked
    (the sequencer is paused). Either the drain waits for the acks, or (its patience
    spent) it closes and the clients resend elsewhere; each message stored once, in order."""
    draining = stack.add_gateway(BURROW_SEND_TIMEOUT="30" if sequencer_back.startswith(
        "while") else "1")
    stack.room("calm", "alice", "bob")
    bob = await stack.client("bob", [0])
    await asyncio.wait_for(bob.subscribe("calm"), T)
    alice = await stack.client("alice", [1, 0])  # reconnects to the other gateway
    sequencer = stack.sequencers[0]
    sequencer.app.signal(signal.SIGSTOP)
    try:
        sends = [asyncio.ensure_future(alice.send("calm", f"n{n}", client_id=f"c{n}"))
                 for n in range(50)]
        await until(lambda: draining.metric("burrow_gateway_frames_in_total",
                                            type="send") >= 50)
        assert not any(send.done() for send in sends)  # all 50 in flight at the kill
        draining.app.signal(signal.SIGTERM)
        if sequencer_back == "after it exited":
            assert draining.exit_code(T) == 0, draining.log_tail()
    finally:
        sequencer.app.signal(signal.SIGCONT)
    acks = await asyncio.wait_for(asyncio.gather(*sends), T * 2)
    await until(lambda: 1001 in alice.close_codes)  # after the acks, when the drain waited
    assert sorted(a.seq for a in acks) == list(range(1, 51))
    got = await receive(bob, 50)
    assert [m.seq for m in got] == list(range(1, 51))  # type: ignore[attr-defined]
    docs = stored(stack, "calm")
    assert sorted(d["client_id"] for d in docs) == sorted(f"c{n}" for n in range(50))
    assert draining.exit_code(T) == 0, draining.log_tail()


async def test_sequencer_failover_under_load_keeps_acked_messages_and_order(
        stack: Stack) -> None:
    standby = stack.add_sequencer()
    active = stack.sequencers[0]
    stack.room("busy", "alice", "bob")
    bob = await stack.client("bob")
    await asyncio.wait_for(bob.subscribe("busy"), T)
    alice = await stack.client("alice")
    first = await asyncio.wait_for(asyncio.gather(
        *(alice.send("busy", f"a{n}") for n in range(30))), T)
    # The active one is frozen mid-stream (wherever it is in a batch) once some of the
    # next sends are acked; the rest, and 60 more sent while it is frozen, are in flight
    # (read by the gateway, not acked) when it dies.
    sends = [asyncio.ensure_future(alice.send("busy", f"b{n}")) for n in range(60)]
    await until(lambda: sum(send.done() for send in sends) >= 10)
    active.app.signal(signal.SIGSTOP)
    sends += [asyncio.ensure_future(alice.send("busy", f"c{n}")) for n in range(60)]
    await until(lambda: stack.gateways[0].metric("burrow_gateway_frames_in_total",
                                                 type="send") >= 150)
    assert not any(send.done() for send in sends[60:])
    active.app.signal(signal.SIGKILL)
    second = await asyncio.wait_for(asyncio.gather(*sends), T * 3)
    acks = first + second
    assert sorted(a.seq for a in acks) == list(range(1, 151))
    docs = stored(stack, "busy")
    assert [d["seq"] for d in docs] == list(range(1, 151))
    assert len({d["client_id"] for d in docs}) == 150
    got = await receive(bob, 150)
    assert [m.seq for m in got] == list(range(1, 151))  # type: ignore[attr-defined]
    assert standby.app.exited is None


async def test_an_unconfirmed_send_gets_a_retryable_error_and_its_retry_is_stored_once(
        stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_SEND_TIMEOUT="1")
    stack.room("later", "alice")
    stack.sequencers[0].app.stop()  # nobody stores: the send waits in its shard queue
    frame = {"type": "send", "room": "later", "client_id": "patient", "body": "eventually"}
    async with raw_ws(gateway.ws_url, stack.token("alice")) as ws:
        await ws.send(frame)
        error = await ws.recv()
        assert (error["code"], error["client_id"]) == ("timeout", "patient")
        stack.add_sequencer()
        ack = await ws.recv_until("ack")  # the first send is stored once a sequencer runs
        await ws.send(frame)  # the client's retry, same client_id
        assert await ws.recv_until("ack") == ack
    assert [d["seq"] for d in stored(stack, "later")] == [1]


async def test_a_resend_of_a_send_on_its_way_is_not_published_again(stack: Stack) -> None:
    """A client that times out and resends while the sequencer is behind: the gateway
    publishes the send once and each resend waits for its ack, so a slow sequencer is not
    sent one more copy per timeout (the retry storm of the cluster fault bench: 50,592
    resends for 18,000 sends). One ack answers it, and the send is stored once."""
    gateway = stack.add_gateway(BURROW_SEND_TIMEOUT="1")
    stack.room("behind", "alice")
    stack.sequencers[0].app.stop()  # nobody stores: the send waits in its shard queue
    frame = {"type": "send", "room": "behind", "client_id": "again", "body": "once"}
    async with raw_ws(gateway.ws_url, stack.token("alice")) as ws:
        await ws.send(frame)
        for _ in range(3):
            error = await ws.recv()
            assert (error["code"], error["client_id"]) == ("timeout", "again")
            await ws.send(frame)  # joins the send on its way: times out again, no copy
        assert gateway.metric("burrow_gateway_resends_joined_total") == 3
        stack.add_sequencer()
        ack = await ws.recv_until("ack")
        assert (ack["client_id"], ack["seq"]) == ("again", 1)
        await ws.send({"type": "send", "room": "behind", "client_id": "next", "body": "2"})
        between = []
        while (got := await ws.recv())["type"] != "ack" or got["client_id"] != "next":
            between.append(got)
        # copies would have been acked before "next": same room, same shard, in order
        assert [f for f in between if f["type"] == "ack"] == [], between
        assert got["seq"] == 2
    assert [d["seq"] for d in stored(stack, "behind")] == [1, 2]


async def test_a_gateway_binds_a_room_only_while_it_has_subscribers(stack: Stack) -> None:
    stack.room("bound", "alice")

    def bindings() -> list[str]:
        found = stack.vhost.api("GET", "/api/exchanges/{vhost}/chat.fanout/bindings/source")
        assert isinstance(found, list)
        return [b["routing_key"] for b in found if b["destination"].startswith("gateway.")]

    def room_bindings() -> list[str]:
        return [key for key in bindings() if key != MEMBER_EVENTS]

    # every room's member events, always (G6 for connections without a subscription)
    assert bindings() == [MEMBER_EVENTS]
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as one, \
            raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as two:
        for ws in (one, two):
            await ws.send({"type": "subscribe", "room": "bound"})
            assert (await ws.recv())["type"] == "subscribed"
        assert room_bindings() == ["room.bound.*"]
        await one.send({"type": "unsubscribe", "room": "bound"})
        assert (await one.recv())["type"] == "unsubscribed"
        assert room_bindings() == ["room.bound.*"]  # the other subscriber still needs it
    # both connections closed: the last subscriber left
    assert eventually(lambda: room_bindings() == [])


@pytest.mark.parametrize("since", [None, 0, 3, 5])
async def test_subscribing_again_on_one_socket_replaces_the_subscription(
        shared_stack: Stack, since: int | None) -> None:
    """A second subscribe to the same room on the same socket (a client that lost track,
    or resumes from an older seq) gives one stream: the replay it asks for, then each
    live message once, never a frame of the old subscription beside the new one."""
    room = f"again-{since}"  # the module's stack: a room per case
    shared_stack.room(room, "alice", "bob")
    alice = await shared_stack.client("alice")
    for n in range(5):
        await asyncio.wait_for(alice.send(room, f"before-{n}"), T)
    async with raw_ws(shared_stack.gateways[0].ws_url, shared_stack.token("bob")) as bob:
        await bob.send({"type": "subscribe", "room": room, "since": 0})
        assert (await bob.recv())["type"] == "subscribed"
        assert [(await bob.recv())["seq"] for _ in range(5)] == [1, 2, 3, 4, 5]
        again = {"type": "subscribe", "room": room}
        if since is not None:
            again["since"] = since
        await bob.send(again)
        assert await bob.recv() == {"type": "subscribed", "room": room,
                                    "since": 5 if since is None else since}
        replayed = list(range((5 if since is None else since) + 1, 6))
        assert [(await bob.recv())["seq"] for _ in replayed] == replayed
        await asyncio.wait_for(asyncio.gather(
            *(alice.send(room, f"after-{n}") for n in range(5))), T)
        assert [(await bob.recv())["seq"] for _ in range(5)] == [6, 7, 8, 9, 10]
        await bob.send({"type": "ping", "id": "end"})
        assert await bob.recv() == {"type": "pong", "id": "end"}  # no second copy queued
