"""``notify.messages`` read in batches, against hostile input: a flood of malformed,
oversized, deeply nested, invalid-UTF-8 and wrongly typed jobs mixed with real stored
messages. Each bad job is parked alone in ``notify.dead`` with its reason; the good
messages of the same batches still schedule their push; the notifier survives.
"""

from __future__ import annotations

from typing import Any

import aio_pika
import orjson
import pytest

from tests.conftest import until
from tests.fakes.apns import device_token
from tests.integration import test_push_jobs
from tests.integration.conftest import Stack
from tests.integration.test_mail_jobs import dead_letters, scrape
from tests.integration.test_push_jobs import Providers, notifier, register

pytestmark = pytest.mark.integration

providers = test_push_jobs.providers  # the fixture: local FCM and APNs fakes

ROUNDS = 25  # each round publishes every kind of bad job once: 150 in all
BAD: dict[str, bytes] = {
    "not-json": b"\xff\xfe not json",
    "nested": b"[" * 5000 + b"]" * 5000,
    "array": orjson.dumps([1, 2, 3]),
    "bool-seq": orjson.dumps({"room": "general", "sender": "alice", "seq": True}),
    "huge-room": orjson.dumps({"room": "r" * 100_000, "sender": "alice", "seq": 1}),
    "bad-sender": orjson.dumps({"room": "general", "sender": "al\nice", "seq": 1}),
}
DEAD = ("burrow_jobs_total", (("outcome", "dead"), ("queue", "notify.messages")))


async def flood(stack: Stack) -> None:
    """Publish every bad job ROUNDS times (as the admin: nobody else but the sequencer,
    through chat.fanout, may put anything into notify.messages)."""
    connection = await aio_pika.connect(stack.vhost.url("burrow-admin"))
    async with connection:
        channel = await connection.channel()
        jobs = await channel.get_exchange("burrow.jobs", ensure=False)
        for round_ in range(ROUNDS):
            for name, body in BAD.items():
                await jobs.publish(aio_pika.Message(body, message_id=f"{name}-{round_}"),
                                   routing_key="notify.messages")


def body_of(request: Any) -> str:
    return str(request.payload["aps"]["alert"]["body"])


async def test_a_flood_of_bad_jobs_is_parked_and_real_messages_still_push(
        providers: Providers, stack: Stack) -> None:
    worker = notifier(stack, providers)
    stack.room("general", "alice", "bob")
    phone = device_token()
    register(stack, "bob", "apns", phone)
    alice = await stack.client("alice")

    await alice.send("general", "before the flood")
    await flood(stack)
    await alice.send("general", "after the flood")

    # bob is offline: pushed about both real messages (one push for the room when the
    # second arrived within the delay, else a second push for it)
    pushes = await providers.apns.wait_for_async(1, timeout=60)
    if body_of(pushes[-1]) == "alice: before the flood":
        pushes = await providers.apns.wait_for_async(2, timeout=60)
    assert body_of(pushes[-1]) in ("alice: after the flood (+1 more)",
                                   "alice: after the flood")
    assert {p.token for p in pushes} == {phone}

    await until(lambda: scrape(worker).get(DEAD, 0) == ROUNDS * len(BAD))
    assert scrape(worker)[DEAD] == ROUNDS * len(BAD)
    reasons = {m["properties"]["message_id"].rsplit("-", 1)[0]:
               m["properties"]["headers"]["x-burrow-error"]
               for m in dead_letters(stack, "notify.dead")}
    assert set(BAD) <= set(reasons)  # the first 50 of 150, published round-robin
    assert "not JSON" in reasons["not-json"] and "not JSON" in reasons["nested"]
    assert "not a JSON object" in reasons["array"]
    assert "seq" in reasons["bool-seq"] and "sender" in reasons["bad-sender"]
    assert "room" in reasons["huge-room"]
    assert len(reasons["huge-room"]) <= 1000  # the reason is bounded, not the body echoed
    assert worker.app.exited is None
