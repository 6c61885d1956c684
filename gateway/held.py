"""Tasks the node starts and nobody may cancel, held until they end.

Some work must run to its end even when whoever started it stops waiting: a bind or an
unbind (aiormq closes the whole channel when an RPC is cancelled in flight), the cleanup
of a client whose handler Sanic cancelled, a presence announcement. The node's pieces
start such work as tasks and hand them here: a task nobody references may be collected
before it ends, and the node's stop waits for the last of them (:meth:`Held.wait`).
"""

from __future__ import annotations

import asyncio


class Held:
    """The tasks given to :meth:`hold` that have not ended yet."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def hold(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self) -> None:
        """Wait for every task held now, whatever each of them ends with."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
