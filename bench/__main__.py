"""Run the benchmark: ``python -m bench`` (``./dev bench`` does it in the venv).

Starts a private stack (RabbitMQ, the embedded database, G gateways, one sequencer) on
free loopback ports, drives it with C WebSocket clients in rooms of S at M sends/s for
D seconds, stops everything, prints a Markdown table and writes
``bench/results/<timestamp>.json`` and ``bench/results/latest.md``.

``--faults``: the same run with 2 gateways and 2 sequencers while :mod:`bench.faults`
kills gateway-0 and the active sequencer (kill -9) and restarts RabbitMQ; the report
adds each fault's recovery time, and acked-but-lost and gaps must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from bench import faults as fault_mode
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


def failures(summary: dict[str, Any]) -> list[str]:
    """What makes the run fail (exit status 1): the names of the non-zero counts."""
    counts = ["acked_but_lost", "gaps", "duplicates", "order_violations", "stored_twice"]
    if not summary.get("faults"):
        counts.append("loss")  # with faults, a send still unacked at the end may be unstored
    bad = [name for name in counts if summary.get(name)]
    if summary.get("faults") and not summary.get("faults_recovered"):
        bad.append("unrecovered faults")
    return bad


def run(config: LoadConfig, gateways: int, results: Path, keep: bool = False,
        faults: bool = False) -> dict[str, Any]:
    """One whole run; returns the report (also written under *results*).

    *faults*: 2 sequencers (one active, one standby) and :data:`bench.faults.SCHEDULE`
    during the send phase (the caller passes at least 2 gateways).
    """
    sequencers = 2 if faults else 1
    with BenchStack(gateways=gateways, keep=keep, sequencers=sequencers) as stack:
        print(f"bench: stack up in {stack.directory} ({gateways} gateways, {sequencers} "
              f"sequencer{'s' if sequencers > 1 else ''})", file=sys.stderr, flush=True)
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
        during = partial(fault_mode.run_schedule, stack, config.duration) if faults else None
        result = runner(run_load(config, [g.http_url for g in stack.gateways],
                                 [g.ws_url for g in stack.gateways], stack.jwt_secret,
                                 on_connected=on_connected, during_send=during))
        after = report.sample(stack.pids())  # without the killed, with the restarted
        summary = report.summarize(result, before, connected, after)
        summary["settle_s"] = round(settled[0], 2) if settled else None
        if faults:  # a shard that stopped consuming shows here
            try:
                summary["shard_queues_at_end"] = stack.shard_queues()
            except (OSError, ValueError) as exc:
                summary["shard_queues_at_end"] = f"management API: {exc}"
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
    parser.add_argument("--drain", type=float, default=None,
                        help="at most this many seconds to wait for the last deliveries "
                             "(default 15, with --faults 60: counted after the last fault)")
    parser.add_argument("--faults", action="store_true",
                        help="kill -9 gateway-0 at 25%% of D, the active sequencer at 50%%, "
                             "restart RabbitMQ at 75%%; implies 2 gateways (at least) and "
                             "2 sequencers (bench/README.md, Fault mode)")
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
    if args.faults:
        args.gateways = max(2, args.gateways)
    if args.drain is None:
        args.drain = 60.0 if args.faults else 15.0
    config = LoadConfig(connections=args.connections, room_size=args.room_size,
                        rate=args.rate, duration=args.duration, drain=args.drain)
    _raise_fd_limit()
    # Ctrl-C and SIGTERM stop the stack (even when started with SIGINT ignored, as a
    # background job of a script is)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run(config, args.gateways, args.results, keep=args.keep, faults=args.faults)
    except StackFailed as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; the stack is stopped")
    if args.json:
        print(json.dumps(summary, indent=2))
    bad = failures(summary)
    if bad:
        print(f"bench: FAILED: {', '.join(bad)}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
