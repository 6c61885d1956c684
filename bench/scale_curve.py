"""Deliveries/s against sequencer and gateway processes: ``python -m bench.scale_curve``.

One fresh stack per point (:func:`bench.__main__.run_burrow`), every point under the
same offered load, chosen above what the stack delivers on this 2-core machine (the
saturation of ``--curve`` was 6,200-7,500 deliveries/s in rooms of 10), so each row shows
what that process count delivers, not what was asked. A grid: sequencers 1, 2, 3 x
gateways 1, 2, 4. The row says where the CPU went (the cores the stack's processes used
over the send phase, and CPU seconds per process kind): near 2 cores, the machine is out
of cores, which is not Burrow out of scale; well under 2 with delivered < offered, the
limit is in the stack (or, on a shared machine, other jobs took the cores).

The sequencers share the shards out under load (docs/scaling.md, "Sequencer scale-out"):
with 2 or 3 of them the first seconds of a point include the handovers (a few seconds;
the row gives the handovers seen).

Writes ``scale-<timestamp>.json`` (every point's full report) and ``latest.md`` (the
table) under ``bench/results/issue18/scale/`` (``--out``). ``--quick``: 2 points, small
and short, to see it work (about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.load import LoadConfig

OUT = Path(__file__).resolve().parent / "results" / "issue18" / "scale"
SEQUENCERS = (1, 2, 3)
GATEWAYS = (1, 2, 4)
QUICK = ((1, 1), (2, 2))

HEADER = ("| sequencers | gateways | sends/s offered | deliveries/s offered | delivered/s | "
          "e2e p50 (ms) | e2e p99 (ms) | loss | stack cores used (of 2) | "
          "CPU s: sequencers / gateways / RabbitMQ / database | handovers |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def cpu_by_kind(report: Mapping[str, Any]) -> dict[str, float]:
    """CPU seconds during the run per process kind (sequencer-N, gateway-N summed)."""
    found = {"sequencers": 0.0, "gateways": 0.0, "rabbitmq": 0.0, "database": 0.0,
             "other": 0.0}
    for name, seconds in (report.get("cpu_s_during_run") or {}).items():
        if not isinstance(seconds, int | float):
            continue
        kind = ("sequencers" if name.startswith("sequencer") else
                "gateways" if name.startswith("gateway") else
                "rabbitmq" if name.startswith("rabbitmq") else
                "database" if name.startswith("database") else "other")
        found[kind] += float(seconds)
    return found


def row(sequencers: int, gateways: int, config: LoadConfig,
        report: Mapping[str, Any]) -> str:
    cpu = cpu_by_kind(report)
    window = float(report.get("window_s") or config.duration)
    busy = sum(cpu.values()) / window if window else 0.0
    lat = report.get("latency_ms") or {}
    return (f"| {sequencers} | {gateways} | {config.rate:g} | "
            f"{config.rate * config.room_size:,.0f} | {report['deliveries_per_s']:,.0f} | "
            f"{lat.get('p50')} | {lat.get('p99')} | {report.get('loss')} | "
            f"{busy:.2f} | {cpu['sequencers']:.1f} / {cpu['gateways']:.1f} / "
            f"{cpu['rabbitmq']:.1f} / {cpu['database']:.1f} | "
            f"{report.get('sequencer_handovers', '?')} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_curve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", "-C", type=int, default=1000)
    parser.add_argument("--room-size", "-S", type=int, default=10)
    parser.add_argument("--rate", "-M", type=float, default=1000.0,
                        help="sends/s offered (default 1000: 10,000 deliveries/s in rooms of "
                             "10, above this machine's saturation)")
    parser.add_argument("--duration", "-D", type=float, default=15.0)
    parser.add_argument("--drain", type=float, default=10.0,
                        help="seconds to wait for the last deliveries (default 10: above "
                             "saturation a backlog is left, counted as loss, and the "
                             "delivered rate is the figure)")
    parser.add_argument("--full-stack", action="store_true",
                        help="with the notifier, the digester and the local providers "
                             "(default: the reduced stack, the chat path alone)")
    parser.add_argument("--quick", action="store_true",
                        help="2 points (1 sequencer 1 gateway, 2 and 2), C 200, M 200, D 8")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else tuple((s, g) for s in SEQUENCERS for g in GATEWAYS)
    if args.quick:
        args.connections, args.rate, args.duration, args.drain = 200, 200.0, 8.0, 10.0
    config = LoadConfig(connections=args.connections, room_size=args.room_size,
                        rate=args.rate, duration=args.duration, drain=args.drain)

    from bench.__main__ import run_burrow
    from bench.measure import prepare_process

    prepare_process()
    lines = [HEADER]
    reports: list[dict[str, Any]] = []
    started = time.monotonic()
    for sequencers, gateways in grid:
        try:
            report = run_burrow(config, gateways, notifications=args.full_stack,
                                sequencers=sequencers)
        except Exception as exc:  # noqa: BLE001 - one point failing is a result too
            reports.append({"sequencers": sequencers, "gateways": gateways,
                            "failed": f"{type(exc).__name__}: {exc}"})
            lines.append(f"| {sequencers} | {gateways} | failed: {type(exc).__name__} {exc} |")
        else:
            done = (report.get("workers") or {}).get("done") or {}
            report["sequencer_handovers"] = int(done.get("sequencer handovers", 0))
            reports.append({"sequencers": sequencers, "gateways": gateways, **report})
            lines.append(row(sequencers, gateways, config, report))
        print(lines[-1], flush=True)
    took = time.monotonic() - started
    stack = "full stack" if args.full_stack else "reduced stack (no notifier, digester)"
    text = (f"# Deliveries/s against sequencer and gateway processes\n\n"
            f"C={config.connections:,} in rooms of {config.room_size}, {config.rate:g} "
            f"sends/s offered for {config.duration:g} s, {stack}; "
            f"{len(grid)} points in {took / 60:.1f} min; `python -m bench.scale_curve "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`.\n\n"
            + "\n".join(lines) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "config": {"connections": config.connections,
                                           "room_size": config.room_size,
                                           "rate": config.rate, "duration": config.duration},
                                "stack": stack, "seconds": round(took, 1),
                                "points": reports}, indent=2, default=str) + "\n")
    (args.out / "latest.md").write_text(text)
    print(text)
    print(f"bench: wrote {path} and {args.out / 'latest.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
