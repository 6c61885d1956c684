"""What Burrow's load and the peers' load share: one schedule, one drain rule, one way
of measuring, so that the reports compare.

The wire format and each client's behaviour are the caller's (:mod:`bench.load` for
Burrow, with reconnects and resends; :mod:`bench.peers.load` for the peers, without);
the phases and what is timed are here.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class LoadConfig(Protocol):
    """What the driver reads of a load's configuration (:class:`bench.load.LoadConfig`)."""

    @property
    def rate(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def drain(self) -> float: ...


class LoadResult(Protocol):
    """What the driver writes into a load's result (:class:`bench.load.LoadResult`)."""

    connect_seconds: float
    setup_seconds: float
    send_started: float
    send_ended: float
    sent: int


async def measure(result: LoadResult, setup_start: float, connect: Callable[[], Awaitable[object]],
                  on_connected: Callable[[], Awaitable[None]] | None,
                  load: Callable[[], Awaitable[None]]) -> None:
    """Connect every client (timed), let the caller sample the idle stack, then run
    *load* (sends and drain) with the GC frozen: a collection in the middle of the send
    phase would be measured as the stack's latency."""
    connect_start = time.monotonic()
    await connect()
    result.connect_seconds = time.monotonic() - connect_start
    result.setup_seconds = time.monotonic() - setup_start
    if on_connected is not None:
        await on_connected()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        await load()
    finally:
        gc.enable()
        gc.unfreeze()


async def paced(config: LoadConfig, result: LoadResult,
                send: Callable[[int], Awaitable[None]]) -> None:
    """Call ``send(k)`` for k = 0 .. rate x duration - 1, send k due at k / rate.

    Late sends go out at once (the schedule does not slip), so a stack that slows down
    gets the same offered load, not less.
    """
    total = int(config.rate * config.duration)
    start = time.monotonic()
    result.send_started = time.time()
    k = 0
    while k < total:
        due = min(total, int((time.monotonic() - start) * config.rate) + 1)
        while k < due:
            await send(k)
            result.sent += 1
            k += 1
        next_due = start + k / config.rate
        await asyncio.sleep(max(0.0, next_due - time.monotonic()))
    result.send_ended = time.time()


async def drain(config: LoadConfig, progress: Callable[[], int],
                done: Callable[[], bool]) -> None:
    """Wait until ``done()``, or until ``progress()`` (frames received so far) stands
    still for max(5 s, drain / 3), or *drain* seconds are over."""
    deadline = time.monotonic() + config.drain
    last_count, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = progress()
        if count != last_count and done():
            return
        if count != last_count:
            last_count, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since > max(5.0, config.drain / 3):
            return
        await asyncio.sleep(0.05)
