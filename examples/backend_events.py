"""A backend service listening to Burrow's backend events, with plain aio-pika.

Declares a queue of its own (``backend.events-example``: the backend broker user may
declare ``backend.*`` names), binds it to the ``burrow.events`` topic exchange with the
event types it wants (``user.offline``: switch that user to push, say; ``report.filed``:
wake a moderator), and prints one line per event, as docs/events.md specifies them:
JSON ``{"schema": "burrow.event/1", "id", "type", "at", ...}``, the id also the AMQP
``message_id``, delivered at least once (so duplicates are skipped by id). It imports
nothing from Burrow: any AMQP 0-9-1 client can do the same. With a COUNT, stops after
that many new events, else runs until Ctrl-C.

    BURROW_BACKEND_URL=amqp://burrow-backend:PASSWORD@127.0.0.1:5672/burrow \\
        python examples/backend_events.py [COUNT]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

QUEUE = "backend.events-example"
WANTED = ("user.offline", "report.filed")  # routing keys; patterns work too: "member.*"


def describe(event: dict[str, object]) -> str:
    if event["type"] == "user.offline":
        return f"{event['user']} went offline (presence version {event['version']})"
    if event["type"] == "report.filed":
        return (f"{event['reporter']} reported message {event['message']} in "
                f"{event['room']} as {event['reason']}")
    return json.dumps(event)


async def main(count: int | None) -> None:
    connection = await aio_pika.connect(os.environ["BURROW_BACKEND_URL"])
    seen: set[str] = set()  # a real service keeps this in its own database
    done = asyncio.Event()
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=50)
        # Durable quorum queue: events wait here while this service is down. Delete it
        # when the service is retired, or it keeps collecting events.
        queue = await channel.declare_queue(QUEUE, durable=True,
                                            arguments={"x-queue-type": "quorum"})
        exchange = await channel.get_exchange("burrow.events", ensure=False)
        for key in WANTED:
            await queue.bind(exchange, routing_key=key)

        async def handle(message: AbstractIncomingMessage) -> None:
            async with message.process(requeue=True):  # ack once handled
                event = json.loads(message.body)
                if event.get("schema") != "burrow.event/1" or message.message_id in seen:
                    return  # another shape, or a duplicate (at least once)
                seen.add(str(message.message_id))
                print(f"{event['type']}: {describe(event)}", flush=True)
                if count is not None and len(seen) >= count:
                    done.set()

        await queue.consume(handle)
        print(f"listening for {', '.join(WANTED)} on {QUEUE}", flush=True)
        await done.wait()


if __name__ == "__main__":
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and not sys.argv[1].isdigit()):
        sys.exit(__doc__)
    try:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) == 2 else None))
    except KeyboardInterrupt:
        pass
