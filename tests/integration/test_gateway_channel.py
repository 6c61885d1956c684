"""The gateway's broker channel survives clients that leave in the middle of a subscribe.

aiormq closes a channel when one of its RPCs (a queue bind) is cancelled mid-flight, and
Sanic cancels a connection's handler when its client goes. A gateway whose subscribe
awaited the bind in the client's own task lost its channel to a client that left at the
wrong moment, and with it its queue: from then on nothing reached its clients (seen in
the benchmark with 10,000 clients, whose binds timed out).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.conftest import Stack, raw_ws

pytestmark = pytest.mark.integration
T = 30
LEAVERS = 40


async def subscribe_and_vanish(stack: Stack, room: str, user: str, delay: float) -> None:
    async with raw_ws(stack.gateways[0].ws_url, stack.token(user)) as raw:
        await raw.ws.send(json.dumps({"type": "subscribe", "room": room, "since": 0}))
        await asyncio.sleep(delay)
        raw.ws.transport.abort()  # gone, mid-subscribe or just after


async def test_clients_leaving_mid_subscribe_do_not_cut_the_gateway_off(stack: Stack) -> None:
    for i in range(LEAVERS):  # a user each: one user's 40 sockets would pass its cap
        stack.room(f"leave{i}", f"dan{i}")
    stack.room("main", "alice", "bob")
    # Leaving at every moment of the subscribe: during the membership check, the bind,
    # the replay; some of the binds are cancelled mid-flight.
    await asyncio.gather(*(subscribe_and_vanish(stack, f"leave{i}", f"dan{i}", i * 0.0005)
                           for i in range(LEAVERS)))
    bob = await stack.client("bob", [0])
    alice = await stack.client("alice", [0])
    assert await asyncio.wait_for(bob.subscribe("main"), T) == 0
    ack = await asyncio.wait_for(alice.send("main", "still here"), T)
    got = await asyncio.wait_for(bob.messages.get(), T)
    assert (got.seq, got.body) == (ack.seq, "still here")


async def test_a_bind_that_times_out_completes_and_the_channel_survives(stack: Stack) -> None:
    """A gateway that waits for binds at most 1 ms: subscribes are refused with
    ``unavailable`` while the bind runs on; a retry finds the room bound, and messages
    flow. (Cancelling the bind at the timeout closed the channel for good.)"""
    impatient = stack.add_gateway(BURROW_SEND_TIMEOUT="0.001")
    stack.room("main", "alice", "bob")
    alice = await stack.client("alice", [0])
    async with raw_ws(impatient.ws_url, stack.token("bob")) as bob:
        for _ in range(50):
            await bob.send({"type": "subscribe", "room": "main", "since": 0})
            answer = await bob.recv(T)
            if answer["type"] == "subscribed":
                break
            assert (answer["type"], answer["code"]) == ("error", "unavailable"), answer
        else:
            pytest.fail("never subscribed: the gateway lost its channel")
        ack = await asyncio.wait_for(alice.send("main", "through the impatient one"), T)
        got = await bob.recv_until("message", T)
        assert (got["seq"], got["body"]) == (ack.seq, "through the impatient one")
