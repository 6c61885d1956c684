"""Auth failures, hostile and malformed input, slow clients, token expiry, the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import jwt
import pytest
from websockets.exceptions import InvalidStatus

from burrow.core import tokens
from tests.conftest import JWT_SECRET, until
from tests.integration.conftest import Stack, raw_ws

pytestmark = pytest.mark.integration
T = 30
REASONS = ("missing", "malformed", "bad_signature", "expired", "algorithm", "claims")


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): the
    tests' rooms and users are their own, and the gateways they add stop after them."""
    return shared_stack


@pytest.mark.parametrize(("token", "reason"), [
    (None, "missing"),
    ("not-a-token", "malformed"),
    (tokens.mint("another-secret-of-at-least-32-bytes!!", "eve"), "bad_signature"),
    (tokens.mint(JWT_SECRET, "eve", ttl=-60), "expired"),
    (jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, None, algorithm="none"),
     "algorithm"),
    (jwt.encode({"sub": "eve"}, JWT_SECRET, algorithm="HS256"), "claims"),
], ids=lambda value: value if value in REASONS else "token")  # not the tokens: they hold
# the time, and two xdist workers collecting a second apart would disagree on the ids
async def test_bad_tokens_get_401_and_no_connection(stack: Stack, token: str | None,
                                                    reason: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with raw_ws(stack.gateways[0].ws_url, token):
            pass
    assert refused.value.response.status_code == 401
    status, body = stack.http("GET", "/v1/rooms", None, token=token)
    assert status == 401 and body["error"]["reason"] == reason


async def test_audience_and_issuer_are_checked_when_configured(stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_JWT_AUDIENCE="chat", BURROW_JWT_ISSUER="https://idp")
    url = gateway.ws_url
    good = tokens.mint(JWT_SECRET, "amy", audience="chat", issuer="https://idp")
    for bad in (tokens.mint(JWT_SECRET, "amy", audience="other", issuer="https://idp"),
                tokens.mint(JWT_SECRET, "amy", audience="chat", issuer="https://evil"),
                tokens.mint(JWT_SECRET, "amy")):
        with pytest.raises(InvalidStatus):
            async with raw_ws(url, bad):
                pass
    async with raw_ws(url, good) as ws:
        await ws.send({"type": "ping"})
        assert await ws.recv() == {"type": "pong"}


async def test_the_query_token_works_for_browsers(stack: Stack) -> None:
    url = f"{stack.gateways[0].ws_url}?access_token={stack.token('amy')}"
    async with raw_ws(url, None) as ws:
        await ws.send({"type": "ping", "id": "b"})
        assert await ws.recv() == {"type": "pong", "id": "b"}


async def test_a_token_that_expires_on_an_open_connection_closes_it_4401(stack: Stack) -> None:
    # A handshake slower than the token's short life (a busy machine) is refused 401, as
    # it should be: then the same again with a longer-lived token.
    for ttl in (2, 4, 8, 16):
        try:
            async with raw_ws(stack.gateways[0].ws_url, stack.token("amy", ttl=ttl)) as ws:
                assert await ws.closed(timeout=T + ttl) == 4401
                return
        except InvalidStatus as refused:
            assert refused.response.status_code == 401
    pytest.fail("every token expired before its handshake ended")


@pytest.mark.parametrize(("frame", "code"), [
    ("{not json", "bad_json"),
    ("[1, 2]", "bad_frame"),
    ('"send"', "bad_frame"),
    ({"room": "r"}, "unknown_type"),
    ({"type": "shout", "room": "r"}, "unknown_type"),
    ({"type": "subscribe", "room": "a.b"}, "bad_room"),
    ({"type": "subscribe", "room": "#"}, "bad_room"),
    ({"type": "subscribe", "room": "x" * 65}, "bad_room"),
    ({"type": "subscribe", "room": 5}, "bad_room"),
    ({"type": "subscribe", "room": "r", "since": -1}, "bad_frame"),
    ({"type": "subscribe", "room": "r", "since": "3"}, "bad_frame"),
    ({"type": "send", "room": "r", "body": "no client id"}, "bad_frame"),
    ({"type": "send", "room": "r", "client_id": "c", "body": 7}, "bad_frame"),
    ({"type": "send", "room": "r", "client_id": "c", "body": "x" * 16385}, "too_large"),
    ({"type": "read", "room": "r", "seq": True}, "bad_frame"),
    (b"\x00binary", "bad_frame"),
])
async def test_malformed_frames_get_an_error_and_the_connection_survives(
        stack: Stack, frame: object, code: str) -> None:
    async with raw_ws(stack.gateways[0].ws_url, stack.token("amy")) as ws:
        await ws.send(frame)
        error = await ws.recv()
        assert (error["type"], error["code"]) == ("error", code)
        assert error["message"]
        await ws.send({"type": "ping", "id": 2})
        assert await ws.recv() == {"type": "pong", "id": 2}


async def test_an_oversized_frame_closes_with_1009(stack: Stack) -> None:
    async with raw_ws(stack.gateways[0].ws_url, stack.token("amy"), max_size=None) as ws:
        await ws.send("x" * 70_000)
        assert await ws.closed() == 1009


async def test_a_client_that_does_not_read_is_cut_4008_and_others_go_on(
        stack: Stack) -> None:
    # (keepalive pings off: an unanswered ping would close the silent client with 1011)
    gateway = stack.add_gateway(BURROW_CLIENT_BUFFER="16", SANIC_WEBSOCKET_PING_INTERVAL="600")
    stack.room("flood", "alice", "slow", "fast")
    # A raw TCP client that completes the handshake, subscribes, and then never reads.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.connect(("127.0.0.1", gateway.port))
    sock.sendall((f"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {stack.token('slow')}"
                  "\r\n\r\n").encode())
    sock.settimeout(T)
    handshake = b""
    while b"\r\n\r\n" not in handshake:  # frames sent before the 101 would be lost
        handshake += sock.recv(1)
    assert handshake.startswith(b"HTTP/1.1 101")
    payload = b'{"type":"subscribe","room":"flood"}'
    mask = b"\x01\x02\x03\x04"
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    def read_to_end() -> bytes:
        data = b""
        with contextlib.suppress(ConnectionResetError):  # aborted after the close frame
            while chunk := sock.recv(1 << 20):
                data += chunk
        return data

    async def read_once_cut() -> bytes:
        # The gateway queues the close frame behind what the socket still holds and
        # aborts if the client does not answer in time: start reading when it cuts.
        await until(lambda: "is too slow" in gateway.log.read_text(), T * 2)
        return await asyncio.to_thread(read_to_end)

    slow = asyncio.ensure_future(read_once_cut())
    fast = await stack.client("fast", [0])  # on the gateway with the default buffer
    await asyncio.wait_for(fast.subscribe("flood"), T)
    alice = await stack.client("alice", [0])
    body = "y" * 8000
    # ~6.4 MB: more than the kernel's socket buffers (4 MiB) can hide from the gateway
    await asyncio.wait_for(asyncio.gather(*(alice.send("flood", body) for _ in range(800))),
                           T * 2)
    got = [await asyncio.wait_for(fast.messages.get(), T) for _ in range(800)]
    assert [m.seq for m in got] == list(range(1, 801))

    data = await asyncio.wait_for(slow, T * 2)
    sock.close()
    frames = server_frames(data)
    assert 0 < sum(opcode == 1 for opcode, _ in frames) < 800, "never cut"
    opcode, payload = frames[-1]  # the close frame comes after what was queued before it
    assert (opcode, int.from_bytes(payload[:2], "big")) == (8, 4008)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole frame in a server's (unmasked) byte stream."""
    frames, at = [], 0
    while at + 2 <= len(data):
        length, head = data[at + 1] & 0x7F, 2
        if length == 126:
            length, head = int.from_bytes(data[at + 2:at + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(data[at + 2:at + 10], "big"), 10
        if at + head + length > len(data):
            break  # cut off by the abort
        frames.append((data[at] & 0x0F, data[at + head:at + head + length]))
        at += head + length
    return frames


def test_rooms_api(stack: Stack) -> None:
    assert stack.http("POST", "/v1/rooms", "ann", {"id": "book-club", "name": "Books",
                                                   "members": ["ben"]})[0] == 201
    assert stack.http("POST", "/v1/rooms", "ann", {"id": "book-club"})[0] == 409
    for bad in ({"id": "no spaces"}, {"id": "ok", "members": "ben"}, {"id": "ok", "name": 3},
                [1], {"id": "ok", "members": [""]}):
        status, body = stack.http("POST", "/v1/rooms", "ann", bad)
        assert status == 400 and body["error"]["message"], bad
    assert stack.http("POST", "/v1/rooms", "ann", b"{oops")[0] == 400
    status, body = stack.http("GET", "/v1/rooms", "ben")
    assert body["rooms"] == [{"id": "book-club", "name": "Books", "role": "member",
                              "read_seq": 0}]
    assert stack.http("PUT", "/v1/rooms/book-club/members/cat", "ben")[0] == 403
    assert stack.http("PUT", "/v1/rooms/book-club/members/cat", "ann")[0] == 200
    assert stack.http("PUT", "/v1/rooms/nowhere/members/cat", "ann")[0] == 404
    assert stack.http("DELETE", "/v1/rooms/book-club/members/ann", "cat")[0] == 403
    assert stack.http("DELETE", "/v1/rooms/book-club/members/cat", "cat")[0] == 204  # leaves
    status, body = stack.http("GET", "/v1/rooms/book-club/members", "ben")
    assert [m["user"] for m in body["members"]] == ["ann", "ben"]


async def test_history_by_seq_range_for_members_only(stack: Stack) -> None:
    stack.room("log", "ann")
    ann = await stack.client("ann")
    for n in range(1, 11):
        await asyncio.wait_for(ann.send("log", f"m{n}"), T)

    def seqs(query: str) -> list[int]:
        status, body = stack.http("GET", f"/v1/rooms/log/messages{query}", "ann")
        assert status == 200, body
        return [m["seq"] for m in body["messages"]]

    assert seqs("") == list(range(1, 11))
    assert seqs("?after=7") == [8, 9, 10]
    assert seqs("?after=2&limit=3") == [3, 4, 5]
    assert seqs("?before=4") == [1, 2, 3]
    assert seqs("?before=10&limit=2") == [8, 9]  # newest first, returned ascending
    assert seqs("?after=3&before=6") == [4, 5]
    for bad in ("?after=-1", "?limit=0", "?limit=501", "?before=x", "?after=1e3"):
        status, body = stack.http("GET", f"/v1/rooms/log/messages{bad}", "ann")
        assert status == 400 and body["error"]["code"] == "bad_request", bad
    assert stack.http("GET", "/v1/rooms/bad.room/messages", "ann")[0] == 400
    assert stack.http("GET", "/v1/rooms/log/messages", "zed")[0] == 403
    async with raw_ws(stack.gateways[0].ws_url, stack.token("ann")) as ws:
        await ws.send({"type": "read", "room": "log", "seq": 7})
        await ws.send({"type": "read", "room": "log", "seq": 3})  # never moves back
        await ws.send({"type": "ping"})
        await ws.recv_until("pong")
    rooms = stack.http("GET", "/v1/rooms", "ann")[1]["rooms"]  # (and test_rooms_api's)
    assert [r["read_seq"] for r in rooms if r["id"] == "log"] == [7]
