"""A gateway replaces its sends channel when the broker keeps nacking one room's sends.

After a RabbitMQ node loss, 3.10 can leave a gateway's reopened channel nacking every
publish to one shard queue for good (the cluster fault bench found it; docs/deploy.md,
"What a node failure looks like to Burrow"). The same refusal is made here on one node,
deterministically: a classic queue with ``x-max-length: 0`` and ``reject-publish`` is bound
to ``chat.ingress`` with the room's routing key (made by the admin through the management
API), so every send of the room is routed to it too and the broker nacks it (a publish
that one of its queues rejects is nacked; the shard queue still gets it). A policy of
``max-length: 0`` on the quorum shard queues does not do it: 3.10's quorum
``reject-publish`` is cooperative and the sequencer empties the queue faster than it
fills. After 3 nacks in a row for the room the gateway opens a new sends channel
(``burrow_gateway_publisher_renewals_total``); once the queue is gone, the same sends
(same ``client_id``) are acked, each stored once, and the gateway's own queue (another
channel) still delivers.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest

from burrow.core import ids
from burrow.core.nack_streak import RENEW_AFTER
from tests.integration.conftest import Raw, Stack, raw_ws

pytestmark = pytest.mark.integration

T = 15.0
RENEWALS = "burrow_gateway_publisher_renewals_total"
NACKER = "test-nack-every-send"


async def answer(ws: Raw, client_id: str, room: str,
                 delivered: list[str]) -> dict[str, Any]:
    """Send *client_id* into *room*; its ack or error. The client ids of the message
    frames that arrive meanwhile are added to *delivered*."""
    await ws.send({"type": "send", "room": room, "client_id": client_id, "body": client_id})
    while (frame := await ws.recv(T))["type"] not in ("ack", "error"):
        if frame["type"] == "message":
            delivered.append(frame["client_id"])
    return frame


async def test_nacked_sends_renew_the_publisher_and_go_through_after(stack: Stack) -> None:
    stack.room("nacked", "alice")
    gateway = stack.gateways[0]
    async with raw_ws(gateway.ws_url, stack.token("alice")) as ws:
        await ws.send({"type": "subscribe", "room": "nacked"})
        await ws.recv_until("subscribed", T)
        delivered: list[str] = []
        assert (await answer(ws, "c0", "nacked", delivered))["type"] == "ack"
        assert gateway.metric(RENEWALS) == 0
        stack.vhost.api("PUT", f"/api/queues/{{vhost}}/{NACKER}", {
            "durable": False, "auto_delete": False,
            "arguments": {"x-queue-type": "classic", "x-max-length": 0,
                          "x-overflow": "reject-publish"}})
        stack.vhost.api("POST", f"/api/bindings/{{vhost}}/e/chat.ingress/q/{NACKER}",
                        {"routing_key": ids.message_key("nacked")})
        try:
            refused: list[str] = []
            for index in range(1, 10):
                client_id = f"c{index}"
                frame = await answer(ws, client_id, "nacked", delivered)
                if frame["type"] == "error":
                    assert (frame["code"], frame["client_id"]) == ("unavailable", client_id)
                    refused.append(client_id)
                if len(refused) >= RENEW_AFTER and gateway.metric(RENEWALS) >= 1:
                    break
            else:
                pytest.fail(f"no renewal after {len(refused)} refused sends\n"
                            f"{gateway.log_tail()}")
            assert len(refused) == RENEW_AFTER, refused  # not before a streak of 3
            assert "publisher channel for chat.ingress renewed" in gateway.log.read_text()
        finally:
            stack.vhost.api("DELETE", f"/api/queues/{{vhost}}/{NACKER}")
        # the clients resend the refused ones with the same client_id: acked, stored once
        for client_id in refused:
            for _ in range(3):
                frame = await answer(ws, client_id, "nacked", delivered)
                if frame["type"] == "ack":
                    break
                assert frame["code"] == "unavailable", frame
            else:
                pytest.fail(f"{client_id} never acked after the queue was removed")
        assert (await answer(ws, "last", "nacked", delivered))["type"] == "ack"
        # the consuming channel was not touched: the room's messages still arrive
        while "last" not in delivered:
            if (frame := await ws.recv(T))["type"] == "message":
                delivered.append(frame["client_id"])
        assert delivered == ["c0", *refused, "last"], delivered
    room = urllib.parse.quote("nacked")
    status, history = stack.http("GET", f"/v1/rooms/{room}/messages?limit=100", "alice")
    assert status == 200, history
    stored = [m["client_id"] for m in history["messages"]]
    assert sorted(stored) == sorted(["c0", *refused, "last"]), stored
    assert [m["seq"] for m in history["messages"]] == list(range(1, len(stored) + 1))
