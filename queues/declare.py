"""Declare a :class:`~queues.topology.Topology` on a broker through aio-pika.

Declaring is idempotent: RabbitMQ accepts a redeclaration with the same arguments, and a
different one closes the channel with PRECONDITION_FAILED (406), which is how a drifted
broker is noticed. On a robust channel aio-pika records every declaration and binding and
replays them after a reconnect (LIBRARY-NOTES.md, aio-pika), so calling this once per
channel is enough.
"""

from __future__ import annotations

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from queues.topology import Topology


async def declare(channel: AbstractChannel, topo: Topology) -> None:
    """Declare every exchange, queue and binding of *topo* on *channel*.

    Raises ``aio_pika.exceptions.ChannelPreconditionFailed`` when the broker holds an
    entity of the same name with other arguments.
    """
    exchanges: dict[str, AbstractExchange] = {}
    for e in topo.exchanges:
        exchanges[e.name] = await channel.declare_exchange(
            e.name, e.type, durable=True, internal=e.internal,
            arguments=dict(e.arguments) or None)
    queues: dict[str, AbstractQueue] = {}
    for q in topo.queues:
        queues[q.name] = await channel.declare_queue(
            q.name, durable=True, arguments=dict(q.arguments))
    for b in topo.bindings:
        source = exchanges[b.source]
        if b.destination_type == "exchange":
            await exchanges[b.destination].bind(source, routing_key=b.routing_key)
        else:
            await queues[b.destination].bind(source, routing_key=b.routing_key)
