"""A backend service using Burrow through its queues, with plain aio-pika.

Posts a system message to a room, a push to a user, and an email, exactly as
docs/queues.md specifies. It imports nothing from Burrow: any AMQP 0-9-1 client can do
the same.

    BURROW_BACKEND_URL=amqp://burrow-backend:PASSWORD@127.0.0.1:5672/burrow \\
        python examples/backend_jobs.py ROOM USER EMAIL
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import aio_pika


async def main(room: str, user: str, email: str) -> None:
    connection = await aio_pika.connect(os.environ["BURROW_BACKEND_URL"])
    async with connection:
        channel = await connection.channel()  # publisher confirms are on by default
        ingress = await channel.get_exchange("chat.ingress", ensure=False)
        jobs = await channel.get_exchange("burrow.jobs", ensure=False)

        def message(body: dict[str, object]) -> aio_pika.Message:
            return aio_pika.Message(json.dumps(body).encode(), message_id=uuid.uuid4().hex,
                                    content_type="application/json",
                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

        await ingress.publish(message({
            "room": room, "sender": "system:example", "client_id": "welcome-1",
            "body": "The example backend says hello"}), routing_key=f"room.{room}.msg",
            mandatory=True)
        await jobs.publish(message({
            "kind": "direct", "user": user, "title": "Hello", "body": "from the backend",
            "id": "example-push-1"}), routing_key="push.due")
        await jobs.publish(message({
            "kind": "email", "id": "example-email-1", "to": email, "subject": "Hello",
            "text": "Sent by examples/backend_jobs.py"}), routing_key="email.due")
        print("published: a system message, a push and an email")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
