"""The HTTP API fuzzed from its own OpenAPI description (schemathesis): whatever a
client sends, in shape or out of it, no answer is a 5xx, the gateway stays up, a normal
client still works, and nothing is stored that the rules forbid.

A short budget here (``FUZZ_EXAMPLES`` per operation); ``BURROW_FUZZ_EXAMPLES=500`` runs
the long one outside CI. Requests carry a valid token (a member of one room), so the
authorised paths are reached too; rate limits are raised so they do not hide them.
"""

from __future__ import annotations

import os

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from pymongo import MongoClient

from tests.integration.conftest import Stack

schemathesis = pytest.importorskip("schemathesis")
pytestmark = pytest.mark.integration
FUZZ_EXAMPLES = int(os.environ.get("BURROW_FUZZ_EXAMPLES", "12"))


def test_no_request_from_the_description_gets_a_server_error(stack: Stack) -> None:
    # As every real broker has it (definitions.json): a valid new email queues its
    # verification mail on email.verify, which no worker here declares.
    stack.vhost.load_topology()
    gateway = stack.add_gateway(BURROW_RATE_IP="1000000/1000000",
                                BURROW_RATE_MEMBERS="1000000/1000000",
                                BURROW_RATE_USER="1000000/1000000",
                                BURROW_DEV_MODE="true")
    stack.room("lobby", "fuzzer", "other")
    token = stack.token("fuzzer")
    schema = schemathesis.openapi.from_url(gateway.url("/v1/openapi.json"))
    failures: list[str] = []
    tried = 0
    with httpx.Client(base_url=gateway.url(""), timeout=30) as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path in ("/v1/sse", "/v1/ws"):
                continue  # streams: the transports' own tests and the WebSocket fuzzer

            @given(case=operation.as_strategy())
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def fuzz(case: object) -> None:
                nonlocal tried
                tried += 1
                request = case.as_transport_kwargs(base_url=gateway.url(""))  # type: ignore[attr-defined]
                headers = {k: v for k, v in (request.get("headers") or {}).items()
                           if k.lower() != "authorization"}
                if tried % 4:  # most with the token, some without
                    headers["Authorization"] = f"Bearer {token}"
                try:
                    answer = http.request(request["method"], request["url"],
                                          params=request.get("params"), headers=headers,
                                          content=request.get("data") or request.get("content"),
                                          json=request.get("json"))
                except httpx.HTTPError as exc:
                    failures.append(f"{request['method']} {request['url']}: {exc!r}")
                    return
                if answer.status_code >= 500:
                    failures.append(f"{request['method']} {request['url']} -> "
                                    f"{answer.status_code} {answer.text[:200]}")

            fuzz()
    print(f"http fuzz: {tried} requests over {FUZZ_EXAMPLES} examples per operation, "
          f"{len(failures)} server errors")  # docs/security.md quotes the long run
    assert not failures, "\n".join(failures[:20])
    assert tried >= 10 * FUZZ_EXAMPLES
    assert gateway.app.exited is None
    # a normal client still works, and the fuzzer stored nothing it may not
    status, body = stack.http("GET", "/v1/rooms", "other", gateway=len(stack.gateways) - 1)
    assert status == 200 and [r["id"] for r in body["rooms"]] == ["lobby"]
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        db = client.get_default_database()
        for message in db.messages.find():
            assert message["sender"] == "fuzzer"  # only the token's user, in its rooms
            assert db.memberships.find_one({"room": message["room"], "user": "fuzzer"})
    log = gateway.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
