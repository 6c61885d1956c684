"""The bench's sequencer actions, for shards spread over several sequencer processes.

The sequencers share the shard queues out (docs/scaling.md, "Sequencer scale-out"), so
"the active sequencer" is no longer one process. Which process holds which shard is read
two ways: each process's ``burrow_sequencer_shard_active`` (at once: a process counts a
shard as its own from its first delivery; under load that is immediately) and the
management API's single-active-consumer status (authoritative, but it lags up to ~5 s:
the quorum queues report it on their tick).

Actions, each blocking (run them in a thread while the load runs, as
:mod:`bench.faults` does), each returning what it saw for the report:

* :func:`kill_busiest`: ``kill -9`` the sequencer holding the most shards; ``owned_s``
  until every shard has exactly one live holder again (metrics), ``takeover_s`` until the
  API shows every shard with exactly one active consumer, none the victim's;
* :func:`scale_up`: start one more sequencer; ``ready_s``, then ``spread_s`` until the
  shards are spread floor/ceil over every live sequencer, the new one included;
* :func:`scale_down`: SIGTERM the sequencer holding the most shards (goodbye, drain);
  ``exit_s``, and ``spread_s`` until the others hold every shard, spread.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from burrow.devstack.processes import AppProcess, wait_status


class BenchStack(Protocol):
    """What these actions need of :class:`bench.stack.BenchStack` (no import of it:
    the stack calls :func:`kill_busiest`)."""

    sequencers: list[AppProcess]
    workers: dict[str, int]  # worker process name -> its metrics port
    shards: int

    def active_sequencers(self) -> dict[str, str | None]: ...
    def kill9(self, app: AppProcess) -> list[int]: ...
    def start_sequencer(self) -> tuple[AppProcess, str]: ...

TIMEOUT = 30.0  # seconds a handover or spread may take before it is reported as not seen
API_TIMEOUT = 10.0  # for the management API's view of a takeover (it lags up to ~5 s)


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


def live(stack: BenchStack) -> list[AppProcess]:
    """The sequencer processes still running."""
    return [app for app in stack.sequencers if app.exited is None]


def holdings(stack: BenchStack) -> dict[str, set[int]]:
    """Per live sequencer: the shards its metrics say it is active on."""
    found: dict[str, set[int]] = {}
    for app in live(stack):
        text = _metrics(stack.workers[app.name])
        found[app.name] = {int(s.labels["shard"]) for f in text_string_to_metric_families(text)
                           for s in f.samples
                           if s.name == "burrow_sequencer_shard_active" and s.value == 1}
    return found


def handovers(stack: BenchStack) -> int:
    """Handovers so far, summed over the live sequencers."""
    return int(sum(s.value for app in live(stack)
                   for f in text_string_to_metric_families(_metrics(stack.workers[app.name]))
                   for s in f.samples if s.name == "burrow_sequencer_handovers_total"))


def holders(stack: BenchStack) -> dict[int, str | None]:
    """Per shard: the live sequencer active on it. A process's metrics say so from its
    first delivery; a shard no live process claims (no traffic since it moved) is taken
    from the management API; None while two claim it."""
    claims: dict[int, list[str]] = {shard: [] for shard in range(stack.shards)}
    for name, shards in holdings(stack).items():
        for shard in shards:
            claims.setdefault(shard, []).append(name)
    api: dict[str, str | None] | None = None
    found: dict[int, str | None] = {}
    for shard, names in claims.items():
        if not names:
            api = stack.active_sequencers() if api is None else api
            names = [n for n in [api.get(f"chat.seq.{shard}")] if n is not None]
        found[shard] = names[0] if len(names) == 1 else None
    return found


def shares(stack: BenchStack) -> dict[str, list[int]]:
    """Per live sequencer, the shards it holds (:func:`holders`)."""
    found: dict[str, list[int]] = {app.name: [] for app in live(stack)}
    for shard, name in sorted(holders(stack).items()):
        if name is not None:
            found.setdefault(name, []).append(shard)
    return found


def spread(stack: BenchStack, among: list[str]) -> bool:
    """Every shard held by exactly one of *among*, each of them floor/ceil of the shards."""
    owners = holders(stack)
    low = stack.shards // len(among)
    return (all(owners[s] in among for s in range(stack.shards))
            and all(low <= list(owners.values()).count(n) <= low + 1 for n in among))


def busiest(stack: BenchStack) -> AppProcess:
    """The live sequencer holding the most shards (the first started on a tie)."""
    held = shares(stack)
    name = max((app.name for app in live(stack)), key=lambda n: len(held.get(n, [])))
    return next(app for app in stack.sequencers if app.name == name)


def _since(start: float, done: Callable[[], object], timeout: float = TIMEOUT) -> float | None:
    """Seconds from *start* until *done()* is true, or None within *timeout*."""
    ok = stack_poll(done, max(0.0, start + timeout - time.monotonic()))
    return round(time.monotonic() - start, 3) if ok else None


def stack_poll(done: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if done():
                return True
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def kill_busiest(stack: BenchStack) -> dict[str, Any]:
    """``kill -9`` the sequencer holding the most shards; see the module docstring."""
    victim = busiest(stack)
    before = shares(stack)
    start = time.monotonic()
    pids = stack.kill9(victim)
    killed = time.monotonic()
    others = [app.name for app in live(stack)]
    owned = _since(start, lambda: all(n in others for n in holders(stack).values()))

    def taken_over() -> bool:
        active = stack.active_sequencers()
        return all(name is not None and name != victim.name for name in active.values())

    takeover = _since(start, taken_over, API_TIMEOUT)
    return {"victim": victim.name, "pids": pids, "shares_before": before,
            "successor": ", ".join(successors(stack, victim.name)),
            "action_s": round(killed - start, 3), "owned_s": owned, "takeover_s": takeover}


def successors(stack: BenchStack, victim: str) -> list[str]:
    """The live sequencers holding shards now, by their metrics (the broker may be
    restarting: its API is asked only if no process claims a shard)."""
    names = sorted(name for name, shards in holdings(stack).items() if shards and name != victim)
    if names:
        return names
    try:
        return sorted({n for n in stack.active_sequencers().values() if n and n != victim})
    except (OSError, ValueError):
        return []


def scale_up(stack: BenchStack) -> dict[str, Any]:
    """Start one more sequencer; see the module docstring."""
    before = handovers(stack)
    start = time.monotonic()
    app, url = stack.start_sequencer()
    status, _ = wait_status(url, 200, TIMEOUT, alive=app)
    ready = round(time.monotonic() - start, 3) if status == 200 else None
    among = [a.name for a in live(stack)]
    spread_s = _since(start, lambda: spread(stack, among))
    return {"victim": app.name, "ready_s": ready, "spread_s": spread_s,
            "shares": shares(stack), "handovers": handovers(stack) - before}


def scale_down(stack: BenchStack) -> dict[str, Any]:
    """SIGTERM the sequencer holding the most shards; see the module docstring."""
    victim = busiest(stack)
    before = shares(stack)
    start = time.monotonic()
    victim.stop()  # SIGTERM, then waits for the exit (SIGKILL after its timeout)
    exit_s = round(time.monotonic() - start, 3)
    among = [a.name for a in live(stack)]
    spread_s = _since(start, lambda: spread(stack, among))
    return {"victim": victim.name, "exit_code": victim.exited, "exit_s": exit_s,
            "spread_s": spread_s, "shares_before": before,
            "shares": shares(stack)}
