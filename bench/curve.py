"""The scaling curve (``--curve``): what grows when connections or rooms grow.

Two sweeps, one fresh stack per point so no point inherits another's history:

* connections 1,000 / 5,000 / 10,000 in rooms of 10 at a fixed 300 sends/s (3,000
  deliveries/s offered): the cost of holding connections, with the message load fixed;
* room size 10 / 100 / 1,000 with 1,000 connections at a fixed 5,000 deliveries/s
  offered (500, 50, 5 sends/s): fan-out against sequencing and storing.

Fixed offered load, so each row shows what the same work costs at that scale; where a
row falls behind (delivered < offered, p99 in seconds) the stack is saturated there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench import compare

Report = Mapping[str, Any]


@dataclass(frozen=True)
class Point:
    connections: int
    room_size: int
    rate: float
    sweep: str


def points(scale: float = 1.0) -> list[Point]:
    """The curve's points; *scale* < 1 shrinks connections (a quick look, or a test)."""
    def c(n: int) -> int:
        return max(10, int(n * scale))

    fixed_deliveries = 5000.0
    return ([Point(c(n), 10, 300.0, "connections") for n in (1000, 5000, 10000)]
            + [Point(c(1000), s, fixed_deliveries / s, "room size") for s in (10, 100, 1000)
               if s <= c(1000)])


def row(point: Point, report: Report) -> str:
    lat = report["latency_ms"]
    offered = point.rate * point.room_size
    return (f"| {point.sweep} | {point.connections:,} | {point.room_size:,} | "
            f"{report['params']['gateways']} | {point.rate:g} | {offered:,.0f} | "
            f"{report['deliveries_per_s']:,.0f} | {lat['p50']} | {lat['p99']} | "
            f"{report['loss']} | {compare.rss_per_connection(report)} | "
            f"{compare.cpu_ms_per_message(report)} | {report['connect_s']} |")


HEADER = ("| sweep | C | room size | gateways | sends/s | deliveries/s offered | "
          "delivered/s | e2e p50 (ms) | e2e p99 (ms) | loss | RSS KiB/conn | "
          "server CPU ms/msg | connect s |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def run(run_point: Callable[[Point], Report], scale: float = 1.0,
        on_row: Callable[[str], None] | None = None) -> tuple[str, list[Report]]:
    """Run every point with *run_point*; returns the Markdown table and the reports."""
    lines: list[str] = [HEADER]
    reports: list[Report] = []
    for point in points(scale):
        try:
            report = run_point(point)
        except Exception as exc:  # noqa: BLE001 - one point failing is a result too
            reports.append({"point": vars(point), "failed": f"{type(exc).__name__}: {exc}"})
            lines.append(f"| {point.sweep} | {point.connections:,} | {point.room_size:,} | "
                         f"failed: {type(exc).__name__} {exc} |")
        else:
            reports.append(report)
            lines.append(row(point, report))
        if on_row is not None:
            on_row(lines[-1])
    return "\n".join(lines) + "\n", reports
