"""RFC 6455 conformance the gateway owes every client, polite or not.

A text frame whose payload is not valid UTF-8 fails the connection with 1007 (RFC 6455
section 8.1); Sanic 25.12 dropped it silently and went on (gateway/ws_conformance.py).
A valid multi-byte character split across fragments is fine; a normal close (1000) is
answered with 1000, not with "going away", which tells Burrow's clients to reconnect.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): the
    tests' rooms are their own, and the gateways they add stop after them."""
    return shared_stack
T = 10

INVALID = {
    "lone continuation byte": [b"\x80"],
    "invalid start byte": [b"{\"type\": \"ping\", \"id\": \"\xff\"}"],
    "overlong encoding of '/'": [b"\xc0\xaf"],
    "UTF-16 surrogate": [b"\xed\xa0\x80"],
    "above U+10FFFF": [b"\xf4\x90\x80\x80"],
    "truncated at the end of the message": [b"ok \xe2\x82"],
    "valid first fragment, invalid continuation": [b"{\"type\": ", b"\xff\"ping\"}"],
}


def url(stack: Stack) -> str:
    return f"{stack.gateways[0].ws_url}?access_token={stack.token('alice')}"


async def pong(ws: ClientConnection, ping_id: str) -> dict[str, object]:
    await ws.send(orjson.dumps({"type": "ping", "id": ping_id}).decode())
    frame: dict[str, object] = orjson.loads(await asyncio.wait_for(ws.recv(), T))
    return frame


@pytest.mark.parametrize("fragments", list(INVALID.values()), ids=list(INVALID))
async def test_invalid_utf8_in_a_text_frame_fails_the_connection_with_1007(
        stack: Stack, fragments: list[bytes]) -> None:
    async with connect(url(stack)) as ws:
        assert (await pong(ws, "before"))["type"] == "pong"
        await ws.send(fragments if len(fragments) > 1 else fragments[0], text=True)
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), T)
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 1007
    # the gateway goes on serving everyone else
    async with connect(url(stack)) as other:
        assert (await pong(other, "after"))["type"] == "pong"


async def test_a_character_split_across_fragments_is_valid(stack: Stack) -> None:
    euro = "€".encode()  # three bytes, split between two fragments
    async with connect(url(stack)) as ws:
        await ws.send([b'{"type": "ping", "id": "' + euro[:1], euro[1:] + b'"}'], text=True)
        assert orjson.loads(await asyncio.wait_for(ws.recv(), T)) == {"type": "pong",
                                                                       "id": "€"}


async def test_a_normal_close_is_answered_with_a_normal_close(stack: Stack) -> None:
    async with connect(url(stack)) as ws:
        assert (await pong(ws, "p"))["type"] == "pong"
        await ws.close(1000, "bye")
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 1000
