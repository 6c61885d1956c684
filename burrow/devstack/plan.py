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
# Sanic workers of the one gateway process, as compose runs it (BURROW_GATEWAY_WORKERS).
GATEWAY_WORKERS: Final = 2


@dataclass(frozen=True)
class Worker:
    """One worker process: its name (log file, compose service), the consumers it runs,
    and its broker user, whose rights cover those consumers and nothing else."""

    name: str
    consumers: tuple[str, ...]
    user: str

    @property
    def args(self) -> list[str]:
        return list(self.consumers)


WORKERS: Final = (
    Worker("sequencer", ("sequencer",), "burrow-sequencer"),
    Worker("notifier", ("notifier",), "burrow-notifier"),
    Worker("digester", ("digester",), "burrow-digester"),
)


# Optional: delivers backend events as signed HTTP requests (docs/events.md). ./dev up
# starts it only when BURROW_WEBHOOK_URL is set; compose has it under the profile
# "webhooks"; the benchmark does not run it (it measures the chat path).
WEBHOOKS: Final = Worker("webhooks", ("webhooks",), "burrow-webhooks")


def workers(webhooks: bool = False) -> tuple[Worker, ...]:
    """The worker processes to run: :data:`WORKERS`, and :data:`WEBHOOKS` if asked."""
    return (*WORKERS, WEBHOOKS) if webhooks else WORKERS


def worker(name: str) -> Worker:
    """The worker of that name; raises ``KeyError`` for another."""
    for found in (*WORKERS, WEBHOOKS):
        if found.name == name:
            return found
    raise KeyError(name)
