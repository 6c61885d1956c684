"""The chat path end to end: a room, two members, a send, its ack, its delivery."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


async def test_send_is_acked_stored_and_delivered(stack: Stack) -> None:
    stack.room("lobby", "alice", "bob")
    alice = await stack.client("alice")
    bob = await stack.client("bob")
    assert await bob.subscribe("lobby") == 0
    ack = await asyncio.wait_for(alice.send("lobby", "hello bob", client_id="c1"), 30)
    assert (ack.room, ack.seq, ack.client_id) == ("lobby", 1, "c1")
    got = await asyncio.wait_for(bob.messages.get(), 30)
    assert (got.room, got.seq, got.sender, got.body, got.id) == ("lobby", 1, "alice",
                                                                 "hello bob", ack.id)
    status, body = stack.http("GET", "/v1/rooms/lobby/messages", "bob")
    assert status == 200
    assert [(m["seq"], m["body"]) for m in body["messages"]] == [(1, "hello bob")]
