"""Slow mode's counter (``RateLimiter.once_per``, docs/rate-limits.md): exactly one hit
per N seconds per key, an exact ``retry_after_ms``, nothing taken by a refusal, a slot
given back, and keys that keep rooms, users and intervals apart. On a fake clock: the
memory storage and the limiter read the wall clock through their modules' ``time``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from unittest import mock

import limits.aio.storage.memory
import pytest

from burrow.runtime import ratelimit
from burrow.runtime.ratelimit import RateLimiter

START = 2520.0 * 700_000


class Clock:
    """``time`` for both modules: a settable wall clock, the real monotonic one."""

    def __init__(self) -> None:
        self.now = START

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.fixture
async def limiter() -> AsyncIterator[tuple[RateLimiter, Clock]]:
    clock = Clock()
    with mock.patch.object(limits.aio.storage.memory, "time", clock), \
            mock.patch.object(ratelimit, "time", clock):
        made = RateLimiter("memory://", {})
        try:
            yield made, clock
        finally:
            await made.close()


async def test_one_per_interval_exactly_with_the_wait_to_the_millisecond(
        limiter: tuple[RateLimiter, Clock]) -> None:
    slow, clock = limiter
    assert (await slow.once_per("slow_mode", "hall/bob", 30)).allowed
    clock.now += 12.25
    refused = await slow.once_per("slow_mode", "hall/bob", 30)
    assert (refused.allowed, refused.kind) == (False, "slow_mode")
    assert refused.retry_after_ms == 17_751  # 17.75 s left, the first ms after it
    clock.now += 17.749  # refusals took nothing: still the first hit's window
    assert not (await slow.once_per("slow_mode", "hall/bob", 30)).allowed
    clock.now += 0.002
    assert (await slow.once_per("slow_mode", "hall/bob", 30)).allowed


async def test_keys_and_intervals_are_apart(limiter: tuple[RateLimiter, Clock]) -> None:
    slow, _ = limiter
    assert (await slow.once_per("slow_mode", "hall/bob", 30)).allowed
    assert (await slow.once_per("slow_mode", "hall/carol", 30)).allowed
    assert (await slow.once_per("slow_mode", "den/bob", 30)).allowed
    # a changed interval is a new key, as a changed rule is (docs/rate-limits.md)
    assert (await slow.once_per("slow_mode", "hall/bob", 60)).allowed
    assert not (await slow.once_per("slow_mode", "hall/bob", 30)).allowed


async def test_a_slot_given_back_is_free_again(limiter: tuple[RateLimiter, Clock]) -> None:
    slow, _ = limiter
    assert (await slow.once_per("slow_mode", "hall/bob", 30)).allowed
    await slow.give_back("slow_mode", "hall/bob", 30)
    assert (await slow.once_per("slow_mode", "hall/bob", 30)).allowed
    assert not (await slow.once_per("slow_mode", "hall/bob", 30)).allowed
