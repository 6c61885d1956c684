"""Group small writes that arrive together into one (group commit).

A gateway turns many small events into database writes: a connection arrived, a user's
presence must be settled, a client did something. One write each made the database the
limit (a reconnect storm of thousands of clients, or every send touching presence); one
write per batch does not. :class:`Batches` holds the items that arrive while a write is
in flight and hands them all to the next one, so the batch grows with the load and a
lone item waits for nothing (unless a *linger* is asked for).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Batches(Generic[T]):
    """``batches.add(item)``; *flush* gets every item added since the last call.

    *flush* runs one call at a time and handles its own errors (a database outage is
    logged there, by the caller who knows what it means); anything it lets through is
    logged here and the next batch still runs. *linger* seconds are waited before each
    flush, to gather more items when a little delay costs nothing (activity times).
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], name: str,
                 linger: float = 0.0) -> None:
        self._flush = flush
        self._name = name
        self._linger = linger
        self._items: list[T] = []
        self._flushed: asyncio.Future[None] | None = None  # of the batch being gathered
        self._task: asyncio.Task[None] | None = None

    def add(self, item: T) -> None:
        """Queue *item* for the next flush, without waiting for it."""
        self._items.append(item)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def put(self, item: T) -> None:
        """Queue *item*, then wait until the flush that took it has ended."""
        self.add(item)
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._flushed)

    async def close(self) -> None:
        """Stop: what is queued is dropped, and whoever waits for it is released."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._release(self._flushed)
        self._items, self._flushed = [], None

    async def _run(self) -> None:
        try:
            while self._items:
                if self._linger:
                    await asyncio.sleep(self._linger)
                items, flushed = self._items, self._flushed
                self._items, self._flushed = [], None
                try:
                    await self._flush(items)
                except Exception:
                    log.exception("%s: a batch of %d failed", self._name, len(items))
                finally:
                    self._release(flushed)
        finally:
            self._task = None

    @staticmethod
    def _release(flushed: asyncio.Future[None] | None) -> None:
        if flushed is not None and not flushed.done():
            flushed.set_result(None)
