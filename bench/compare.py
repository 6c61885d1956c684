"""Burrow and its peers side by side, from reports of one run (``--compare``).

The peers do less than Burrow: python-socketio with its RabbitMQ manager neither
authenticates nor stores nor orders, and the broker-less ``websockets`` server is a
single process that only broadcasts. The ratios say what Burrow's guarantees cost (or
save) against what a user would pick instead, on the same machine under the same load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Report = Mapping[str, Any]

NAMES = {"burrow": "Burrow", "socketio": "python-socketio + RabbitMQ",
         "websockets": "websockets, broker-less (ceiling)"}
CAVEATS = {
    "burrow": "JWT auth, membership checks, every message stored and sequenced, acks",
    "socketio": "no auth, no storage, no seq (order per receiver, not per room), no acks",
    "websockets": "one process, no broker: nothing survives a restart; the upper bound",
}


def _servers(report: Report) -> list[str]:
    return [n for n in report["cpu_s_during_run"] if not n.startswith("load-generator")]


def server_cpu(report: Report) -> float:
    """CPU seconds of every server-side process during the run (not the load's)."""
    return round(float(sum(report["cpu_s_during_run"][n] for n in _servers(report))), 2)


def load_cpu(report: Report) -> float:
    cpu = report["cpu_s_during_run"]
    return float(next((v for k, v in cpu.items() if k.startswith("load-generator")), 0.0))


def rss_per_connection(report: Report) -> float | None:
    """Mean KiB per connection over the gateway (server) processes."""
    values = [g["rss_per_connection_kib"] for g in report["gateways"].values()]
    return round(sum(values) / len(values), 1) if values else None


def cpu_ms_per_message(report: Report) -> float | None:
    """Server CPU per sent message: what one more message costs the whole stack."""
    return round(1000 * server_cpu(report) / report["sent"], 3) if report["sent"] else None


ROWS: list[tuple[str, Callable[[Report], Any]]] = [
    ("sent", lambda r: r["sent"]),
    ("deliveries expected / distinct",
     lambda r: f"{r['expected_deliveries']} / {r['distinct_deliveries']}"),
    ("loss", lambda r: r["loss"]),
    ("duplicates", lambda r: r["duplicates"]),
    ("order disagreements between receivers", lambda r: r["order_disagreements"]),
    ("delivered deliveries/s", lambda r: f"{r['deliveries_per_s']:,.0f}"),
    ("e2e p50 / p99 / max (ms)", lambda r: " / ".join(
        str(r["latency_ms"][k]) for k in ("p50", "p99", "max"))),
    ("ack p50 / p99 (ms)", lambda r: " / ".join(
        str(r["ack_latency_ms"][k]) for k in ("p50", "p99"))),
    ("server processes", lambda r: ", ".join(_servers(r))),
    ("server CPU s (sum)", server_cpu),
    ("server CPU ms per message", cpu_ms_per_message),
    ("RSS per connection (KiB)", rss_per_connection),
    ("load generator CPU s", load_cpu),
]


def _div(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else round(ours / theirs, 3)


def ratios(reports: Mapping[str, Report]) -> dict[str, dict[str, float | None]]:
    """Burrow / peer for the numbers that compare: throughput, p99, CPU per message."""
    burrow = reports.get("burrow")
    out: dict[str, dict[str, float | None]] = {}
    if burrow is None:
        return out
    for name, report in reports.items():
        if name == "burrow":
            continue
        out[name] = {
            "deliveries_per_s": _div(burrow["deliveries_per_s"], report["deliveries_per_s"]),
            "p99_ms": _div(burrow["latency_ms"]["p99"], report["latency_ms"]["p99"]),
            "server_cpu_ms_per_message": _div(cpu_ms_per_message(burrow),
                                              cpu_ms_per_message(report)),
        }
    return out


def markdown(reports: Mapping[str, Report]) -> str:
    """One table, a column per system, then the Burrow / peer ratios and what each does."""
    names = list(reports)
    p = next(iter(reports.values()))["params"]
    load = (f"Load: C={p['connections']} clients in rooms of {p['room_size']}, "
            f"{p['rate']:g} sends/s for {p['duration']:g} s, {p['body_bytes']}-byte "
            "bodies, same clients and schedule for every system.")
    lines = [load, "",
             "| | " + " | ".join(NAMES.get(n, n) for n in names) + " |",
             "| --- |" + " --- |" * len(names)]
    for label, get in ROWS:
        lines.append(f"| {label} | " + " | ".join(str(get(reports[n])) for n in names) + " |")
    table = ratios(reports)
    if table:
        lines += ["", "| Burrow / peer | deliveries/s | e2e p99 | server CPU per message |",
                  "| --- | --- | --- | --- |"]
        for name, row in table.items():
            cells = ["n/a" if row[k] is None else f"{row[k]:g}" for k in
                     ("deliveries_per_s", "p99_ms", "server_cpu_ms_per_message")]
            lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    lines += ["", "What each does:", ""]
    lines += [f"- {NAMES.get(n, n)}: {CAVEATS.get(n, '')}" for n in names]
    return "\n".join(lines) + "\n"
