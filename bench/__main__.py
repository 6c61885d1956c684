"""Run the benchmark: ``python -m bench`` (``./dev bench`` does it in the venv).

Starts a private stack (RabbitMQ, the embedded database, G gateways, one sequencer) on
free loopback ports, drives it with C WebSocket clients in rooms of S at M sends/s for
D seconds, stops everything, prints a Markdown table and writes
``bench/results/<timestamp>.json`` and ``bench/results/latest.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.load import LoadConfig, run_load
from bench.stack import BenchStack, StackFailed

RESULTS = Path(__file__).resolve().parent / "results"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(config: LoadConfig, gateways: int, results: Path, keep: bool = False) -> dict[str, Any]:
    """One whole run; returns the report (also written under *results*)."""
    with BenchStack(gateways=gateways, keep=keep) as stack:
        print(f"bench: stack up in {stack.directory} ({gateways} gateways, 1 sequencer)",
              file=sys.stderr, flush=True)
        time.sleep(0.5)  # let the gateways settle before the idle sample
        pids = stack.pids()
        before = report.sample(pids)
        connected: dict[str, dict[str, float]] = {}

        settled: list[float] = []

        async def on_connected() -> None:
            settled.append(await report.settle(pids))
            connected.update(report.sample(pids))
            print(f"bench: {config.connections} clients subscribed, stack idle after "
                  f"{settled[0]:.1f} s; sending {config.rate:g}/s for {config.duration:g}s",
                  file=sys.stderr, flush=True)

        runner: Any = asyncio.run
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:
            pass
        result = runner(run_load(config, [g.http_url for g in stack.gateways],
                                 [g.ws_url for g in stack.gateways], stack.jwt_secret,
                                 on_connected=on_connected))
        after = report.sample(pids)
        summary = report.summarize(result, before, connected, after)
        summary["settle_s"] = round(settled[0], 2) if settled else None
    path, table = report.write(summary, results)
    print(table)
    print(f"bench: wrote {path} and {results / 'latest.md'}", file=sys.stderr)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", "-C", type=int, default=None,
                        help="WebSocket clients (default 200, or rooms x room-size)")
    parser.add_argument("--rooms", "-R", type=int, default=None,
                        help="rooms (default connections / room-size; must match it)")
    parser.add_argument("--room-size", "-S", type=int, default=10,
                        help="members per room, all subscribed (default 10)")
    parser.add_argument("--rate", "-M", type=float, default=200.0,
                        help="sends per second, all clients together (default 200)")
    parser.add_argument("--duration", "-D", type=float, default=10.0,
                        help="seconds of sending (default 10)")
    parser.add_argument("--gateways", "-G", type=int, default=2,
                        help="gateway processes (default 2)")
    parser.add_argument("--drain", type=float, default=15.0,
                        help="at most this many seconds to wait for the last deliveries")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"directory of the reports (default {RESULTS})")
    parser.add_argument("--keep", action="store_true",
                        help="keep the stack's temp dir (logs) after the run")
    parser.add_argument("--json", action="store_true",
                        help="also print the JSON report on stdout, after the table")
    args = parser.parse_args(argv)
    if args.connections is None:
        args.connections = 200 if args.rooms is None else args.rooms * args.room_size
    if args.rooms is not None and args.rooms * args.room_size != args.connections:
        parser.error("rooms x room-size must equal connections")
    if args.connections < 1 or args.room_size < 1 or args.gateways < 1 or args.rate <= 0:
        parser.error("connections, room-size, gateways and rate must be positive")
    if args.room_size > 1001:
        parser.error("room-size is at most 1001 (POST /v1/rooms takes 1000 members)")
    config = LoadConfig(connections=args.connections, room_size=args.room_size,
                        rate=args.rate, duration=args.duration, drain=args.drain)
    _raise_fd_limit()
    # Ctrl-C and SIGTERM stop the stack (even when started with SIGINT ignored, as a
    # background job of a script is)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run(config, args.gateways, args.results, keep=args.keep)
    except StackFailed as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; the stack is stopped")
    if args.json:
        print(json.dumps(summary, indent=2))
    ok = summary["loss"] == summary["duplicates"] == summary["order_violations"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
