"""Nothing is read or buffered for a request beyond a small bound, before its token is
checked (G6): an upload announced as 50 MB is answered while it is still coming.

Sanic reads a non-streaming route's whole body (up to its 100 MB default) before any
middleware runs, so before the IP limit and the token check. Every route that takes a
body now reads it in its handler after the check (``stream=True``), routes without one
ignore it, and the app-wide ``REQUEST_MAX_SIZE`` is the largest route's limit.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): the
    tests' rooms are their own, and the gateways they add stop after them."""
    return shared_stack
T = 10  # seconds: an answer that needs the whole upload would never come


async def answer_while_uploading(port: int, method: str, path: str, headers: dict[str, str],
                                 first: bytes = b"{") -> int:
    """Send the head and the first bytes of a body announced by *headers*, then wait for
    the status line without sending more; returns the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode() + first)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), T)
        return int(status_line.split()[1])
    finally:
        writer.close()


HUGE = {"Content-Type": "application/json", "Content-Length": str(50 * 1024 * 1024)}
CHUNKED = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/rooms"), ("POST", "/v1/rooms/lobby/typing"), ("PUT", "/v1/rooms/lobby/read"),
    ("POST", "/v1/rooms/lobby/messages"), ("PUT", "/v1/rooms/lobby/members/bob"),
    ("POST", "/v1/devices"), ("PUT", "/v1/me/settings"), ("GET", "/v1/rooms"),
    ("POST", "/v1/ws-ticket"),
])
async def test_an_anonymous_upload_is_refused_before_its_body(stack: Stack, method: str,
                                                              path: str) -> None:
    port = stack.gateways[0].port
    assert await answer_while_uploading(port, method, path, HUGE) in (401, 413)
    assert await answer_while_uploading(port, method, path, CHUNKED, b"4\r\n{\"a\"\r\n") \
        in (401, 413)
    # a small anonymous body is not read either: the answer comes before it
    small = {"Content-Type": "application/json", "Content-Length": "200000"}
    assert await answer_while_uploading(port, method, path, small) == 401


async def test_an_oversized_upload_with_a_good_token_is_refused_before_its_body(
        stack: Stack) -> None:
    port = stack.gateways[0].port
    auth = {"Authorization": f"Bearer {stack.token('alice')}", "Idempotency-Key": "k1"}
    for method, path in (("POST", "/v1/rooms"), ("POST", "/v1/rooms/lobby1/messages"),
                         ("PUT", "/v1/me/settings")):
        assert await answer_while_uploading(port, method, path, {**HUGE, **auth}) == 413


async def test_the_unsubscribe_form_is_answered_without_its_body(stack: Stack) -> None:
    port = stack.gateways[0].port
    status = await answer_while_uploading(port, "POST", "/v1/unsubscribe?token=forged", HUGE)
    assert status in (400, 413, 503)  # a forged link, or links not configured here


@pytest.mark.parametrize(("method", "path", "done"), [
    ("POST", "/v1/rooms/{room}/typing", 204), ("PUT", "/v1/rooms/{room}/members/bob", 200),
    ("DELETE", "/v1/rooms/{room}/members/bob", 204), ("POST", "/v1/ws-ticket", 200),
])
async def test_a_route_without_a_body_takes_an_empty_one_and_refuses_any_other(
        stack: Stack, method: str, path: str, done: int) -> None:
    """What a browser's ``fetch`` sends (``Content-Length: 0``) is served, with no error
    in the gateway's log (Sanic's ``ignore_body`` logged one per request); a body is
    refused 413, unread."""
    room = f"lobby-{method.lower()}-{path.count('/')}"  # the module's stack: its own room
    stack.room(room, "alice", "bob")
    auth = {"Authorization": f"Bearer {stack.token('alice')}"}
    async with httpx.AsyncClient(timeout=30) as http:
        url = stack.gateways[0].url(path.format(room=room))
        empty = await http.request(method, url, headers={**auth, "Content-Length": "0"})
        assert empty.status_code == done, empty.text
        some = await http.request(method, url, headers=auth, content=b'{"a": 1}')
        assert some.status_code == 413
        assert some.json()["error"]["code"] == "too_large"
        ping = await http.get(stack.gateways[0].url("/healthz"))  # the log is written
        assert ping.status_code == 200
    log = stack.gateways[0].log.read_text()
    assert "body not consumed" not in log and "ERROR" not in log


async def test_a_room_is_still_created_with_its_members(stack: Stack) -> None:
    members = [f"member-{i:04d}-" + "x" * 100 for i in range(1000)]
    # ada: a user of this test only, whose member budget (BURROW_RATE_MEMBERS, a burst of
    # 1000) no other test of the module's stack has spent
    status, body = stack.http("POST", "/v1/rooms", "ada",
                              {"id": "big", "name": "Big", "members": members})
    assert (status, body["id"]) == (201, "big")
    status, body = stack.http("POST", "/v1/rooms", "ada", {"id": "x", "extra": 1})
    assert status == 400 and body["error"]["field"] == "extra"
    status, body = stack.http("POST", "/v1/rooms", "ada", b"{not json")
    assert status == 400 and body["error"]["code"] == "bad_json"


async def test_a_head_sent_one_byte_at_a_time_gets_a_deadline(stack: Stack) -> None:
    """Slowloris: a request head dripped a byte every 0.3 s never leaves Sanic's
    per-byte timeout idle, so only a deadline for the whole head ends it. With
    ``SANIC_REQUEST_TIMEOUT`` = 2 s the gateway closes (408) while the drip goes on;
    a head sent at once is served."""
    gateway = stack.add_gateway(SANIC_REQUEST_TIMEOUT="2")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 200
    closed_after = None
    try:
        for n, byte in enumerate(head):  # up to ~70 s of dripping: far past the 2 s
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(200), 0.3)
            except TimeoutError:
                continue
            closed_after = n
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
            break
    except (ConnectionResetError, BrokenPipeError):
        closed_after = -1
    finally:
        writer.close()
    assert closed_after is not None, "the dripping head was never cut off"
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(gateway.url("/healthz"))).status_code == 200
