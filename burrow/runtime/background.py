"""Tasks a process runs beside its work (index creation, sweeps), stopped with a bound.

Why not Sanic's ``app.add_task``: at shutdown Sanic (25.12) cancels the tasks registered
with it and then waits for them in ``shutdown_tasks`` with the event loop no longer
running, so a task whose cancellation needs the loop once more never finishes, and the
wait spins (its float countdown never reaches exactly 0) until SIGKILL. PyMongo's server
selection is such a task: a gateway SIGTERMed within milliseconds of "Worker ready", while
its ``ensure-indexes`` was still selecting a server, hung about one stop in 40.
:meth:`Background.stop` cancels from a shutdown listener, where the loop runs, and waits
a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

STOP_TIMEOUT = 2.0  # seconds a cancelled task gets to finish before the process goes on


class Background:
    """The process's own background tasks; :meth:`stop` cancels them all."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run *work* as a task named *name* until it returns or :meth:`stop`."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    @property
    def running(self) -> list[str]:
        """The names of the tasks not finished yet."""
        return sorted(task.get_name() for task in self._tasks)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task %s failed", task.get_name(), exc_info=exc)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Cancel every task and wait at most *timeout* seconds for them to end.

        Safe to call more than once (Sanic may run a stop listener twice). A task still
        running after *timeout* is left behind with a warning: the process exits anyway,
        and what these tasks do is idempotent work the next start does again.
        """
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            log.warning("stopping with background tasks still cancelling after %.1fs: %s",
                        timeout, ", ".join(sorted(t.get_name() for t in pending)))
