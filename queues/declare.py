"""Declare a :class:`~queues.topology.Topology` on a broker through aio-pika.

Declaring is idempotent: RabbitMQ accepts a redeclaration with the same arguments, and a
different one closes the channel with PRECONDITION_FAILED (406), which is how a drifted
broker is noticed. On a robust channel aio-pika records every declaration and binding and
replays them after a reconnect (LIBRARY-NOTES.md, aio-pika), so calling this once per
channel is enough.

A worker's part (:func:`queues.topology.part`) also expects what other workers declare.
Those are checked passively (no permission needed, nothing created): if one is missing
the broker closes the channel with NOT_FOUND, and the caller (the broker link) retries
until the worker that owns it has started, after this worker's own queues are there.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aio_pika.exceptions import ChannelNotFoundEntity

from queues.topology import Binding, Topology

log = logging.getLogger(__name__)


async def declare(channel: AbstractChannel, topo: Topology) -> None:
    """Declare every exchange, queue and binding of *topo* on *channel*, and check that
    what it expects exists.

    Raises ``aio_pika.exceptions.ChannelPreconditionFailed`` when the broker holds an
    entity of the same name with other arguments, and ``ChannelNotFoundEntity`` while an
    expected exchange or queue does not exist yet.
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
    # Bindings from our own exchanges first: our queues get their jobs while we wait.
    own = [b for b in topo.bindings if b.source in exchanges]
    await _bind(own, exchanges, queues)
    try:
        for name in topo.expected_exchanges:
            exchanges[name] = await channel.get_exchange(name, ensure=True)
        for name in topo.expected_queues:
            await channel.get_queue(name, ensure=True)
    except ChannelNotFoundEntity as exc:
        log.warning("waiting for what another worker declares: %s", exc)
        raise
    await _bind([b for b in topo.bindings if b not in own], exchanges, queues)


async def _bind(bindings: list[Binding], exchanges: dict[str, AbstractExchange],
                queues: dict[str, AbstractQueue]) -> None:
    for b in bindings:
        source = exchanges[b.source]
        if b.destination_type == "exchange":
            await exchanges[b.destination].bind(source, routing_key=b.routing_key)
        else:
            await queues[b.destination].bind(source, routing_key=b.routing_key)
