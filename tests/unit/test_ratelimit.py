"""Rate-limit core (burrow/runtime/ratelimit.py) on the in-process storage.

``limits``' memory storage reads the wall clock through its module's ``time``; the tests
replace that module reference with a :class:`FakeTime`, so bursts, refills and retry
times are exact and no test sleeps (one test checks the same on the real clock, waiting
only as a lower bound).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from unittest import mock

import limits.aio.storage.memory
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import RateLimitItemPerSecond

from burrow.runtime import ratelimit
from burrow.runtime.ratelimit import (
    ALLOWED,
    Decision,
    Flood,
    FloodRule,
    RateLimiter,
    Rule,
    async_storage_uri,
)
from burrow.runtime.settings import ConfigError, Settings

# A whole multiple of every window 1..10 s, so each test starts on a window boundary.
START = 2520.0 * 700_000


class FakeTime:
    """Stands in for the ``time`` module inside ``limits.aio.storage.memory``."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def advance_ms(self, ms: int) -> None:
        self.now = round(self.now * 1000 + ms) / 1000


@contextmanager
def fake_time() -> Iterator[FakeTime]:
    clock = FakeTime()
    with mock.patch.object(limits.aio.storage.memory, "time", clock):
        yield clock


@pytest.fixture
def clock() -> Iterator[FakeTime]:
    with fake_time() as fake:
        yield fake


Make = Callable[..., RateLimiter]


@pytest.fixture
async def make(clock: FakeTime) -> AsyncIterator[Make]:
    """``make(rules)``: a memory limiter on the fake clock, closed after the test."""
    made: list[RateLimiter] = []

    def build(rules: Mapping[str, Rule], uri: str = "memory://", **kwargs: Any) -> RateLimiter:
        limiter = RateLimiter(uri, rules, **kwargs)
        made.append(limiter)
        return limiter

    probe = build({"probe": Rule(1, 1)})
    await probe.hit("probe", "k")
    window = await probe._windows.get_sliding_window(
        probe._items["probe"].key_for("probe", "k"), 1)
    assert window == (0, 0.0, 1, 2.0), (
        "limits' memory storage no longer reads the clock through limits.aio.storage.memory"
        f".time (window {window}); FakeTime needs another way in")
    yield build
    for limiter in made:
        await limiter.close()


# --- rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "rule", "window", "capacity"), [
    ("20/5", Rule(20, 5.0), 4, 20),        # the defaults map exactly
    ("40/10", Rule(40, 10.0), 4, 40),
    ("60/20", Rule(60, 20.0), 3, 60),
    (" 5 / 0.5 ", Rule(5, 0.5), 10, 5),
    ("20/3", Rule(20, 3.0), 7, 21),        # 6.67 s -> 7 s; 3/s kept, burst 21
    ("10/4", Rule(10, 4.0), 3, 12),        # 2.5 s -> 3 s (rounds half up); 4/s kept
    ("1/5", Rule(1, 5.0), 1, 5),           # windows are >= 1 s: the burst is at least r
    ("3/0.7", Rule(3, 0.7), 4, 3),         # 4.29 s -> 4 s; 0.75/s, burst 3
])
def test_rule_parses_and_maps_onto_whole_second_windows(raw: str, rule: Rule, window: int,
                                                        capacity: int) -> None:
    parsed = Rule.parse(raw)
    assert parsed == rule
    assert (parsed.window_seconds, parsed.window_capacity) == (window, capacity)
    # the sustained rate stays within half a hit per window of r
    assert abs(capacity / window - rule.refill_per_second) <= 0.5 / window


@pytest.mark.parametrize(("raw", "message"), [
    ("", "expected CAPACITY/REFILL_PER_SECOND, e.g. 20/5"),
    ("20", "expected CAPACITY/REFILL_PER_SECOND"),
    ("20 per second", "expected CAPACITY/REFILL_PER_SECOND"),
    ("/5", "capacity '' is not a whole number"),
    ("x/5", "capacity 'x' is not a whole number"),
    ("2.5/1", "capacity '2.5' is not a whole number"),
    ("0/5", "capacity must be positive, not 0"),
    ("-1/5", "capacity must be positive, not -1"),
    ("20/", "refill '' is not a number"),
    ("20/fast", "refill 'fast' is not a number"),
    ("20/0", "refill must be a positive number, not '0'"),
    ("20/-2", "refill must be a positive number"),
    ("20/inf", "refill must be a positive number"),
    ("20/nan", "refill must be a positive number"),
    ("20/5/1", "refill '5/1' is not a number"),
])
def test_malformed_rules_are_refused_with_a_reason(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Rule.parse(raw)


def test_rules_built_in_code_are_checked_too() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        Rule(0, 1.0)
    with pytest.raises(ValueError, match="refill must be a positive number"):
        Rule(1, 0.0)
    assert str(Rule(20, 5.0)) == "20/5" and str(Rule(3, 0.5)) == "3/0.5"


def test_flood_rules_parse() -> None:
    assert FloodRule.parse("50/10") == FloodRule(50, 10.0)
    assert FloodRule.parse("3/0.5") == FloodRule(3, 0.5)
    for raw, message in [("50", "expected REJECTIONS/SECONDS"), ("0/10", "must be positive"),
                         ("x/10", "not a whole number"), ("5/0", "positive number")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            FloodRule.parse(raw)


@pytest.mark.parametrize(("raw", "message"), [
    ("x/10", "rejections 'x' is not a whole number"),
    ("5/x", "window 'x' is not a number"),
    ("5/10/1", "window '10/1' is not a number"),
])
def test_flood_rule_refusals_name_the_part_that_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        FloodRule.parse(raw)


@pytest.mark.parametrize(("rejections", "seconds", "message"), [
    (0, 1.0, "rejections must be at least 1, not 0"),
    (1, 0.0, "window must be a positive number, not 0.0"),
    (1, -1.0, "window must be a positive number, not -1.0"),
    (1, float("inf"), "window must be a positive number, not inf"),
])
def test_flood_rules_built_in_code_are_checked_too(rejections: int, seconds: float,
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        FloodRule(rejections, seconds)


@pytest.mark.parametrize(("raw", "uri"), [
    ("memory://", "async+memory://"),
    ("async+memory://", "async+memory://"),
    ("redis://127.0.0.1:6379", "async+redis://127.0.0.1:6379"),
    ("redis://:secret@cache:6380/2", "async+redis://:secret@cache:6380/2"),
    ("async+redis://cache:6379", "async+redis://cache:6379"),
    ("rediss://cache:6379", "async+rediss://cache:6379"),
    ("redis+sentinel://s1:26379/main", "async+redis+sentinel://s1:26379/main"),
])
def test_storage_uris_become_async(raw: str, uri: str) -> None:
    assert async_storage_uri(raw) == uri


@pytest.mark.parametrize(("raw", "message"), [
    ("localhost:6379", "expected a storage URI"),
    ("mongodb://db:27017", "unsupported storage 'mongodb'"),
    ("memcached://m:11211", "unsupported storage 'memcached'"),
    ("http://cache", "unsupported storage 'http'"),
])
def test_unusable_storages_are_refused(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        async_storage_uri(raw)


def test_storage_refusals_in_full_and_a_password_with_a_scheme_separator() -> None:
    """The scheme is what comes before the first ``://``; a password may hold one too."""
    assert (async_storage_uri("redis://:pa://ss@cache:6379")
            == "async+redis://:pa://ss@cache:6379")
    with pytest.raises(ValueError) as info:
        async_storage_uri("localhost:6379")
    assert str(info.value) == "expected a storage URI: memory:// or redis://HOST:PORT"
    with pytest.raises(ValueError) as info:
        async_storage_uri("mongodb://db:27017/?x=a://b")
    assert str(info.value) == ("unsupported storage 'mongodb': use memory:// (one process) "
                               "or redis://HOST:PORT (shared by all gateways)")


@pytest.mark.parametrize(("uri", "shown"), [
    ("async+redis://:secret@cache:6380/2", "async+redis://cache:6380/2"),
    ("async+redis://user:secret@cache/0", "async+redis://cache/0"),
    ("async+redis+unix:///run/redis.sock", "async+redis+unix:///run/redis.sock"),
    ("async+memory://", "async+memory://"),
])
def test_storage_uris_are_logged_without_credentials(uri: str, shown: str) -> None:
    assert ratelimit._redacted(uri) == shown


def test_storage_exception_classes_become_a_tuple() -> None:
    """``limits`` storages give their base exceptions as a class or a tuple of them."""
    assert ratelimit._as_tuple(OSError) == (OSError,)
    assert ratelimit._as_tuple((OSError, KeyError)) == (OSError, KeyError)


def test_settings_defaults_and_refusals() -> None:
    amqp = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:5672/burrow"}
    settings = Settings.from_env(amqp)
    assert settings.rate_storage == "async+memory://"
    assert settings.rate_connection == Rule(20, 5.0)
    assert settings.rate_user == Rule(40, 10.0)
    assert settings.rate_ip == Rule(60, 20.0)
    assert settings.rate_flood == FloodRule(50, 10.0)
    shared = Settings.from_env({**amqp, "BURROW_RATE_STORAGE": "redis://cache:6379",
                                "BURROW_RATE_USER": "100/2.5"})
    assert shared.rate_storage == "async+redis://cache:6379"
    assert shared.rate_user == Rule(100, 2.5)
    for name, value, message in [
            ("BURROW_RATE_USER", "40", "BURROW_RATE_USER='40' is invalid (expected CAPACITY"),
            ("BURROW_RATE_IP", "0/1", "BURROW_RATE_IP='0/1' is invalid (capacity must be"),
            ("BURROW_RATE_FLOOD", "50/0", "BURROW_RATE_FLOOD='50/0' is invalid"),
            # secret (a Redis URL may carry a password): named, its value not shown
            ("BURROW_RATE_STORAGE", "mongodb://db",
             "BURROW_RATE_STORAGE is invalid (unsupported storage 'mongodb'")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Settings.from_env({**amqp, name: value})


# --- limiter on the memory storage -------------------------------------------------------


async def test_a_burst_of_capacity_passes_then_the_next_waits_for_the_window(
        make: Make, clock: FakeTime) -> None:
    """20/5 runs as 20 per 4 s: a burst at the window's start waits for the window's end."""
    limiter = make({"connection": Rule(20, 5.0)})
    for _ in range(20):
        assert await limiter.hit("connection", "c1") == ALLOWED
    refused = await limiter.hit("connection", "c1")
    assert refused == Decision(False, 4001, "connection")
    # exact: still refused 2 ms before, allowed at retry_after_ms
    clock.advance_ms(refused.retry_after_ms - 2)
    assert not (await limiter.hit("connection", "c1")).allowed
    clock.advance_ms(2)
    assert (await limiter.hit("connection", "c1")).allowed
    # other keys and other kinds with the same key have their own buckets
    assert (await limiter.hit("connection", "c2")).allowed


async def test_a_burst_late_in_the_window_refills_at_the_rate(make: Make,
                                                              clock: FakeTime) -> None:
    """The previous window fades out linearly: one hit back every 1/r seconds."""
    limiter = make({"connection": Rule(20, 5.0)})
    clock.advance(3.9)
    for _ in range(20):
        assert (await limiter.hit("connection", "c")).allowed
    refused = await limiter.hit("connection", "c")
    # the window ends in 0.1 s; from then on the burst fades out, 1 hit back per 0.2 s
    assert refused.retry_after_ms == 101
    clock.advance_ms(refused.retry_after_ms)
    assert (await limiter.hit("connection", "c")).allowed
    assert (await limiter.hit("connection", "c")).retry_after_ms == 200


async def test_a_client_that_keeps_trying_gets_the_configured_rate(make: Make,
                                                                   clock: FakeTime) -> None:
    """After the burst, trying every 10 ms for 20 s passes r per second, never more."""
    limiter = make({"connection": Rule(20, 5.0)})
    passed: list[int] = []  # in steps of 10 ms
    for step in range(2000):
        if (await limiter.hit("connection", "c")).allowed:
            passed.append(step)
        clock.advance_ms(10)
    assert passed[:20] == list(range(20))  # the burst
    steady = [step for step in passed if step >= 400]  # from the first window's end on
    assert len(steady) == 5 * 16
    assert all(19 <= b - a <= 21 for a, b in itertools.pairwise(steady))
    # here, never more than a token bucket of 20 and 5/s would let through
    assert all(j - i + 1 <= 20 + 5 * (passed[j] - passed[i]) / 100
               for i in range(len(passed)) for j in range(i, len(passed)))


async def test_waiting_retry_after_on_the_real_clock_lets_the_retry_pass() -> None:
    """No fake clock: a retry after retry_after_ms (plus slack, a lower bound) passes."""
    limiter = RateLimiter("memory://", {"user": Rule(2, 2.0)})
    try:
        assert (await limiter.hit("user", "u")).allowed
        assert (await limiter.hit("user", "u")).allowed
        refused = await limiter.hit("user", "u")
        assert not refused.allowed and 0 < refused.retry_after_ms <= 2001
        await asyncio.sleep(refused.retry_after_ms / 1000 + 0.05)
        assert (await limiter.hit("user", "u")).allowed
    finally:
        await limiter.close()


async def test_hit_all_takes_nothing_when_one_limit_refuses(make: Make) -> None:
    limiter = make({"connection": Rule(20, 5.0), "user": Rule(3, 1.0)})
    for _ in range(3):
        assert await limiter.hit_all([("connection", "c1"), ("user", "alice")]) == ALLOWED
    refused = await limiter.hit_all([("connection", "c2"), ("user", "alice")])
    assert refused == Decision(False, 3001, "user")
    # c2's bucket is untouched: its whole burst is still there
    for _ in range(20):
        assert (await limiter.hit("connection", "c2")).allowed
    assert not (await limiter.hit("connection", "c2")).allowed
    # c1 gave 3 of its 20 to the sends that passed
    for _ in range(17):
        assert (await limiter.hit("connection", "c1")).allowed
    assert not (await limiter.hit("connection", "c1")).allowed


async def test_hit_all_reports_the_longest_wait(make: Make) -> None:
    limiter = make({"connection": Rule(2, 1.0), "user": Rule(3, 1.0)})
    checks = [("connection", "c"), ("user", "u")]
    for _ in range(2):
        assert (await limiter.hit_all(checks)).allowed
    assert await limiter.hit_all(checks) == Decision(False, 2001, "connection")
    assert (await limiter.hit("user", "u")).allowed  # user's third
    assert await limiter.hit_all(checks) == Decision(False, 3001, "user")
    assert await limiter.hit_all([]) == ALLOWED


async def test_costs_and_unknown_kinds(make: Make, clock: FakeTime) -> None:
    limiter = make({"user": Rule(5, 5.0)})
    assert (await limiter.hit("user", "u", cost=3)).allowed
    assert (await limiter.hit("user", "u", cost=3)) == Decision(False, 1001, "user")
    assert (await limiter.hit("user", "u", cost=2)).allowed
    with pytest.raises(ValueError, match=re.escape("cost 6 is outside 1..5")):
        await limiter.hit("user", "u", cost=6)
    with pytest.raises(ValueError, match="cost 0"):
        await limiter.hit_all([("user", "u")], cost=0)
    with pytest.raises(KeyError, match="no rate limit rule for 'ip'; rules: user"):
        await limiter.hit("ip", "127.0.0.1")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Rule, list[tuple[int, int, bool]]]:
    capacity = draw(st.integers(1, 12))
    refill = draw(st.sampled_from([0.25, 0.5, 0.7, 1.0, 2.0, 3.0, 5.0, 7.5]))
    rule = Rule(capacity, refill)
    steps = draw(st.lists(st.tuples(st.integers(0, 3000),
                                    st.integers(1, rule.window_capacity),
                                    st.booleans()), min_size=1, max_size=40))
    return rule, steps


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_retry_after_is_exact_and_never_beats_a_token_bucket_by_more_than_one(
        scenario: tuple[Rule, list[tuple[int, int, bool]]]) -> None:
    """Whatever came before, a refusal's retry_after_ms is the first millisecond that passes.

    Checked through the limiter itself: a retry 2 ms early is refused (and takes nothing),
    one at retry_after_ms passes. And in any span of T seconds, what passed is at most
    ``B + r * T + 1``: one more than a token bucket of the same size and rate (the
    sliding-window counter rounds its weighted count down).
    """
    rule, steps = scenario
    passed: list[tuple[int, int]] = []  # (ms since the start, cost)

    async def run(clock: FakeTime) -> None:
        limiter = RateLimiter("memory://", {"user": rule})

        def took(cost: int) -> None:
            passed.append((round(clock.now * 1000 - START * 1000), cost))

        try:
            for pause_ms, cost, together in steps:
                clock.advance_ms(pause_ms)
                hit = (limiter.hit_all([("user", "u")], cost) if together
                       else limiter.hit("user", "u", cost))
                decision = await hit
                if decision.allowed:
                    assert decision == ALLOWED
                    took(cost)
                    continue
                assert decision.retry_after_ms >= 1 and decision.kind == "user"
                if decision.retry_after_ms > 2:
                    clock.advance_ms(decision.retry_after_ms - 2)
                    early = await limiter.hit("user", "u", cost)
                    assert not early.allowed and early.retry_after_ms <= 2, (clock.now, early)
                    clock.advance_ms(2)
                else:
                    clock.advance_ms(decision.retry_after_ms)
                assert (await limiter.hit("user", "u", cost)).allowed, clock.now
                took(cost)
        finally:
            await limiter.close()

    with fake_time() as clock:
        asyncio.run(run(clock))
    capacity, rate = rule.window_capacity, rule.window_capacity / rule.window_seconds
    for i, (start, _) in enumerate(passed):
        taken = 0
        for end, cost in passed[i:]:
            taken += cost
            assert taken < capacity + rate * (end - start) / 1000 + 1, (start, end, passed)


@pytest.mark.parametrize(("window", "cost", "wait_ms"), [
    # half-way through the window after a full one: 10 * 5 / 10 = 5 weighted, 1 fits now
    ((10, 5.0, 0, 15.0), 1, 0),
    # ... exactly at the budget: the storage refuses (floor(5) + 5 + 1 > 10), so not 0
    ((10, 5.0, 5, 15.0), 1, 1),
    # Redis at the instant the first window ends (pttl == expiry, no previous window):
    # the current count fades out over the next window, a hit of 1 fits 1 ms later
    ((0, 0.0, 10, 10.0), 1, 1),
    # a cost of 5 waits until the previous window's weight drops below 6: 9.5 - 6 s
    ((10, 9.5, 0, 19.5), 5, 3501),
])
def test_retry_after_on_windows_longer_than_a_second(window: tuple[int, float, int, float],
                                                     cost: int, wait_ms: int) -> None:
    """The windows the storages report, for a limit of 10 per 10 s (expiry 10)."""
    item = RateLimitItemPerSecond(10, 10)
    assert ratelimit._retry_after_ms(window, item, cost) == wait_ms


async def test_the_memory_storage_sweeps_expired_counters_at_most_once_a_second(
        clock: FakeTime) -> None:
    """The stock storage scans every key after each hit; Burrow's waits between scans."""
    storage = ratelimit._LocalStorage()
    try:
        await storage.incr("old", 1)
        await asyncio.sleep(0)  # the first sweep runs (nothing expired yet)
        clock.advance(2)
        await storage.incr("new", 1)
        await asyncio.sleep(0)
        assert "old" in storage.storage  # expired, not swept yet: within the second
        assert await storage.get("old") == 0  # (a read still sees it expired)
        await storage.incr("old-again", 1)
        clock.advance(2)
        storage._next_sweep = 0.0  # as if the second had passed
        await storage.incr("newer", 1)
        await asyncio.sleep(0)
        assert "old-again" not in storage.storage and "newer" in storage.storage
    finally:
        if storage.timer is not None:
            storage.timer.cancel()
            await asyncio.gather(storage.timer, return_exceptions=True)


# --- flood -------------------------------------------------------------------------------


class Tick:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_flood_closes_after_the_threshold_within_the_window() -> None:
    tick = Tick()
    flood = Flood(FloodRule(3, 10.0), clock=tick)
    assert not flood.rejected()
    tick.now += 4
    assert not flood.rejected()
    tick.now += 4
    assert flood.rejected()  # the third within 10 s
    assert flood.recent == 3


def test_flood_forgets_rejections_older_than_the_window() -> None:
    tick = Tick()
    flood = Flood(FloodRule(3, 10.0), clock=tick)
    assert not flood.rejected()       # t=0
    tick.now += 1
    assert not flood.rejected()       # t=1
    tick.now += 9
    assert not flood.rejected()       # t=10: t=0 has left the window
    tick.now += 1
    assert not flood.rejected()       # t=11: t=1 has left it too
    assert flood.recent == 2
    tick.now += 0.5
    assert flood.rejected()           # t=10, 11, 11.5
    tick.now += 60
    assert flood.recent == 0


def test_a_flood_threshold_of_one_closes_at_the_first_rejection() -> None:
    assert Flood(FloodRule(1, 1.0), clock=Tick()).rejected()


def test_a_flood_remembers_at_most_its_threshold_of_refusals() -> None:
    """A client that goes on after the threshold costs no more memory."""
    flood = Flood(FloodRule(3, 10.0), clock=Tick())
    for _ in range(50):
        flood.rejected()
    assert flood.recent == 3
