"""The capacity model's arithmetic (docs/scaling.md), from the bench reports beside it.

Run from the repository root: ``.venv/bin/python bench/results/issue18/model.py``; its
output is kept in ``model.txt``. A cost is CPU seconds per second (cores of this
machine: 2 vCPUs, AMD EPYC) from a report's ``cpu_s_during_run`` over its ``window_s``:
the CPU window runs from "all subscribed" to the end of the drain, which ends as soon as
everything arrived, so the two agree within a fraction of a second. ``cited-*`` files
are copies of reports from other folders (bench/RESULTS.md names the originals).

Why fitted this way: a process's cores = idle(C) + per-message cost x M (+ a gateway's
per-frame cost x deliveries). The full stack at C=1,000 in rooms of 10 gives the
per-message costs (100/s today against the six 300/s runs of session 11, the same code
with nothing else running); the Nov 28 curve (same code for all its points) gives the
gateways' cost per WebSocket frame from rooms of 100 and 1,000; the C=10,000 runs give
the cost of holding a connection. Each line then predicts the points it was not derived
from: that is the check docs/scaling.md shows.
"""

from __future__ import annotations

import json
import math
import pathlib
import statistics
from typing import Any

HERE = pathlib.Path(__file__).parent
KINDS = ("gateways", "sequencer", "rabbitmq", "database", "notifier")
M300 = [f"cited-session11-c1000-off-{n}" for n in range(1, 7)]


def load(name: str) -> dict[str, Any]:
    """One report of this folder, by name (without .json)."""
    report: dict[str, Any] = json.loads((HERE / f"{name}.json").read_text())
    return report


def curve() -> list[dict[str, Any]]:
    """The six points of the Nov 28 curve (reduced stack: no notifier)."""
    points: list[dict[str, Any]] = load("cited-curve-after-presence-batches")["curve"]
    return points


def cores(report: dict[str, Any]) -> dict[str, float]:
    """CPU cores per process kind over the report's window (gateways summed)."""
    window = float(report["window_s"])
    out = dict.fromkeys(KINDS, 0.0)
    for name, seconds in report["cpu_s_during_run"].items():
        kind = "gateways" if name.startswith("gateway-") else name
        if kind in out:
            out[kind] += float(seconds) / window
    return out


def median_cores(names: list[str]) -> dict[str, float]:
    """Per kind, the median over several runs of one load."""
    runs = [cores(load(name)) for name in names]
    return {kind: statistics.median(run[kind] for run in runs) for kind in KINDS}


def main() -> None:
    """Derive the costs, check them against the measured points, size the scenarios."""
    low = cores(load("c1000-s10-m100"))
    mid = median_cores(M300)
    print("== per-message costs, C=1,000, rooms of 10, G=2 (full stack)")
    print("kind        cores@100/s  cores@300/s(median of 6)  ms/msg (slope)  idle@C=1000")
    slope: dict[str, float] = {}
    idle: dict[str, float] = {}
    for kind in KINDS:
        slope[kind] = (mid[kind] - low[kind]) / 200.0
        idle[kind] = max(0.0, low[kind] - 100.0 * slope[kind])
        print(f"{kind:10s}  {low[kind]:10.3f}  {mid[kind]:10.3f}  {slope[kind] * 1e3:14.3f}"
              f"  {idle[kind]:10.3f}")

    # The gateways' cost per WebSocket frame: the Nov 28 curve at C=1,000 holds rooms of
    # 10 (300/s, 500/s), 100 (50/s) and 1,000 (5/s) on one code; with the idle part the
    # full stack shows (above) taken out, per message = a + S x d.
    pts = {(p["params"]["room_size"], p["params"]["rate"]): p for p in curve()
           if p["params"]["connections"] == 1000}
    gw_idle = idle["gateways"]
    per_msg = {key: (cores(p)["gateways"] - gw_idle) / key[1] for key, p in pts.items()}
    d = (per_msg[(1000, 5.0)] - per_msg[(100, 50.0)]) / 900.0
    a = per_msg[(100, 50.0)] - 100.0 * d
    print("\n== gateways: per message a (send, ack, one AMQP delivery per gateway) and per"
          " frame d")
    for key, value in sorted(per_msg.items()):
        print(f"  rooms of {key[0]:4d} at {key[1]:5g}/s: {value * 1e3:7.3f} ms per message")
    print(f"  from rooms of 100 and 1,000: d = {d * 1e6:.1f} us per frame, a = {a * 1e3:.3f} ms")
    if (HERE / "c1000-s100-m50.json").exists():
        # Today's code: rooms of 100 at 50/s on the full stack against the rooms-of-10
        # slope above (a + 10 d); these replace the Nov 28 figures in the model.
        big = (cores(load("c1000-s100-m50"))["gateways"] - gw_idle) / 50.0
        d = (big - slope["gateways"]) / 90.0
        a = slope["gateways"] - 10.0 * d
        print(f"  today (full stack): rooms of 100 at 50/s {big * 1e3:.3f} ms per message, "
              f"rooms of 10 {slope['gateways'] * 1e3:.3f} ms -> d = {d * 1e6:.1f} us, "
              f"a = {a * 1e3:.3f} ms (used below)")

    # Holding a connection: the C=10,000 points (idle run and the 300/s curve point).
    idle10k = load("cited-full-stack-r2-idle-c10000-s10-m20")
    gw10k = cores(idle10k)["gateways"] - 20.0 * (a + 10.0 * d)
    per_conn = gw10k / 10000.0
    db10k = cores(idle10k)["database"] - 20.0 * slope["database"]
    print(f"\n== holding connections (C=10,000, 20 msgs/s, after the stack settled):"
          f" gateways {gw10k:.3f} cores -> {per_conn * 1e6:.1f} us CPU per connection-second;"
          f" database {db10k:.3f} cores")
    for extra in ("c3000-s10-m10",):
        if (HERE / f"{extra}.json").exists():
            r = load(extra)
            c = r["params"]["connections"]
            g = cores(r)["gateways"] - float(r["params"]["rate"]) * (a + 10.0 * d)
            print(f"  {extra}: gateways {g:.3f} cores for {c} -> {g / c * 1e6:.1f} us per "
                  f"connection-second")

    # The check: predictions for points none of the costs came from.
    print("\n== predicted vs measured gateway cores (a, d from rooms of 100/1,000; idle from"
          " the full stack's C=1,000 line, per connection from the C=10,000 idle run)")

    def gw_pred(conns: float, size: float, rate: float) -> float:
        return float(per_conn * conns + rate * (a + size * d))

    checks: list[tuple[str, dict[str, Any]]] = [
        ("curve C=1000 S=10 300/s", pts[(10, 300.0)]),
        ("curve C=1000 S=10 500/s", pts[(10, 500.0)]),
        ("curve C=5000 S=10 300/s", next(p for p in curve()
                                          if p["params"]["connections"] == 5000)),
        ("curve C=10000 S=10 300/s (c10000-after-channel-fix)",
         load("cited-curve-c10000-after-channel-fix")),
        ("full C=1000 S=10 100/s (issue18)", load("c1000-s10-m100")),
        ("full C=1000 S=10 300/s (session11 off-1)", load("cited-session11-c1000-off-1")),
        ("full C=1000 S=10 300/s (issue16 after-2)", load("cited-issue16-after-2")),
    ]
    for name in ("c1000-s100-m50", "c1000-s10-m600", "c3000-s10-m10"):
        if (HERE / f"{name}.json").exists():
            checks.append((f"full {name} (issue18)", load(name)))
    for label, r in checks:
        p = r["params"]
        pred = gw_pred(p["connections"], p["room_size"], float(p["rate"]))
        meas = cores(r)["gateways"]
        print(f"  {label}: predicted {pred:.3f}, measured {meas:.3f} ({(pred / meas - 1) * 100:+.0f} %)")
    print("\n== predicted vs measured, other processes (full stack): idle + slope x M")
    for label, r in checks:
        if "notifier" not in r["cpu_s_during_run"]:
            continue
        p = r["params"]
        m = float(p["rate"])
        parts = []
        for kind in ("sequencer", "rabbitmq", "database", "notifier"):
            pred = idle[kind] + slope[kind] * m
            parts.append(f"{kind} {pred:.3f}/{cores(r)[kind]:.3f}")
        print(f"  {label}: " + ", ".join(parts))
    sat = load("cited-full-stack-after-c1000-s10-m1000")
    stored = float(sat["acked"])
    print("\n== at saturation (full stack, 1,000/s offered, C=1,000): CPU s per stored message")
    for kind in KINDS:
        print(f"  {kind:10s} {sat_cpu(sat, kind) / stored * 1e3:.3f} ms")

    a_send = a_delivery = a / 3.0
    if (HERE / "c1000-s10-m300-g4.json").exists():
        # G=4 against G=2 at the same load: the extra AMQP deliveries per message, once
        # each process's fixed part (the idle intercept beyond its connections) is out.
        g4 = cores(load("c1000-s10-m300-g4"))["gateways"]
        fixed = max(0.0, (idle["gateways"] - per_conn * 1000.0) / 2.0)
        reach4 = 4.0 * (1.0 - 0.75 ** 10)
        delta = g4 - mid["gateways"] - 2.0 * fixed
        measured_delivery = delta / (300.0 * (reach4 - 2.0))
        print(f"\n== G=4 against G=2 (C=1000, S=10, 300/s): gateways {g4:.3f} against "
              f"{mid['gateways']:.3f} cores, fixed per process {fixed:.3f}; per AMQP delivery "
              f"{measured_delivery * 1e3:.3f} ms, send side {(a - 2 * measured_delivery) * 1e3:.3f} ms")
        if 0.0 < measured_delivery < a / 2.0:  # else noise: keep the thirds
            a_delivery, a_send = measured_delivery, a - 2.0 * measured_delivery
    print("\n== sizing (docs/scaling.md, 'Sizing'): rooms of 10, every member online;"
          f" a split as send {a_send * 1e3:.2f} ms + {a_delivery * 1e3:.2f} ms per gateway reached")
    size(per_conn, a_send, a_delivery, d, slope)


def sat_cpu(report: dict[str, Any], kind: str) -> float:
    """CPU seconds of one process kind over a run (gateways summed)."""
    return sum(float(v) for k, v in report["cpu_s_during_run"].items()
               if (k.startswith("gateway-") and kind == "gateways") or k == kind)


def size(per_conn: float, a_send: float, a_delivery: float, d: float,
         slope: dict[str, float]) -> None:
    """Gateway processes, sequencer cores, broker and database work for the four loads.

    A gateway process is one core (one event loop): it is planned at 50 % of it so a
    reconnect storm or a burst has room. Each message reaches g_r = G (1 - (1 - 1/G)^S)
    gateway processes (those holding at least one of its room's S members, clients
    spread evenly); the measured a holds one send and two such deliveries (G=2), split
    as *a_send* + 2 *a_delivery* (thirds, unless a G=4 run measured it: printed above,
    and docs/scaling.md says which was used).
    """
    room = 10.0
    target = 0.5
    for conns in (100_000, 1_000_000):
        for rate in (10_000, 100_000):
            frames = rate * room
            g = 1.0
            for _ in range(50):  # fixed point: G depends on g_r, which depends on G
                reach = g * (1.0 - (1.0 - 1.0 / g) ** room)
                gw = per_conn * conns + rate * (a_send + reach * a_delivery) + frames * d
                g = max(1.0, math.ceil(gw / target))
            # broker messages: in = ingress, fan-out, the ack message (at most one per
            # send); out = the shard's, g_r gateways', notify.messages' and the ack's
            amqp = rate * (6.0 + reach)
            rabbit = slope["rabbitmq"] * rate * (6.0 + reach) / 8.0  # the bench had 8
            seq = slope["sequencer"] * rate
            print(f"  C={conns:>9,} M={rate:>7,}/s: gateway cores {gw:7.1f} -> {int(g):5d} "
                  f"processes at {target:.0%} (g_r {reach:.1f}); frames/s {frames:,.0f}; "
                  f"memory {conns * 33 / 2**20:.1f} GiB + {int(g)} x 161 MiB; "
                  f"sequencer cores {seq:.1f} -> {math.ceil(seq / target)} processes; "
                  f"broker messages/s ~{amqp:,.0f}, RabbitMQ cores ~{rabbit:.0f} (one node's "
                  f"cost, before replication); heartbeat updates/s {conns / 20:,.0f}")


if __name__ == "__main__":
    main()
