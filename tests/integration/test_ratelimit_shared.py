"""Shared rate limits on a real Redis (burrow/runtime/ratelimit.py with ``redis://``).

Two :class:`RateLimiter` instances stand for two gateways (or two Sanic workers): with a
shared storage a user's sends count once, wherever they land. When the storage goes away
the limiter fails open (allows, warns once) and enforces again once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from burrow.devstack import ports
from burrow.runtime.ratelimit import ALLOWED, RateLimiter, Rule
from tests.conftest import RedisServer, until

pytestmark = pytest.mark.integration

# 10 per 1000 s: nothing refills while a test runs, so counts are exact on the real clock.
SLOW = Rule(10, 0.01)

Make = Callable[..., RateLimiter]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    made: list[RateLimiter] = []

    def build(uri: str, rules: dict[str, Rule], **kwargs: Any) -> RateLimiter:
        limiter = RateLimiter(uri, rules, **kwargs)
        made.append(limiter)
        return limiter

    yield build
    for limiter in made:
        await limiter.close()


def fresh(prefix: str) -> str:
    """A key nobody else uses on the session's Redis."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def test_two_gateways_share_one_limit(redis_url: str, make: Make) -> None:
    one = make(redis_url, {"user": SLOW})
    two = make(redis_url, {"user": SLOW})
    alice = fresh("alice")
    for _ in range(6):
        assert await one.hit("user", alice) == ALLOWED
    for _ in range(4):
        assert await two.hit("user", alice) == ALLOWED
    for limiter in (one, two):
        refused = await limiter.hit("user", alice)
        assert not refused.allowed and refused.kind == "user"
        # the burst filled the current window: the next hit waits for its end (~1000 s)
        assert 900_000 < refused.retry_after_ms <= 1_000_001
    # another user is not affected
    assert (await two.hit("user", fresh("bob"))).allowed


async def test_hit_all_across_gateways_takes_nothing_when_one_limit_refuses(
        redis_url: str, make: Make) -> None:
    rules = {"connection": SLOW, "user": Rule(3, 0.003)}
    one, two = make(redis_url, rules), make(redis_url, rules)
    alice, c1, c2 = fresh("alice"), fresh("conn"), fresh("conn")
    for limiter in (one, two, one):
        assert (await limiter.hit_all([("connection", c1), ("user", alice)])).allowed
    refused = await two.hit_all([("connection", c2), ("user", alice)])
    assert not refused.allowed and refused.kind == "user"
    for _ in range(10):  # c2 still has its whole burst, on either gateway
        assert (await one.hit("connection", c2)).allowed
    assert not (await two.hit("connection", c2)).allowed


async def test_a_retry_after_retry_after_ms_passes_on_the_other_gateway(
        redis_url: str, make: Make) -> None:
    one = make(redis_url, {"connection": Rule(2, 2.0)})
    two = make(redis_url, {"connection": Rule(2, 2.0)})
    conn = fresh("conn")
    assert (await one.hit("connection", conn)).allowed
    assert (await one.hit("connection", conn)).allowed
    refused = await two.hit("connection", conn)
    assert not refused.allowed and 0 < refused.retry_after_ms <= 2001
    await asyncio.sleep(refused.retry_after_ms / 1000 + 0.05)  # a lower bound: later is fine
    assert (await two.hit("connection", conn)).allowed


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop and start (the session's one stays up)."""
    server = RedisServer(tmp_path / "redis", ports.free_port())
    server.start()
    server.wait_ready()
    yield server
    server.stop()



async def test_fails_open_while_redis_is_down_and_enforces_again_after(
        own_redis: RedisServer, make: Make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="burrow.runtime.ratelimit")
    limiter = make(own_redis.url, {"user": Rule(1, 0.001)}, outage_backoff=0.2)
    assert (await limiter.hit("user", "alice")).allowed
    assert not (await limiter.hit("user", "alice")).allowed  # enforced while up
    assert limiter.available

    own_redis.stop()
    for _ in range(20):  # fail-open: every send passes, with no wait to report
        assert await limiter.hit("user", "alice") == ALLOWED
        assert await limiter.hit_all([("user", "bob")]) == ALLOWED
    assert not limiter.available
    outage = [r for r in caplog.records if r.name == "burrow.runtime.ratelimit"]
    assert len(outage) == 1, [r.getMessage() for r in outage]  # one warning per outage
    assert outage[0].levelno == logging.WARNING
    assert "unreachable" in outage[0].getMessage()
    assert "allowing all requests" in outage[0].getMessage()

    own_redis.start()  # same port, empty: nothing was persisted
    own_redis.wait_ready()

    async def enforcing() -> bool:
        await limiter.hit("user", "probe")
        return limiter.available

    await until(enforcing)
    assert (await limiter.hit("user", "carol")).allowed
    assert not (await limiter.hit("user", "carol")).allowed
    # Burrow's own last word (the Redis client logs its retries at INFO too)
    back = [r for r in caplog.records if r.name.startswith("burrow")][-1]
    assert back.levelno == logging.INFO and "answers again" in back.getMessage()
    assert own_redis.url.removeprefix("redis://") in back.getMessage()


async def test_fails_open_when_redis_never_answered(make: Make,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    port = ports.free_port()
    limiter = make(f"redis://:s3cret@127.0.0.1:{port}", {"user": Rule(1, 1.0)})
    assert await limiter.hit("user", "alice") == ALLOWED
    assert await limiter.hit("user", "alice") == ALLOWED
    assert not limiter.available
    warning = next(r.getMessage() for r in caplog.records if r.name == "burrow.runtime.ratelimit")
    assert f"async+redis://127.0.0.1:{port} is unreachable" in warning
    assert "s3cret" not in caplog.text  # the password stays out of the log


async def test_fails_open_when_redis_hangs(make: Make) -> None:
    """A server that accepts and never answers costs a send *timeout*, then nothing."""
    peers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        limiter = make(f"redis://127.0.0.1:{port}", {"user": Rule(1, 1.0)}, timeout=0.2)
        assert await limiter.hit("user", "alice") == ALLOWED
        assert not limiter.available
        assert await limiter.hit("user", "alice") == ALLOWED  # within the back-off
        await limiter.close()
    finally:
        for writer in peers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_programming_errors_are_not_mistaken_for_an_outage(redis_url: str,
                                                                 make: Make) -> None:
    limiter = make(redis_url, {"user": Rule(3, 1.0)})
    with pytest.raises(KeyError):
        await limiter.hit("room", "lobby")
    with pytest.raises(ValueError, match="cost 4"):
        await limiter.hit("user", "alice", cost=4)
    assert limiter.available
