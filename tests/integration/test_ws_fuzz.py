"""The WebSocket protocol fuzzed with hypothesis: random, malformed, oversized, deeply
nested and invalid frames of every type, in random orders and interleavings over
several connections of a member and a stranger. Invariants after each example: every
connection is either still answering (a ping gets its pong) or was closed with a code
the protocol gives for what it sent (1007 invalid UTF-8, 1009 too large, 4429 flood),
never 1011 or a dropped socket; and after the run the gateway is up without a
traceback, a normal client works, and nothing is stored but the member's sends in the
member's room.

``BURROW_FUZZ_EXAMPLES`` sets the budget (CI: a short one; docs/security.md quotes a
long run)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
EXAMPLES = max(10, int(os.environ.get("BURROW_FUZZ_EXAMPLES", "12")) * 2)
ALLOWED_CLOSES = {1007, 1009, 4429}
TYPES = ["subscribe", "unsubscribe", "send", "read", "typing", "ping", "edit", "delete",
         "react"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
rooms = st.sampled_from(["den", "elsewhere", "", "x" * 65, "bad room", "den\u0000"]) | \
    st.text(max_size=70) | json_values
frames = st.one_of(
    # shaped like the protocol, with any field values
    st.fixed_dictionaries({"type": st.sampled_from(TYPES)}, optional={
        "room": rooms, "client_id": st.text(max_size=80) | json_values,
        "body": st.text(max_size=300) | json_values, "since": json_values,
        "seq": json_values, "id": json_values | st.text(max_size=70),
        "emoji": st.text(max_size=20) | json_values, "remove": json_values,
        "v": json_values}).map(json.dumps),
    st.fixed_dictionaries({"type": json_values}).map(json.dumps),       # unknown types
    json_values.map(json.dumps),                                         # not an object
    st.text(max_size=200),                                               # not JSON
    st.binary(max_size=200),                                             # binary frames
    st.integers(1, 400).map(lambda depth: "[" * depth + "]" * depth),    # deep nesting
    st.integers(1, 2000).map(lambda n: json.dumps(
        {"type": "send", "room": "den", "client_id": f"big{n}", "body": "x" * (n * 50)})),
    st.just(b"\xff\xfe{}"),                                              # invalid UTF-8 text
)


MAX_FRAME = 65536  # BURROW_MAX_FRAME_BYTES


def fails_the_connection(frame: str | bytes) -> bool:
    """Frames after which RFC 6455 has the gateway fail the connection (1007, 1009): it
    sends its close frame and drops the socket, so a client that goes on writing may get
    a reset that loses the close frame (no close code then)."""
    return (isinstance(frame, bytes) and frame.startswith(b"\xff")) or len(frame) > MAX_FRAME


async def alive_or_fairly_closed(ws: ClientConnection, failed: bool) -> str:
    """'alive' if a ping gets its pong; else the close code, which must be allowed."""
    try:
        await ws.send(json.dumps({"type": "ping", "id": "probe"}))
        async with asyncio.timeout(30):
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("type") == "pong" and frame.get("id") == "probe":
                    return "alive"
    except ConnectionClosed:
        code = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
        if code is None and failed:
            return "failed (close frame lost to the reset)"
        assert code in ALLOWED_CLOSES, f"closed with {code}"
        return str(code)


def test_no_frame_sequence_breaks_a_connection_or_the_gateway(stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_RATE_CONNECTION="1000000/1000000",
                                BURROW_RATE_USER="1000000/1000000",
                                BURROW_RATE_FRAMES="1000000/1000000",
                                BURROW_RATE_IP="1000000/1000000")
    stack.room("den", "member")
    tokens = [stack.token("member"), stack.token("member"), stack.token("stranger")]
    outcomes: dict[str, int] = {}

    @given(st.lists(st.tuples(st.integers(0, 2), frames), min_size=1, max_size=25))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(script: list[tuple[int, Any]]) -> None:
        async def run() -> None:
            connections = [await connect(f"{gateway.ws_url}?access_token={t}",
                                         max_size=None) for t in tokens]
            try:
                for index, frame in script:
                    try:
                        if isinstance(frame, bytes) and frame.startswith(b"\xff"):
                            await connections[index].send(frame, text=True)
                        else:
                            await connections[index].send(frame)
                    except ConnectionClosed:
                        pass  # closed by an earlier frame: judged below
                for index, ws in enumerate(connections):
                    failed = any(fails_the_connection(frame) for i, frame in script
                                 if i == index)
                    outcome = await alive_or_fairly_closed(ws, failed)
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
            finally:
                for ws in connections:
                    await ws.close()
        asyncio.run(run())

    fuzz()
    print(f"ws fuzz: {EXAMPLES} scripts, connections ended {outcomes}")
    assert outcomes.get("alive", 0) > 0
    assert gateway.app.exited is None
    assert "Traceback" not in gateway.log.read_text(errors="replace")
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        for message in client.get_default_database().messages.find():
            assert (message["room"], message["sender"]) == ("den", "member"), message
    status, _ = stack.http("GET", "/v1/rooms/den/messages", "member",
                              gateway=len(stack.gateways) - 1)
    assert status == 200
