"""A process whose vhost lacks ``burrow.events`` (a broker loaded without Burrow's
definitions, or the exchange deleted by hand) loses its events, counted, and nothing
else: publishes to a missing exchange close their channel, and publishes in flight on a
closed channel make the broker close the whole connection (504), every channel of the
process with it. The publisher checks the exchange before it publishes on a channel."""

from __future__ import annotations

import asyncio

import pytest

from burrow.core import events
from burrow.runtime.broker import BrokerLink
from queues.events import EventPublisher
from tests.conftest import Vhost

pytestmark = pytest.mark.integration


async def test_a_missing_events_exchange_never_closes_the_connection(vhost: Vhost) -> None:
    link = BrokerLink(vhost.url("burrow-gateway"), "events-missing", 0.5)
    link.start()
    publisher = EventPublisher(link, events.Selection.parse("#"), timeout=5.0)
    try:
        async with asyncio.timeout(30):
            connection = await link.opened()
        batch = [events.presence(f"u{n}", True, 1, 0) for n in range(5)]
        # Two rounds of concurrent publishes, as presence settles and HTTP answers make
        # them: every one fails, none raises.
        for _ in range(2):
            assert await asyncio.gather(*(publisher.publish([e]) for e in batch)) == [0] * 5
        assert link.is_up and not connection.is_closed
        # the process's own channel still works: the connection survived
        assert link.channel is not None
        assert (await link.channel.get_exchange("amq.direct")).name == "amq.direct"
    finally:
        await publisher.close()
        await link.close()
