"""Numbers from a run's records, process stats from /proc, JSON and Markdown output.

Latencies are send->receive per delivery (the send time travels in the body) and
send->ack per send. Loss is expected deliveries (each sent message times its room's
members) minus distinct deliveries. A duplicate is the same (room, seq) delivered twice
to one client; an order violation is a client seeing a room's seq not strictly
increasing; a disagreement is two clients seeing different messages under one (room, seq).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.load import LoadResult

TICKS = os.sysconf("SC_CLK_TCK")


# ---- /proc ---------------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree(pid: int, children: Mapping[int, list[int]] | None = None) -> list[int]:
    """*pid* and all its descendants (a Sanic gateway is a manager and a worker)."""
    children = _children() if children is None else children
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def sample(pids: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """Per named process: RSS (KiB) and CPU seconds, summed over its process tree."""
    children = _children()
    out: dict[str, dict[str, float]] = {}
    for name, pid in pids.items():
        members = tree(pid, children)
        out[name] = {"rss_kib": float(sum(rss_kib(p) for p in members)),
                     "cpu_s": sum(cpu_seconds(p) for p in members)}
    return out


async def settle(pids: Mapping[str, int], idle_cores: float = 0.15, quiet: float = 1.0,
                 timeout: float = 180.0) -> float:
    """Wait until the stack's processes together use under *idle_cores* for *quiet* s.

    Connecting clients leaves work behind (presence records, bindings) that would be
    counted against the first seconds of the send phase; on the embedded database it can
    take longer than the connecting itself. Returns the seconds waited (*timeout* at most).
    """
    start = time.monotonic()
    last = sum(v["cpu_s"] for v in sample(pids).values())
    calm = 0.0
    step = 0.25
    while time.monotonic() - start < timeout and calm < quiet:
        await asyncio.sleep(step)
        now = sum(v["cpu_s"] for v in sample(pids).values())
        calm = calm + step if (now - last) / step < idle_cores else 0.0
        last = now
    return time.monotonic() - start


# ---- statistics ----------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted *values* (None when empty)."""
    if not values:
        return None
    rank = max(0, min(len(values) - 1, int(q / 100 * len(values) + 0.999999) - 1))
    return values[rank]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def summarize(result: LoadResult, before: Mapping[str, Mapping[str, float]],
              connected: Mapping[str, Mapping[str, float]],
              after: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The report: *before* (stack idle), *connected* (clients subscribed) and *after*
    (run over) are :func:`sample` snapshots of the stack's processes."""
    config = result.config
    latencies = sorted(d.received - d.sent for d in result.deliveries)
    ack_latencies = sorted(result.acks.values())
    seen: set[tuple[int, str, int]] = set()
    duplicates = order = 0
    last: dict[tuple[int, str], int] = {}
    owner: dict[tuple[str, int], str] = {}
    disagreements = 0
    for d in result.deliveries:
        key = (d.client, d.room, d.seq)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        stream = (d.client, d.room)
        if d.seq <= last.get(stream, 0):
            order += 1
        last[stream] = max(d.seq, last.get(stream, 0))
        first = owner.setdefault((d.room, d.seq), d.client_id)
        if first != d.client_id:
            disagreements += 1
    expected = result.expected()
    distinct = len(seen)
    end = max(result.last_received, result.send_ended)
    window = max(1e-9, end - result.send_started)
    per_gateway = max(1, config.connections // max(1, result.gateways))
    gateways: dict[str, Any] = {}
    for name in sorted(n for n in after if n.startswith("gateway")):
        grown = connected.get(name, {}).get("rss_kib", 0) - before.get(name, {}).get(
            "rss_kib", 0)
        gateways[name] = {
            "rss_idle_kib": before.get(name, {}).get("rss_kib"),
            "rss_connected_kib": connected.get(name, {}).get("rss_kib"),
            "rss_end_kib": after[name]["rss_kib"],
            "rss_per_connection_kib": round(grown / per_gateway, 1),
        }
    cpu = {name: round(after[name]["cpu_s"] - connected.get(name, {}).get("cpu_s", 0.0), 2)
           for name in after}
    cpu["load-generator (whole run)"] = round(result.load_cpu_seconds, 2)
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {"connections": config.connections, "rooms": config.rooms,
                   "room_size": config.room_size, "rate": config.rate,
                   "duration": config.duration, "gateways": result.gateways,
                   "body_bytes": 100},
        "sent": result.sent,
        "acked": len(result.acks),
        "expected_deliveries": expected,
        "deliveries": len(result.deliveries),
        "distinct_deliveries": distinct,
        "loss": expected - distinct,
        "duplicates": duplicates,
        "order_violations": order,
        "order_disagreements": disagreements,
        "errors": dict(result.errors),
        "connections_closed_early": result.closed,
        "deliveries_per_s": round(distinct / window, 1),
        "window_s": round(window, 2),
        "latency_ms": {"p50": _ms(percentile(latencies, 50)),
                       "p90": _ms(percentile(latencies, 90)),
                       "p99": _ms(percentile(latencies, 99)),
                       "max": _ms(latencies[-1] if latencies else None)},
        "ack_latency_ms": {"p50": _ms(percentile(ack_latencies, 50)),
                           "p99": _ms(percentile(ack_latencies, 99))},
        "connect_s": round(result.connect_seconds, 2),
        "setup_s": round(result.setup_seconds, 2),
        "gateways": gateways,
        "cpu_s_during_run": cpu,
    }


def markdown(report: Mapping[str, Any]) -> str:
    p = report["params"]
    lat, ack = report["latency_ms"], report["ack_latency_ms"]
    params = (f"C={p['connections']} R={p['rooms']} S={p['room_size']} "
              f"M={p['rate']:g}/s D={p['duration']:g}s G={p['gateways']}")
    counts = f"{report['expected_deliveries']} / {report['distinct_deliveries']}"
    rate = f"{report['deliveries_per_s']:,.0f} (over {report['window_s']} s)"
    rows: list[tuple[str, object]] = [
        ("parameters", params),
        ("sent / acked", f"{report['sent']} / {report['acked']}"),
        ("deliveries expected / distinct", counts),
        ("loss", report["loss"]),
        ("duplicates", report["duplicates"]),
        ("order violations", report["order_violations"]),
        ("order disagreements between receivers", report["order_disagreements"]),
        ("errors", report["errors"] or "none"),
        ("delivered deliveries/s", rate),
        ("e2e latency p50 / p90 / p99 / max (ms)",
         f"{lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']}"),
        ("ack latency p50 / p99 (ms)", f"{ack['p50']} / {ack['p99']}"),
        ("connect + subscribe all (s)", report["connect_s"]),
        ("stack busy after that (s)", report.get("settle_s")),
    ]
    for name, g in report["gateways"].items():
        mib = [f"{g[k] / 1024:.1f}" for k in ("rss_idle_kib", "rss_connected_kib",
                                              "rss_end_kib")]
        rows.append((f"{name} RSS idle -> connected -> end (MiB)",
                     f"{' -> '.join(mib)}; {g['rss_per_connection_kib']} KiB/conn"))
    for name, seconds in report["cpu_s_during_run"].items():
        rows.append((f"CPU s: {name}", seconds))
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def write(report: Mapping[str, Any], directory: Path) -> tuple[Path, str]:
    """``<directory>/<timestamp>.json`` and ``latest.md``; returns the JSON path and the table."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (directory / "latest.md").write_text(f"# Burrow benchmark, {report['time']}\n\n{table}")
    return path, table
