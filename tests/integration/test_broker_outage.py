"""A client connected while the broker is away gets retryable errors, not a closed socket."""

from __future__ import annotations

import asyncio

import pytest

from burrow.devstack import rabbitmq
from tests.conftest import until
from tests.integration.conftest import Stack, raw_ws

pytestmark = pytest.mark.integration
T = 30


async def test_sends_and_subscribes_during_a_broker_outage_are_refused_then_work(
        stack: Stack, broker: rabbitmq.RabbitNode) -> None:
    """While the broker is down a send gets ``unavailable`` (or ``timeout``) for its
    client_id and a subscribe gets ``unavailable``; the socket stays open. Once the broker
    is back, the same send goes through and is stored once, and reaches the subscription
    made before the outage on the same socket; and the Python client's subscribe, refused
    meanwhile, is retried by the client until it is served."""
    stack.room("lobby", "alice")
    stack.room("hall", "alice")
    stack.room("yard", "alice")
    # A gateway that gives up on the broker after 1 s, not 5 (BURROW_SEND_TIMEOUT: how
    # long a send or subscribe waits for the broker link): three refusals below wait
    # for it, 12 s of the test's time; the refusals are the same.
    gateway = stack.add_gateway(BURROW_SEND_TIMEOUT="1")
    client = await stack.client("alice", gateways=[1])
    async with raw_ws(gateway.ws_url, stack.token("alice")) as ws:
        await ws.send({"type": "subscribe", "room": "lobby"})
        await ws.recv_until("subscribed")
        broker.stop()
        try:
            send = {"type": "send", "room": "lobby", "client_id": "c1", "body": "hi"}
            await ws.send(send)
            error = await ws.recv_until("error", T)
            assert error["code"] in ("unavailable", "timeout")
            assert (error["client_id"], error["room"]) == ("c1", "lobby")
            await ws.send({"type": "subscribe", "room": "hall"})
            error = await ws.recv_until("error", T)
            assert (error["code"], error["room"]) == ("unavailable", "hall")
            assert ws.ws.close_code is None
            yard = asyncio.create_task(client.subscribe("yard", since=0))
            await until(lambda: any(e.get("code") == "unavailable" and e.get("room") == "yard"
                                    for e in client.events))
        finally:
            broker.start()
            broker.wait_ready()
        gateway.wait("up", "up")
        # Right after the restart the sequencer's and the gateway's channels are still
        # being restored: an answer may be lost and the send time out. The client does
        # what the protocol says: send again with the same client_id until acked.
        delivered = []  # the lobby's message frames on this socket, which stayed open
        for _ in range(10):
            await ws.send(send)
            while (answer := await ws.recv(T))["type"] not in ("ack", "error"):
                delivered.append(answer)
            if answer["type"] == "ack":
                break
            assert answer["code"] in ("unavailable", "timeout"), answer
        else:
            pytest.fail("never acked after the broker came back")
        assert (answer["client_id"], answer["seq"]) == ("c1", 1)
        # the subscription made before the outage still delivers: the gateway's queue and
        # its binding came back with the broker
        while not any(f["type"] == "message" for f in delivered):
            delivered.append(await ws.recv(T))
        message = next(f for f in delivered if f["type"] == "message")
        assert (message["room"], message["seq"], message["client_id"]) == ("lobby", 1, "c1")
        await ws.send({"type": "subscribe", "room": "hall"})
        assert (await ws.recv_until("subscribed", T))["room"] == "hall"
        assert await asyncio.wait_for(yard, T) == 0
    status, history = stack.http("GET", "/v1/rooms/lobby/messages", "alice")
    assert status == 200
    assert [(m["seq"], m["client_id"]) for m in history["messages"]] == [(1, "c1")]
