"""What a worker process runs: a consumer is started on the broker and drained on stop.

:class:`~queues.worker.WorkerProcess` owns the process (links, probes, signals); each
consumer owns its queues. ``start`` returns once consuming has begun; ``drain`` stops
taking deliveries, finishes and acks what is in hand, and returns. Deliveries not yet
taken stay unacked and go to another consumer (or back to this one after a restart).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings


class Consumer(Protocol):
    async def start(self, runtime: Runtime) -> None: ...

    async def drain(self) -> None: ...


ConsumerFactory = Callable[[Settings], Consumer]
