"""A backend moderation service answering Burrow's pre-publish hook, with plain aio-pika.

Burrow's sequencer, with ``BURROW_MODERATION_HOOK=on`` (or ``rooms``), asks before it
stores a batch of messages: one request on ``moderation.hook``, the answer published to
the exchange ``moderation.answer`` with the request's ``reply_to`` as routing key and its
``correlation_id`` (docs/moderation.md, "Pre-publish hook"). This service's rules, for
the example: a message containing "spam" is rejected (the sender sees the reason), the
word "darn" is replaced by "d*rn", anything else is allowed. It imports nothing from
Burrow: any AMQP 0-9-1 client can do the same. Prints one line per decision; with a
COUNT, stops after that many requests, else runs until Ctrl-C.

    BURROW_BACKEND_URL=amqp://burrow-backend:PASSWORD@127.0.0.1:5672/burrow \\
        python examples/moderation_hook.py [COUNT]
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

DARN = re.compile(r"\bdarn\b", re.IGNORECASE)


def decide(message: dict[str, Any]) -> dict[str, Any]:
    """One decision: ``allow``, ``reject`` with a reason, or ``replace`` with a body."""
    body = str(message.get("body", ""))
    if "spam" in body.lower():
        return {"ref": message["ref"], "decision": "reject",
                "reason": "advertising is not allowed here"}
    if DARN.search(body):
        return {"ref": message["ref"], "decision": "replace", "body": DARN.sub("d*rn", body)}
    return {"ref": message["ref"], "decision": "allow"}


async def main(count: int | None) -> None:
    connection = await aio_pika.connect(os.environ["BURROW_BACKEND_URL"])
    answered = 0
    done = asyncio.Event()
    async with connection:
        channel = await connection.channel()  # publisher confirms are on by default
        await channel.set_qos(prefetch_count=10)
        requests = await channel.get_queue("moderation.hook", ensure=False)
        answers = await channel.get_exchange("moderation.answer", ensure=False)

        async def handle(message: AbstractIncomingMessage) -> None:
            nonlocal answered
            # Acked once answered. A request the sequencer stopped waiting for (its
            # timeout) expires in the queue or is answered in vain: the answer is dropped.
            async with message.process(requeue=False):
                request = json.loads(message.body)
                if request.get("schema") != "burrow.moderation/1" or not message.reply_to:
                    return  # another version, or nobody to answer
                decisions = [decide(m) for m in request["messages"]]
                for m, d in zip(request["messages"], decisions, strict=True):
                    print(f"{m['kind']} by {m['sender']} in {m['room']}: {d['decision']}",
                          flush=True)
                await answers.publish(
                    aio_pika.Message(json.dumps({"decisions": decisions}).encode(),
                                     content_type="application/json",
                                     correlation_id=message.correlation_id),
                    routing_key=message.reply_to, mandatory=False)
                answered += 1
                if count is not None and answered >= count:
                    done.set()

        await requests.consume(handle)
        print("answering moderation.hook", flush=True)
        await done.wait()


if __name__ == "__main__":
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and not sys.argv[1].isdigit()):
        sys.exit(__doc__)
    try:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) == 2 else None))
    except KeyboardInterrupt:
        pass
