"""The product's process set: what ``./dev up``, the benchmark and docker-compose run.

One list, so that the stack people run and the stack the benchmark measures cannot drift
apart (``tests/unit/test_plan.py`` holds the launcher, the benchmark and the compose file
to it). Each worker kind runs in a process of its own, as compose runs one service each:
notification work (database reads, provider calls) then never shares an event loop with
the sequencer, and a stalled provider or a slow notification query backs up the
notifier's queue, not the chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GATEWAY_MODULE: Final = "gateway"
WORKER_MODULE: Final = "consumers"
GATEWAY_USER: Final = "burrow-gateway"
WORKER_USER: Final = "burrow-worker"
# Sanic workers of the one gateway process, as compose runs it (BURROW_GATEWAY_WORKERS).
GATEWAY_WORKERS: Final = 2


@dataclass(frozen=True)
class Worker:
    """One worker process: its name (log file, compose service) and the consumers it runs."""

    name: str
    consumers: tuple[str, ...]

    @property
    def args(self) -> list[str]:
        return list(self.consumers)


WORKERS: Final = (
    Worker("sequencer", ("sequencer",)),
    Worker("notifier", ("notifier",)),
    Worker("digester", ("digester",)),
)


def worker(name: str) -> Worker:
    """The worker of that name; raises ``KeyError`` for another."""
    for found in WORKERS:
        if found.name == name:
            return found
    raise KeyError(name)
