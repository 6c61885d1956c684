"""Rate limits: token-bucket rules on top of the ``limits`` package's async API.

A :class:`Rule` is what people think in: a burst capacity ``B`` and a refill rate ``r``
per second ("20/5": 20 at once, then 5 per second). ``limits`` 5.8 has no token bucket,
so each rule runs as its closest relative, the **sliding-window counter**, with ``B``
hits per window of ``B / r`` seconds: a fresh key takes a burst of ``B``, and a key that
keeps hitting gets ``B`` per window, i.e. ``r`` per second, because the previous
window's count is weighted down linearly while the current one runs (tokens come back a
fraction at a time, not all at once as with a fixed or moving window). The difference to
a real bucket: after a burst, the first refill can take up to one window instead of
``1 / r`` seconds. docs/rate-limits.md has the numbers.

Windows are whole seconds in ``limits``. When ``B / r`` is not a whole number, the window
is ``B / r`` rounded to whole seconds (at least 1) and the capacity becomes ``r`` times
that window, rounded (at least 1): the sustained rate stays ``r`` (within half a hit per
window) and the burst moves by at most ``r / 2``. Scaling both ``B`` and the window by the
smallest factor that makes the window whole would keep ``r`` exact but can multiply the
burst (20/3 would become 60 per 20 s), which defeats the point of a burst limit.
:attr:`Rule.window_seconds` and :attr:`Rule.window_capacity` are what really runs.

Storage: ``memory://`` counts per process (each Sanic worker, each gateway on its own);
a shared Redis (``redis://host:port``, run as ``limits``' ``async+redis`` storage through
coredis) makes one limit cluster-wide. A plain scheme is turned into its ``async+`` form,
so ``memory://`` never gets the thread-based synchronous storage.

**Fail-open.** When the shared storage does not answer (refused, reset, or slower than
*timeout*), requests are **allowed** and one warning is logged per outage; the storage is
left alone for *outage_backoff* seconds before it is tried again, so an outage costs each
request nothing instead of a timeout. A chat that stops because its rate limiter's cache
is down is a bigger outage than a few minutes without limits; the WebSocket frame size,
the send timeout and the per-client buffer still bound what one client can do.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import (
    MemoryStorage,
    MovingWindowSupport,
    SlidingWindowCounterSupport,
    Storage,
)
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

log = logging.getLogger(__name__)

#: Kinds the gateway limits: sends per connection, sends per user (all their connections),
#: handshakes and HTTP requests per client IP.
CONNECTION, USER, IP = "connection", "user", "ip"
FRAMES = "frames"  # a connection's frames other than sends
MEMBERS = "members"  # members a user adds to rooms (creations included)

# Async storages that have the sliding-window counter and a client Burrow installs
# (coredis for the redis family). MongoDB's needs the deprecated motor and its
# sliding-window update fails on SecantusDB; memcached would need another client.
_SCHEMES = frozenset({"async+memory", "async+redis", "async+rediss", "async+redis+unix",
                      "async+redis+cluster", "async+redis+sentinel"})
_NAMESPACE = "burrow"
_T = TypeVar("_T")


def async_storage_uri(raw: str) -> str:
    """*raw* as the ``async+`` storage URI ``limits`` builds; ValueError if unusable."""
    uri = raw.strip()
    scheme, sep, _ = uri.partition("://")
    if not sep:
        raise ValueError("expected a storage URI: memory:// or redis://HOST:PORT")
    if not scheme.startswith("async+"):
        uri, scheme = f"async+{uri}", f"async+{scheme}"
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported storage {raw.partition('://')[0]!r}: use memory:// "
                         "(one process) or redis://HOST:PORT (shared by all gateways)")
    return uri


def _positive_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text.strip()!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive number, not {text.strip()!r}")
    return value


def _positive_int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} {text.strip()!r} is not a whole number") from None
    if value <= 0:
        raise ValueError(f"{what} must be positive, not {value}")
    return value


@dataclass(frozen=True)
class Rule:
    """A token bucket: *capacity* hits at once, refilled at *refill_per_second*."""

    capacity: int
    refill_per_second: float

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {self.capacity}")
        if not (math.isfinite(self.refill_per_second) and self.refill_per_second > 0):
            raise ValueError(f"refill must be a positive number, not {self.refill_per_second}")

    @classmethod
    def parse(cls, raw: str) -> Rule:
        """``"20/5"``: a burst of 20, then 5 per second."""
        capacity, sep, refill = raw.partition("/")
        if not sep:
            raise ValueError(f"expected CAPACITY/REFILL_PER_SECOND, e.g. 20/5 (a burst of 20, "
                             f"then 5 per second), not {raw!r}")
        return cls(_positive_int(capacity, "capacity"), _positive_number(refill, "refill"))

    @property
    def window_seconds(self) -> int:
        """The sliding window that runs: ``capacity / refill`` in whole seconds, at least 1."""
        return max(1, math.floor(self.capacity / self.refill_per_second + 0.5))

    @property
    def window_capacity(self) -> int:
        """Hits per :attr:`window_seconds` that run: the refill over the window, at least 1."""
        return max(1, math.floor(self.refill_per_second * self.window_seconds + 0.5))

    def __str__(self) -> str:
        return f"{self.capacity}/{self.refill_per_second:g}"


@dataclass(frozen=True)
class Decision:
    """The answer to a hit: allowed, or refused until *retry_after_ms* from now.

    *kind* names the limit that refused (the one with the longest wait), for the error
    frame and the metrics.
    """

    allowed: bool
    retry_after_ms: int = 0
    kind: str | None = None


ALLOWED = Decision(True)

# One window as the storage reports it: previous count, seconds until the previous
# window's weight reaches 0, current count, seconds until the current count expires.
_Window = tuple[int, float, int, float]


def _retry_after_ms(window: _Window, item: RateLimitItem, cost: int) -> int:
    """Milliseconds until a hit of *cost* would pass (0: it passes now).

    Derived from the sliding-window counter's own rule (both the memory storage and the
    Redis script refuse when ``floor(previous * previous_ttl / expiry) + current + cost``
    exceeds the amount), so the answer is exact for cost 1 and for larger costs alike,
    unlike ``get_window_stats``, which only says when the next single hit frees up.
    The weighted count never grows while nobody hits, so the wait is the first moment it
    drops below the budget: either while the previous window fades out, or after the
    current window rolls over and fades out in its turn.
    """
    previous, previous_ttl, current, current_ttl = window
    expiry = item.get_expiry()
    # Seconds left in the current window: its counter lives one extra window.
    left = current_ttl - expiry if current_ttl > expiry else (previous_ttl if previous else 0.0)
    budget = item.amount - cost + 1  # the weighted count must stay below this
    room = budget - current
    if room > 0:
        if previous * left / expiry < room:
            return 0
        wait = left - room * expiry / previous
    else:
        wait = left + expiry - budget * expiry / current
    # The first whole millisecond strictly after the wait; a wait that lands on a
    # millisecond up to float noise gets the next one, so the retry is never 1 ms early.
    return math.floor(max(wait, 0.0) * 1000 + 0.001) + 1


class _LocalStorage(MemoryStorage):
    """``limits``' async memory storage, sweeping expired counters at most once a second.

    The stock one starts a sweep over *every* key after each hit that finds the previous
    sweep done, i.e. about once per event-loop turn in a busy gateway: with 10,000 keys
    that made a hit ~40 times slower. Counters are checked for expiry when read, so the
    sweep only frees memory and can wait. (Subclassed, not registered: ``STORAGE_SCHEME``
    is not redefined, so ``async+memory://`` elsewhere still gets the stock class. If a
    later ``limits`` renames the private hook, this override is simply not called.)
    """

    sweep_every = 1.0
    _next_sweep = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_every
            await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]  # mangled


class RateLimiter:
    """Token-bucket limits by kind ("connection", "user", "ip") over one storage.

    Every gateway worker builds one from the same *storage_uri* and *rules*; with a shared
    storage their counts add up, with ``memory://`` each counts alone.
    """

    def __init__(self, storage_uri: str, rules: Mapping[str, Rule], *,
                 timeout: float = 0.5, outage_backoff: float = 2.0) -> None:
        self.uri = async_storage_uri(storage_uri)
        storage = (_LocalStorage() if self.uri.startswith("async+memory:")
                   else storage_from_string(self.uri))
        if not (isinstance(storage, Storage) and isinstance(storage, SlidingWindowCounterSupport)):
            raise TypeError(f"{_redacted(self.uri)} is not an async sliding-window storage")
        self._storage: Storage = storage
        self._windows = cast(SlidingWindowCounterSupport, storage)
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        # Both storages Burrow takes have the moving window (exact "one per N s": slow mode)
        self._moving = MovingWindowRateLimiter(storage)
        self.rules = dict(rules)
        self._items = {kind: RateLimitItemPerSecond(rule.window_capacity, rule.window_seconds,
                                                    namespace=_NAMESPACE)
                       for kind, rule in self.rules.items()}
        self._timeout = timeout
        self._backoff = outage_backoff
        # The in-process storage cannot be unreachable; anything it raises is a bug.
        self._outage_errors: tuple[type[BaseException], ...] = (
            () if isinstance(storage, MemoryStorage)
            else (StorageError, OSError, TimeoutError, *_as_tuple(storage.base_exceptions)))
        self._down_until = 0.0
        self._down = False
        # Several round trips at once pay off against a server; in process, gather's tasks
        # only cost time.
        self._remote = not isinstance(storage, MemoryStorage)

    @property
    def available(self) -> bool:
        """False while the storage is considered down (requests are let through)."""
        return not self._down

    async def hit(self, kind: str, key: str, cost: int = 1) -> Decision:
        """Take *cost* from the *kind* bucket of *key*, or refuse without taking anything."""
        item = self._item(kind, cost)
        return await self._guarded(self._hit_one(item, kind, key, cost))

    async def hit_all(self, checks: Sequence[tuple[str, str]], cost: int = 1) -> Decision:
        """Take *cost* from every ``(kind, key)`` bucket only if all of them have it.

        All are tested first, so a send refused by the user's limit does not also drain
        the connection's. The refusal carries the longest wait, since a retry needs every
        bucket. Two requests racing between test and hit can both pass the test; the
        loser is refused and may have taken from the buckets hit before it lost.
        """
        items = [(self._item(kind, cost), kind, key) for kind, key in checks]
        if not items:
            return ALLOWED
        return await self._guarded(self._hit_many(items, cost))

    async def once_per(self, kind: str, key: str, seconds: int) -> Decision:
        """One hit per *seconds* for *key*, exactly (slow mode: docs/rate-limits.md).

        A moving window of 1, not a rule's sliding-window counter, which would let two
        hits through across a window's turn. Keyed like the rules
        (``burrow/<kind>/<key>/1/<seconds>/second``) in the same storage, so it holds
        across workers and gateways with a shared one, and fails open the same way. A
        refused hit takes nothing; ``retry_after_ms`` is when the window frees.
        """
        item = RateLimitItemPerSecond(1, seconds, namespace=_NAMESPACE)
        return await self._guarded(self._once(item, kind, key))

    async def give_back(self, kind: str, key: str, seconds: int) -> None:
        """Undo the :meth:`once_per` hit of *key* (what it guarded did not happen)."""
        item = RateLimitItemPerSecond(1, seconds, namespace=_NAMESPACE)
        await self._guarded(self._clear(item, kind, key))

    async def close(self) -> None:
        """Stop the storage's background work and drop its connections.

        ``limits`` has no close of its own: the memory storage keeps an expiry task, the
        Redis storage a connection pool, and either would outlive the loop otherwise.
        """
        timer = getattr(self._storage, "timer", None)
        if isinstance(timer, asyncio.Task) and not timer.done():
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()
            await asyncio.sleep(0)  # let the transports finish closing on this loop

    # --- internals ------------------------------------------------------------------

    def _item(self, kind: str, cost: int) -> RateLimitItem:
        try:
            item = self._items[kind]
        except KeyError:
            raise KeyError(f"no rate limit rule for {kind!r}; rules: "
                           f"{', '.join(sorted(self._items)) or 'none'}") from None
        if not 1 <= cost <= item.amount:
            raise ValueError(f"cost {cost} is outside 1..{item.amount} of the {kind!r} limit")
        return item

    async def _window(self, item: RateLimitItem, kind: str, key: str) -> _Window:
        return await self._windows.get_sliding_window(item.key_for(kind, key), item.get_expiry())

    async def _refusal(self, item: RateLimitItem, kind: str, key: str, cost: int) -> Decision:
        wait = _retry_after_ms(await self._window(item, kind, key), item, cost)
        return Decision(False, max(1, wait), kind)

    async def _once(self, item: RateLimitItem, kind: str, key: str) -> Decision:
        if await self._moving.hit(item, kind, key):
            return ALLOWED
        start, _ = await cast(MovingWindowSupport, self._storage).get_moving_window(
            item.key_for(kind, key), item.amount, item.get_expiry())
        wait = start + item.get_expiry() - time.time()
        return Decision(False, max(1, math.floor(wait * 1000) + 1), kind)

    async def _clear(self, item: RateLimitItem, kind: str, key: str) -> Decision:
        await self._moving.clear(item, kind, key)
        return ALLOWED

    async def _hit_one(self, item: RateLimitItem, kind: str, key: str, cost: int) -> Decision:
        if await self._strategy.hit(item, kind, key, cost=cost):
            return ALLOWED
        return await self._refusal(item, kind, key, cost)

    async def _hit_many(self, items: list[tuple[RateLimitItem, str, str]],
                        cost: int) -> Decision:
        windows = await self._each([self._window(item, kind, key) for item, kind, key in items])
        wait, kind = max((_retry_after_ms(window, item, cost), kind)
                         for window, (item, kind, _) in zip(windows, items, strict=True))
        if wait:
            return Decision(False, wait, kind)
        hits = await self._each([self._strategy.hit(item, kind, key, cost=cost)
                                 for item, kind, key in items])
        for hit, (item, kind, key) in zip(hits, items, strict=True):
            if not hit:
                return await self._refusal(item, kind, key, cost)
        return ALLOWED

    async def _each(self, works: list[Coroutine[Any, Any, _T]]) -> list[_T]:
        if not self._remote:
            return [await work for work in works]
        results = await asyncio.gather(*works, return_exceptions=True)  # none left running
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return cast(list[_T], results)

    async def _guarded(self, work: Coroutine[Any, Any, Decision]) -> Decision:
        """Run *work* against the storage, failing open while the storage is down."""
        if not self._remote:
            return await work
        if self._down:
            now = time.monotonic()
            if now < self._down_until:
                work.close()  # never awaited: the storage is left alone
                return ALLOWED
            self._down_until = now + self._backoff  # this request probes, others still pass
        try:
            async with asyncio.timeout(self._timeout):
                decision = await work
        except self._outage_errors as exc:
            if not self._down:
                log.warning("rate-limit storage %s is unreachable (%s: %s); allowing all "
                            "requests until it answers", _redacted(self.uri),
                            type(exc).__name__, exc)
            self._down = True
            self._down_until = time.monotonic() + self._backoff
            return ALLOWED
        if self._down:
            log.info("rate-limit storage %s answers again; limits apply", _redacted(self.uri))
            self._down = False
        return decision


def _as_tuple(exceptions: type[Exception] | tuple[type[Exception], ...]
              ) -> tuple[type[Exception], ...]:
    return exceptions if isinstance(exceptions, tuple) else (exceptions,)


def _redacted(uri: str) -> str:
    """*uri* without its password, for logs."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class FloodRule:
    """*rejections* refused requests within *window_seconds* close a connection (4429)."""

    rejections: int
    window_seconds: float

    def __post_init__(self) -> None:
        if self.rejections < 1:
            raise ValueError(f"rejections must be at least 1, not {self.rejections}")
        if not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise ValueError(f"window must be a positive number, not {self.window_seconds}")

    @classmethod
    def parse(cls, raw: str) -> FloodRule:
        """``"50/10"``: 50 refused requests within 10 seconds close the connection."""
        rejections, sep, seconds = raw.partition("/")
        if not sep:
            raise ValueError(f"expected REJECTIONS/SECONDS, e.g. 50/10 (50 refused sends "
                             f"within 10 s close the connection), not {raw!r}")
        return cls(_positive_int(rejections, "rejections"),
                   _positive_number(seconds, "window"))


class Flood:
    """Counts one connection's refused requests; says when it is flooding.

    A client that keeps sending into a closed bucket costs the gateway a refusal frame
    per attempt; one that ignores ``retry_after_ms`` that often is broken or hostile, and
    closing it (4429) is cheaper. Pure: the caller gives the clock (monotonic seconds).
    """

    def __init__(self, rule: FloodRule, clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self._clock = clock
        self._times: deque[float] = deque(maxlen=rule.rejections)

    def rejected(self) -> bool:
        """Record one refusal now; True when the connection should be closed."""
        now = self._clock()
        self._forget(now)
        self._times.append(now)
        return len(self._times) >= self.rule.rejections

    @property
    def recent(self) -> int:
        """Refusals within the window, as of now."""
        self._forget(self._clock())
        return len(self._times)

    def _forget(self, now: float) -> None:
        horizon = now - self.rule.window_seconds
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
