"""Development mode against real gateways: off, nothing of it answers but a clear 404;
on, the demo and the client are served and the dev login mints working, short-lived
tokens, and refuses what is not a plain request for one. Also the HTTP typing and read
routes that SSE and long-poll clients (the browser client's fallback) use, and CORS for
web apps on other origins."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import jwt
import pytest

from tests.conftest import JWT_SECRET
from tests.integration.conftest import Running, Stack, raw_ws
from tests.integration.test_presence import frames_until, subscribe

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): the
    tests' rooms are their own, and the gateways they add stop after them."""
    return shared_stack


def fetch(gateway: Running, path: str, body: bytes | None = None, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(gateway.url(path), data=body, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None  # show the redirect itself

    opener = urllib.request.build_opener(Stay)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def mint(gateway: Running, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, answer = fetch(gateway, "/v1/dev/token", raw, "POST")
    return status, json.loads(answer)


async def test_dev_mode_off_serves_nothing_of_it_and_on_mints_working_tokens(
        stack: Stack) -> None:
    production = stack.gateways[0]
    status, answer = mint(production, {"user": "alice"})
    assert (status, answer["error"]["code"]) == (404, "dev_mode_off")
    for path in ("/demo/", "/client/burrow.js", "/demo/demo.js"):
        assert fetch(production, path)[0] == 404, path

    dev = stack.add_gateway(BURROW_DEV_MODE="true", BURROW_DEV_TOKEN_TTL="600",
                            BURROW_CORS_ORIGINS="https://app.example")
    status, headers, _ = fetch(dev, "/")
    assert (status, headers["Location"]) == (302, "/demo/")
    status, headers, page = fetch(dev, "/demo/")
    assert status == 200 and b'<script type="module" src="demo.js">' in page
    status, headers, script = fetch(dev, "/client/burrow.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"export class BurrowClient" in script
    # the static route serves its folder, nothing beside it
    assert fetch(dev, "/demo/../dev_api.py")[0] == 404
    assert fetch(dev, "/demo/%2e%2e/dev_api.py")[0] == 404

    status, answer = mint(dev, {"user": "alice"})
    assert status == 200 and answer["user"] == "alice"
    claims = jwt.decode(answer["token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 600
    assert answer["expires_at"] == claims["exp"]
    # it opens the API and a WebSocket, as any token does
    assert stack.http("GET", "/v1/rooms", None, gateway=1, token=answer["token"])[0] == 200
    async with raw_ws(dev.ws_url, answer["token"]) as ws:
        await ws.send({"type": "ping", "id": 1})
        assert await ws.recv() == {"type": "pong", "id": 1}

    status, answer = mint(dev, {"user": "root", "ttl": 5, "roles": ["admin"]})
    claims = jwt.decode(answer["token"], JWT_SECRET, algorithms=["HS256"])
    assert (status, claims["exp"] - claims["iat"], claims["roles"]) == (200, 5, ["admin"])

    refused: list[tuple[Any, int, str, str | None]] = [
        (b"{not json", 400, "bad_json", None),
        (b"[]", 400, "bad_request", None),
        ({}, 400, "bad_request", "user"),
        ({"user": ""}, 400, "bad_request", "user"),
        ({"user": "x" * 129}, 400, "bad_request", "user"),
        ({"user": "a\nb"}, 400, "bad_request", "user"),
        ({"user": 7}, 400, "bad_request", "user"),
        ({"user": "a", "ttl": 0}, 400, "bad_request", "ttl"),
        ({"user": "a", "ttl": 601}, 400, "bad_request", "ttl"),
        ({"user": "a", "ttl": "5"}, 400, "bad_request", "ttl"),
        ({"user": "a", "ttl": True}, 400, "bad_request", "ttl"),
        ({"user": "a", "roles": ["owner"]}, 400, "bad_request", "roles"),
        ({"user": "a", "roles": "admin"}, 400, "bad_request", "roles"),
        ({"user": "a", "sub": "b"}, 400, "bad_request", "sub"),
        ({"user": "a" * 2000}, 413, "too_large", None),
    ]
    for body, want_status, code, field in refused:
        status, answer = mint(dev, body)
        assert (status, answer["error"]["code"], answer["error"].get("field")) == (
            want_status, code, field), body


async def test_typing_and_read_over_http_behave_as_their_frames(stack: Stack) -> None:
    stack.room("desk", "alice", "bob")
    stack.room("other", "carol")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("bob")) as bob:
        await subscribe(bob, "desk")
        for _ in range(3):  # one event; the rest within the interval are dropped quietly
            assert stack.http("POST", "/v1/rooms/desk/typing", "alice") == (204, None)
        assert stack.http("POST", "/v1/rooms/other/typing", "alice")[0] == 403
        assert stack.http("POST", "/v1/rooms/bad%20room/typing", "alice")[0] == 400
        assert stack.http("POST", "/v1/rooms/desk/typing", None)[0] == 401
        # a sentinel: the typing event is published before the message is even sent
        await bob.send({"type": "send", "room": "desk", "client_id": "s1", "body": "end"})
        frames = await frames_until(bob, "message")
    typing = [f for f in frames if f["type"] == "typing"]
    assert typing == [{"type": "typing", "room": "desk", "user": "alice"}]

    def read_seq(user: str) -> int:
        status, body = stack.http("GET", "/v1/rooms/desk/members", user)
        assert status == 200, body
        return next(m["read_seq"] for m in body["members"] if m["user"] == user)

    assert stack.http("PUT", "/v1/rooms/desk/read", "alice", {"seq": 3}) == (204, None)
    assert read_seq("alice") == 3
    assert stack.http("PUT", "/v1/rooms/desk/read", "alice", {"seq": 1}) == (204, None)
    assert read_seq("alice") == 3  # forward only
    for body in ({"seq": -1}, {"seq": "4"}, {"seq": True}, {"seq": 2**53}, {}, {"seq": 4,
                 "x": 1}, b"{oops", b"[4]"):
        status, answer = stack.http("PUT", "/v1/rooms/desk/read", "alice", body)
        assert status == 400 and answer["error"]["code"] in ("bad_request", "bad_json"), body
    assert stack.http("PUT", "/v1/rooms/desk/read", "alice", b"1" * 1000)[0] == 413
    assert stack.http("PUT", "/v1/rooms/other/read", "alice", {"seq": 9})[0] == 403
    assert stack.http("PUT", "/v1/rooms/bad%20room/read", "alice", {"seq": 9})[0] == 400
    assert read_seq("alice") == 3


async def test_cors_answers_allowed_origins_only(stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_CORS_ORIGINS="https://app.example")
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, idempotency-key"}
    status, headers, _ = fetch(gateway, "/v1/rooms/lobby/messages", method="OPTIONS",
                               headers=preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "Idempotency-Key" in headers["Access-Control-Allow-Headers"]
    status, headers, _ = fetch(gateway, "/v1/rooms/lobby/messages", method="OPTIONS",
                               headers={**preflight, "Origin": "https://evil.example"})
    assert status == 204 and "Access-Control-Allow-Origin" not in headers
    # answers, refusals included, carry the header for the allowed origin only
    status, headers, _ = fetch(gateway, "/v1/rooms", headers={"Origin": "https://app.example"})
    assert (status, headers["Access-Control-Allow-Origin"]) == (401, "https://app.example")
    assert "WWW-Authenticate" in headers["Access-Control-Expose-Headers"]
    status, headers, _ = fetch(gateway, "/v1/rooms", headers={"Origin": "https://evil.example"})
    assert status == 401 and "Access-Control-Allow-Origin" not in headers
    # a wrong method is still a 405, preflight or not
    assert fetch(gateway, "/healthz", method="DELETE")[0] == 405
    # the default gateway (no BURROW_CORS_ORIGINS) answers no preflight
    status, headers, _ = fetch(stack.gateways[0], "/v1/rooms", method="OPTIONS",
                               headers=preflight)
    assert status == 405 and "Access-Control-Allow-Origin" not in headers
