"""Property: whatever the interleaving of sends, dropped connections and resumes across
two gateways, every client ends with the room's exact sequence, once and in order."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from burrow.client import ChatClient
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
T = 60
USERS = ("ann", "ben", "cy")

steps = st.lists(st.tuples(st.sampled_from(["send", "send", "send", "drop", "burst"]),
                           st.sampled_from(USERS)), min_size=3, max_size=20)


@pytest.fixture
async def two_gateways(stack: Stack) -> Stack:
    stack.add_gateway()
    return stack


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
async def test_every_client_gets_the_exact_sequence(two_gateways: Stack,
                                                    plan: list[tuple[str, str]]) -> None:
    stack = two_gateways
    room = f"p{uuid.uuid4().hex[:10]}"
    stack.room(room, *USERS)
    clients: dict[str, ChatClient] = {}
    for n, user in enumerate(USERS):  # spread over both gateways, reconnecting round-robin
        order = [n % 2, (n + 1) % 2]
        clients[user] = await stack.client(user, order, retry_delay=0.05)
        await asyncio.wait_for(clients[user].subscribe(room, since=0), T)
    sends: list[asyncio.Future[object]] = []
    for action, user in plan:
        client = clients[user]
        if action == "drop":
            client.drop()
        elif action == "burst":
            sends += [asyncio.ensure_future(client.send(room, f"{user}-b{i}")) for i in range(5)]
        else:
            sends.append(asyncio.ensure_future(client.send(room, f"{user}-{len(sends)}")))
            await asyncio.sleep(0)  # let it reach the socket before the next step
    acks = await asyncio.wait_for(asyncio.gather(*sends), T)
    total = len(acks)
    assert sorted(a.seq for a in acks) == list(range(1, total + 1))  # type: ignore[attr-defined]
    for user, client in clients.items():
        got = [await asyncio.wait_for(client.messages.get(), T) for _ in range(total)]
        assert [m.seq for m in got] == list(range(1, total + 1)), user
        assert not client.violations, (user, client.violations)
        assert client.messages.empty()
    for client in clients.values():
        await client.close()
        stack.clients.remove(client)
