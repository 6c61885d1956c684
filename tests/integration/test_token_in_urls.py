"""A token in a URL is taken only where a browser has no other way (a WebSocket, an
EventSource); everywhere else it must come in the Authorization header, so that it
stays out of proxy logs, browser history and Referer headers."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): the
    tests' rooms are their own, and the gateways they add stop after them."""
    return shared_stack


async def test_a_query_token_is_refused_where_a_header_can_be_sent(stack: Stack) -> None:
    stack.room("lobby", "alice")
    token = stack.token("alice")
    gateway = stack.gateways[0]
    async with httpx.AsyncClient(timeout=30) as http:
        for method, path in (("GET", "/v1/rooms"), ("GET", "/v1/rooms/lobby/messages"),
                             ("POST", "/v1/rooms/lobby/typing"),
                             ("GET", "/v1/poll?rooms=lobby&timeout=0&x=1")):
            sep = "&" if "?" in path else "?"
            answer = await http.request(method, gateway.url(f"{path}{sep}access_token={token}"))
            assert answer.status_code == 401, (path, answer.text)
            assert "Authorization header" in answer.json()["error"]["message"]
        # with the header, the same requests pass
        ok = await http.get(gateway.url("/v1/rooms"),
                            headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        # an EventSource cannot send headers: SSE takes the query token
        async with http.stream("GET", gateway.url(
                f"/v1/sse?rooms=lobby&access_token={token}")) as sse:
            assert sse.status_code == 200
            async for line in sse.aiter_lines():
                if line.startswith("event: subscribed"):
                    break


async def test_every_answer_carries_the_security_headers(stack: Stack) -> None:
    gateway = stack.gateways[0]
    async with httpx.AsyncClient(timeout=30) as http:
        for method, path, headers in (
                ("GET", "/v1/rooms", {}),  # 401
                ("GET", "/v1/rooms", {"Authorization": f"Bearer {stack.token('alice')}"}),
                ("GET", "/healthz", {}), ("GET", "/v1/unsubscribe?token=x", {}),
                ("GET", "/no/such/route", {})):
            answer = await http.request(method, gateway.url(path), headers=headers)
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["x-frame-options"] == "DENY", path
            assert answer.headers["content-security-policy"] == "frame-ancestors 'none'", path
            assert answer.headers["referrer-policy"] == "no-referrer", path


async def test_metrics_are_for_the_operators_networks_only(stack: Stack) -> None:
    """The gateway serves /metrics on the clients' port: a client from the internet (as
    a trusted proxy forwards it) gets 403; loopback and private networks read them."""
    proxied = stack.add_gateway(SANIC_PROXIES_COUNT="1")
    narrow = stack.add_gateway(BURROW_METRICS_FROM="10.0.0.0/8")
    async with httpx.AsyncClient(timeout=30) as http:
        outside = await http.get(proxied.url("/metrics"),
                                 headers={"X-Forwarded-For": "203.0.113.5"})
        assert outside.status_code == 403
        assert "burrow_" not in outside.text
        inside = await http.get(proxied.url("/metrics"),
                                headers={"X-Forwarded-For": "10.1.2.3"})
        assert inside.status_code == 200 and "burrow_gateway_ready" in inside.text
        assert (await http.get(stack.gateways[0].url("/metrics"))).status_code == 200
        assert (await http.get(narrow.url("/metrics"))).status_code == 403
        assert (await http.get(narrow.url("/healthz"))).status_code == 200  # probes stay open
