"""G6 against a removed member who keeps the socket open: on every connection of theirs,
on every gateway, subscribed or not, and after a broker outage that hid the removal.

Each test here passed on nothing before the revocation rework: a connection that had
sent (or typed, or unsubscribed) kept the room's membership cached, and the removal
event reached only the gateways with a subscriber of the room.
"""

from __future__ import annotations

import pytest
from pymongo import MongoClient

from burrow.devstack import rabbitmq
from tests.integration.conftest import Raw, Stack, raw_ws

pytestmark = pytest.mark.integration
T = 30


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): each
    test has rooms of its own; the gateways it adds stop after it."""
    return shared_stack


async def sent(ws: Raw, room: str, client_id: str) -> dict[str, object]:
    await ws.send({"type": "send", "room": room, "client_id": client_id, "body": "x"})
    return await ws.recv_until_any(("ack", "error"), T)


def stored(stack: Stack, room: str) -> list[str]:
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        db = client.get_default_database()
        return [d["client_id"] for d in db.messages.find({"room": room}).sort("seq", 1)]


async def test_a_removed_member_who_was_not_subscribed_can_neither_send_nor_read(
        stack: Stack) -> None:
    """Bob sent (membership checked and cached), unsubscribed, and typed on two
    gateways; after his removal no connection of his sends, types or subscribes."""
    stack.add_gateway()
    stack.room("team", "alice", "bob")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as here, \
            raw_ws(stack.gateways[1].ws_url, stack.token("bob")) as there:
        assert (await sent(here, "team", "before-0"))["type"] == "ack"
        assert (await sent(there, "team", "before-1"))["type"] == "ack"
        await there.send({"type": "subscribe", "room": "team", "since": 2})
        await there.recv_until("subscribed", T)
        await there.send({"type": "unsubscribe", "room": "team"})
        await there.recv_until("unsubscribed", T)
        await here.send({"type": "typing", "room": "team"})

        assert stack.http("DELETE", "/v1/rooms/team/members/bob", "alice")[0] == 204
        # A removal takes effect on the next frame of every connection: the member event
        # reaches every gateway, whatever it has subscribed (G6).
        for ws, name in ((here, "after-0"), (there, "after-1")):
            refused = await sent(ws, "team", name)
            assert (refused["type"], refused["code"]) == ("error", "forbidden"), refused
            await ws.send({"type": "subscribe", "room": "team", "since": 0})
            refused = await ws.recv_until_any(("subscribed", "error"), T)
            assert (refused["type"], refused["code"]) == ("error", "forbidden"), refused
            await ws.send({"type": "typing", "room": "team"})
            assert (await ws.recv_until("error", T))["code"] == "forbidden"
    assert stored(stack, "team") == ["before-0", "before-1"]


async def test_a_member_added_again_gets_the_room_back(stack: Stack) -> None:
    stack.room("club", "alice", "bob")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob:
        assert (await sent(bob, "club", "one"))["type"] == "ack"
        assert stack.http("DELETE", "/v1/rooms/club/members/bob", "alice")[0] == 204
        assert (await sent(bob, "club", "two"))["code"] == "forbidden"
        assert stack.http("PUT", "/v1/rooms/club/members/bob", "alice")[0] in (200, 201)
        assert (await sent(bob, "club", "three"))["type"] == "ack"
    assert stored(stack, "club") == ["one", "three"]


async def test_removals_a_broker_outage_hid_are_found_or_retried_not_lost(
        stack: Stack, broker: rabbitmq.RabbitNode) -> None:
    """One outage, the two removals it can hide (a test each before: every outage is a
    restart of the session's broker, ~8 s; the module's sequencer and gateway ride it out):

    - den: Bob is removed while the gateway is cut off from the broker (here: straight in
      the database, as an operator would, so no member event exists at all). When the
      broker is back the gateway checks the memberships it relied on again: Bob's
      subscription ends with ``removed`` and his cached membership is gone.
    - hall: with the broker away the removal is stored but cannot be announced: 503 (not
      a 500), and the retry, which finds nothing left to remove, still announces it.

    The node is killed, not stopped: the gateway sees an outage either way, and RabbitMQ
    3.10's clean stop waits 5 s for its management agent (tests/conftest.py ``broker``);
    a clean stop's outage is tests/integration/test_broker_outage.py's."""
    stack.room("den", "alice", "bob")
    stack.room("hall", "alice", "bob")
    gateway = stack.gateways[0]
    async with raw_ws(gateway.ws_url, stack.token("bob")) as bob:
        assert (await sent(bob, "den", "one"))["type"] == "ack"
        await bob.send({"type": "subscribe", "room": "den", "since": 1})
        await bob.recv_until("subscribed", T)
        assert (await sent(bob, "hall", "one"))["type"] == "ack"
        broker.stop(timeout=0)
        try:
            with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
                client.get_default_database().memberships.delete_one(
                    {"room": "den", "user": "bob"})
            status, body = stack.http("DELETE", "/v1/rooms/hall/members/bob", "alice")
            assert (status, body["error"]["code"]) == (503, "unavailable")
        finally:
            broker.start()
            broker.wait_ready()
        gateway.wait("up", "up")
        assert await bob.recv_until("unsubscribed", T) == {
            "type": "unsubscribed", "room": "den", "reason": "removed"}
        assert (await sent(bob, "den", "two"))["code"] == "forbidden"
        for _ in range(10):  # channels are restored a moment after the node is up
            status, _ = stack.http("DELETE", "/v1/rooms/hall/members/bob", "alice")
            if status != 503:
                break
        assert status == 404  # already removed; the announcement went out again
        assert (await sent(bob, "hall", "two"))["code"] == "forbidden"
    assert stored(stack, "den") == ["one"]
    assert stored(stack, "hall") == ["one"]
    # the module's sequencer is back too, for the tests after this one
    stack.sequencers[0].wait("up", "up")
