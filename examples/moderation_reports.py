"""A backend moderation service reading Burrow's message reports, with plain aio-pika.

Consumes ``moderation.reports`` as docs/queues.md ("Receive message reports")
specifies: one JSON report per message, the report id as ``message_id``, delivered at
least once (so duplicates are skipped by id). It imports nothing from Burrow: any AMQP
0-9-1 client can do the same. Prints one line per new report; with a COUNT, stops after
that many new reports, else runs until Ctrl-C.

    BURROW_BACKEND_URL=amqp://burrow-backend:PASSWORD@127.0.0.1:5672/burrow \\
        python examples/moderation_reports.py [COUNT]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


async def main(count: int | None) -> None:
    connection = await aio_pika.connect(os.environ["BURROW_BACKEND_URL"])
    seen: set[str] = set()  # a real service keeps this in its own database
    done = asyncio.Event()
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.get_queue("moderation.reports", ensure=False)

        async def handle(message: AbstractIncomingMessage) -> None:
            # Ack only once handled: a crash here hands the report to the next consumer;
            # a report that keeps failing ends in moderation.dead after 10 deliveries.
            async with message.process(requeue=True):
                report = json.loads(message.body)
                if report.get("schema") != "burrow.report/1" or message.message_id in seen:
                    return  # another shape, or a duplicate (at least once)
                seen.add(str(message.message_id))
                snapshot = report["snapshot"]
                print(f"report {report['id']}: {report['reporter']} reported "
                      f"{snapshot['sender']}'s message #{snapshot['seq']} in "
                      f"{report['room']} as {report['reason']}: {snapshot['body']!r}",
                      flush=True)
                if count is not None and len(seen) >= count:
                    done.set()

        await queue.consume(handle)
        await done.wait()


if __name__ == "__main__":
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and not sys.argv[1].isdigit()):
        sys.exit(__doc__)
    try:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) == 2 else None))
    except KeyboardInterrupt:
        pass
