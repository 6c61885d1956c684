"""One measured run of a load against a running stack, whatever the system under test.

Burrow (:mod:`bench.stack`) and the peers (:mod:`bench.peers.stack`) are measured the
same way: sample the stack idle, connect every client, wait until the stack is idle
again, sample, send, drain, sample, summarize. Also the process setup every entry point
needs: a higher fd limit, Ctrl-C and SIGTERM that stop the stack, uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar

from bench import report
from bench.load import LoadConfig, LoadResult

T = TypeVar("T")
OnConnected = Callable[[], Awaitable[None]]


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``uvloop.run(main)``, or ``asyncio.run(main)`` without uvloop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class Stack:
    """A set of processes used as ``with``: started on entry (and stopped again when
    starting fails half-way), stopped on exit, also on Ctrl-C or an exception."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """Ctrl-C is ignored inside: a stack being stopped must stop whole, or it leaves
    processes behind. Outside the main thread there is nothing to mask."""
    try:
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def prepare_process() -> None:
    """C clients are C sockets in this process: lift the soft fd limit to the hard one.
    Ctrl-C and SIGTERM raise KeyboardInterrupt, so the stack's ``with`` stops it (even
    when started with SIGINT ignored, as a background job of a script is)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def measure(config: LoadConfig, pids: Callable[[], Mapping[str, int]],
            load: Callable[[OnConnected], Coroutine[Any, Any, LoadResult]],
            label: str) -> dict[str, Any]:
    """Run *load* (given the on-connected hook) against the stack whose processes
    *pids* names (asked again at the end: a fault run kills and restarts some)."""
    time.sleep(0.5)  # let the servers settle before the idle sample
    first = pids()
    before = report.sample(first)
    connected: dict[str, dict[str, float]] = {}
    settled: list[float] = []

    async def on_connected() -> None:
        settled.append(await report.settle(first))
        connected.update(report.sample(first))
        print(f"bench: {label}: {config.connections} clients in, stack idle after "
              f"{settled[0]:.1f} s; sending {config.rate:g}/s for {config.duration:g}s",
              file=sys.stderr, flush=True)

    result = run_async(load(on_connected))
    after = report.sample(pids())
    summary = report.summarize(result, before, connected, after)
    summary["settle_s"] = round(settled[0], 2) if settled else None
    summary["system"] = label
    return summary


def add_load_arguments(parser: argparse.ArgumentParser, connections: int | None) -> None:
    """The options every load takes, Burrow's or a peer's, with the same meaning."""
    parser.add_argument("--connections", "-C", type=int, default=connections,
                        help=f"WebSocket clients (default {connections or 200}"
                             f"{'' if connections else ', or rooms x room-size'})")
    parser.add_argument("--room-size", "-S", type=int, default=10,
                        help="members per room, all subscribed (default 10)")
    parser.add_argument("--rate", "-M", type=float, default=200.0,
                        help="sends per second, all clients together (default 200)")
    parser.add_argument("--duration", "-D", type=float, default=10.0,
                        help="seconds of sending (default 10)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the stack's temp dir (logs) after the run")
    parser.add_argument("--json", action="store_true",
                        help="also print the JSON report on stdout, after the table")
