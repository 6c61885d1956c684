"""The fault mode's schedule: ``python -m bench --faults`` (2 gateways, 2 sequencers).

While the clients send (D seconds from the first send), at

* 25 % of D: ``kill -9`` gateway-0, manager and worker; it stays dead. Its clients see
  their connection end, reconnect to gateway-1 and resume (:mod:`bench.load`);
* 50 % of D: ``kill -9`` the active sequencer: the one holding the most shard queues
  (:func:`bench.sequencers.kill_busiest`; the sequencers share the shards out, so under
  load the two hold two each); the other takes its shards over;
* 75 % of D: restart RabbitMQ: stop (SIGTERM, a clean shutdown) and start again on the
  same ports and data directory. Gateways and sequencers reconnect by themselves; the
  clients keep their connections and resend what gets ``timeout``/``unavailable``.

Each fault is recorded (``LoadResult.faults``) with its wall time (``time``, the moment
the action began), its offset from the first send (``at_s``), what the action reported
(victim, pids, sequencer takeover, broker down time) and a CPU sample of the stack just
before it (for the report's CPU figures of processes that the fault ends).
:mod:`bench.report` computes each fault's recovery time from the deliveries.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import report, sequencers
from bench.load import LoadResult
from bench.stack import BenchStack


@dataclass(frozen=True)
class Step:
    at: float                                   # fraction of the send phase
    name: str
    action: Callable[[BenchStack], dict[str, Any]]


SCHEDULE: tuple[Step, ...] = (
    Step(0.25, "kill -9 gateway-0", lambda stack: stack.kill_gateway(0)),
    Step(0.50, "kill -9 the active sequencer", lambda stack: stack.kill_active_sequencer()),
    Step(0.75, "restart RabbitMQ (stop + start)", lambda stack: stack.restart_rabbitmq()),
)


# ``--scale``: the sequencers' handovers under load (2 sequencers at the start): one more
# joins and takes its share, the busiest leaves gracefully (goodbye, drain), then the
# busiest is killed; the report gives each step's spread time and delivery recovery.
SCALE: tuple[Step, ...] = (
    Step(0.25, "start one more sequencer", sequencers.scale_up),
    Step(0.55, "SIGTERM the sequencer holding the most shards", sequencers.scale_down),
    Step(0.80, "kill -9 the sequencer holding the most shards", sequencers.kill_busiest),
)


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


async def _inject(stack: BenchStack, step: Step, wall_start: float,
                  result: LoadResult) -> None:
    cpu = await asyncio.to_thread(report.sample, stack.pids())
    began = time.time()
    _log(f"fault at {began - wall_start:.2f} s: {step.name}")
    record: dict[str, Any] = {"fault": step.name, "time": began,
                              "at_s": round(began - wall_start, 3), "cpu_before": cpu}
    result.faults.append(record)
    try:
        record.update(await asyncio.to_thread(step.action, stack))
    except Exception as exc:  # noqa: BLE001 - a failed fault is reported, not fatal
        record["failed"] = f"{type(exc).__name__}: {exc}"
        _log(f"fault {step.name!r} failed: {record['failed']}")
    record["done_s"] = round(time.time() - began, 3)
    details = {k: v for k, v in record.items()
               if k not in ("fault", "time", "at_s", "cpu_before")}
    _log(f"fault {step.name!r} done: {details}")


async def run_schedule(stack: BenchStack, duration: float, result: LoadResult,
                       schedule: tuple[Step, ...] = SCHEDULE) -> None:
    """Inject every fault of *schedule* at its time, each in a thread of its own (an
    action that waits, such as the sequencer takeover check, does not delay the next
    fault); returns when every action is done (RabbitMQ ready again). Started by
    :func:`bench.load.run_load` with the first send."""
    start = time.monotonic()
    wall_start = time.time()
    running: list[asyncio.Task[None]] = []
    try:
        for step in schedule:
            await asyncio.sleep(max(0.0, start + step.at * duration - time.monotonic()))
            running.append(asyncio.create_task(_inject(stack, step, wall_start, result),
                                               name=f"fault {step.name}"))
        await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()  # only an interrupted run gets here with tasks still running
