"""Connection caps (issue 15): one user, or one client address, cannot hold more open
connections on a gateway than its caps, whatever the transport; a closed one frees its
place. Refused before the handshake with 429 (``too_many_connections``)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import until
from tests.integration.conftest import Stack, raw_ws

pytestmark = pytest.mark.integration


async def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    return refused.value.response.status_code


async def test_a_user_holds_at_most_the_cap_on_every_transport(stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_MAX_CONNECTIONS_USER="2")
    stack.room("lobby", "alice")
    alice = f"{gateway.ws_url}?access_token={stack.token('alice')}"
    async with AsyncExitStack() as held:
        first = await held.enter_async_context(raw_ws(gateway.ws_url, stack.token("alice")))
        await held.enter_async_context(raw_ws(gateway.ws_url, stack.token("alice")))
        assert await refused_status(alice) == 429
        async with httpx.AsyncClient(timeout=30) as http:
            headers = {"Authorization": f"Bearer {stack.token('alice')}"}
            sse = await http.get(gateway.url("/v1/sse?rooms=lobby"), headers=headers)
            assert sse.status_code == 429
            assert sse.json()["error"]["code"] == "too_many_connections"
            poll = await http.get(gateway.url("/v1/poll?rooms=lobby&timeout=0"),
                                  headers=headers)
            assert poll.status_code == 429
        # someone else is not affected
        async with raw_ws(gateway.ws_url, stack.token("bob")) as bob:
            await bob.send({"type": "ping", "id": "b"})
            assert (await bob.recv())["type"] == "pong"
        # a closed connection frees its place
        await first.ws.close()

        async def admitted() -> bool:
            try:
                async with connect(alice) as ws:
                    await ws.send('{"type": "ping", "id": "again"}')
                    return "pong" in str(await ws.recv())
            except InvalidStatus:
                return False
        await until(admitted)


async def test_one_address_holds_at_most_its_cap(stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_MAX_CONNECTIONS_IP="3")
    async with AsyncExitStack() as held:
        for user in ("u1", "u2", "u3"):
            await held.enter_async_context(raw_ws(gateway.ws_url, stack.token(user)))
        assert await refused_status(
            f"{gateway.ws_url}?access_token={stack.token('u4')}") == 429
