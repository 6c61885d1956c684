"""Numbers from a run's records, process stats from /proc, JSON and Markdown output.

Latencies are send->receive per delivery (the send time travels in the body) and
send->ack per send. Loss is expected deliveries (each sent message times its room's
members) minus distinct deliveries. A duplicate is the same (room, seq) delivered twice
to one client; an order violation is a client seeing a room's seq not strictly
increasing; a disagreement is two clients seeing different messages under one (room, seq).

The resume guarantees, which the fault mode (:mod:`bench.faults`) puts to the test: an
acked-but-lost message is one whose sender got an ``ack`` but that some member of its
room never received; a gap is a seq missing from what one client saw of one room, between
1 and the highest seq it saw; "stored twice" is a ``client_id`` that members received
under two seqs (the sequencer's dedup failed). A fault's recovery time runs from the fault
until every client has received a message sent after the fault.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import kinds
from bench.load import LoadResult, Reconnect
from bench.stats import ms as _ms
from bench.stats import percentile
from bench.stats import s as _s

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
    """Per named process: RSS (KiB) and CPU seconds, summed over its process tree, and
    its root pid (to tell a restarted process from the one it replaced)."""
    children = _children()
    out: dict[str, dict[str, float]] = {}
    for name, pid in pids.items():
        members = tree(pid, children)
        out[name] = {"rss_kib": float(sum(rss_kib(p) for p in members)),
                     "cpu_s": sum(cpu_seconds(p) for p in members), "pid": float(pid)}
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

def _cpu(result: LoadResult, connected: Mapping[str, Mapping[str, float]],
         after: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """CPU seconds per process from "all subscribed" to the end of the run.

    A process a fault killed counts until the sample taken just before the fault (its
    name gets " (until killed)"); a restarted one (another pid under the same name) sums
    both runs (" (2 runs)"). Without faults: after - connected, per process.
    """
    snapshots: list[Mapping[str, Mapping[str, float]]] = [connected]
    snapshots += [f["cpu_before"] for f in result.faults if "cpu_before" in f]
    snapshots.append(after)
    cpu: dict[str, float] = {}
    names = list(after) + [n for n in connected if n not in after]
    for name in names:
        last: dict[float | None, float] = {}  # pid -> its latest CPU seconds
        first: dict[float | None, float] = {}
        for index, snapshot in enumerate(snapshots):
            if name in snapshot:
                pid = snapshot[name].get("pid")
                last[pid] = snapshot[name]["cpu_s"]
                # a pid first seen after "connected" started after it: count from 0
                first.setdefault(pid, snapshot[name]["cpu_s"] if index == 0 else 0.0)
        label = name
        if name not in after:
            label += " (until killed)"
        elif len(last) > 1:
            label += f" ({len(last)} runs)"
        cpu[label] = round(sum(last[pid] - first[pid] for pid in last), 2)
    return cpu


def integrity(result: LoadResult) -> dict[str, Any]:
    """The resume guarantees, from the records: acked-but-lost, gaps, stored twice."""
    config = result.config
    received: set[tuple[int, str]] = set()          # (client, client_id)
    seqs: dict[tuple[int, str], set[int]] = {}       # (client, room) -> seqs seen
    stored_as: dict[str, set[int]] = {}              # client_id -> seqs it arrived under
    for d in result.deliveries:
        received.add((d.client, d.client_id))
        seqs.setdefault((d.client, d.room), set()).add(d.seq)
        stored_as.setdefault(d.client_id, set()).add(d.seq)
    lost = lost_deliveries = ack_mismatches = 0
    examples: list[str] = []
    for client_id, (room, seq) in result.acked_seq.items():
        members = config.members(int(room.rsplit("-", 1)[1]))
        missing = [m for m in members if (m, client_id) not in received]
        if missing:
            lost += 1
            lost_deliveries += len(missing)
            if len(examples) < 10:
                examples.append(f"{room} seq {seq} {client_id}: not received by "
                                f"{len(missing)} of {len(members)} (e.g. client {missing[0]})")
        if client_id in stored_as and seq not in stored_as[client_id]:
            ack_mismatches += 1
    gaps = streams = 0
    for seen in seqs.values():
        missing_here = max(seen) - len(seen)  # seqs are >= 1: distinct seqs below the top
        if missing_here:
            gaps += missing_here
            streams += 1
    return {
        "acked_but_lost": lost,
        "acked_but_lost_deliveries": lost_deliveries,
        "acked_but_lost_examples": examples,
        "gaps": gaps,
        "streams_with_gaps": streams,
        "stored_twice": sum(1 for s in stored_as.values() if len(s) > 1),
        "ack_seq_mismatches": ack_mismatches,
    }


def _reconnect_stats(reconnects: Sequence[Reconnect]) -> dict[str, Any]:
    took = sorted(r.opened - r.closed for r in reconnects if r.opened)
    codes: dict[str, int] = {}
    for r in reconnects:
        codes[str(r.code)] = codes.get(str(r.code), 0) + 1
    return {"count": len(reconnects), "clients": len({r.client for r in reconnects}),
            "failed": sum(1 for r in reconnects if not r.opened),
            "close_codes": codes,
            "attempts_max": max((r.attempts for r in reconnects), default=0),
            "resent": sum(r.resent for r in reconnects),
            "seconds_p50": _s(percentile(took, 50)), "seconds_max": _s(took[-1] if took else None)}


def recoveries(result: LoadResult) -> list[dict[str, Any]]:
    """Per fault: when deliveries flowed again (seconds after the fault).

    ``recovery_s``: until every client has received at least one message sent after the
    fault (None if some client never did); ``first_delivery_s``: until the first such
    delivery to any client; ``first_ack_s``: until the first ack of a send made after it;
    ``first_send_wait_s``: until every room has had a send after it (sends go round-robin
    over the clients, a room's members one after the other, so a room can be idle for
    up to C / M seconds: a fault-free stack would show about this plus the usual latency
    as ``recovery_s``).
    """
    out: list[dict[str, Any]] = []
    faults = sorted(result.faults, key=lambda f: float(f["time"]))
    for index, fault in enumerate(faults):
        t = float(fault["time"])
        until = float(faults[index + 1]["time"]) if index + 1 < len(faults) else float("inf")
        first: dict[int, float] = {}
        for d in result.deliveries:
            if d.sent >= t and d.received < first.get(d.client, float("inf")):
                first[d.client] = d.received
        first_send: dict[str, float] = {}  # room -> its first send after the fault
        for cid, room in result.sent_room.items():
            sent = float(cid.split(":", 1)[1])
            if t <= sent < first_send.get(room, float("inf")):
                first_send[room] = sent
        acked = [float(cid.split(":", 1)[1]) + latency
                 for cid, latency in result.acks.items()
                 if float(cid.split(":", 1)[1]) >= t]
        window = [r for r in result.reconnects if t <= r.closed < until]
        recovered = len(first) == result.config.connections
        # every client's own sends get through again: a send made after the fault acked
        acked_by: dict[int, float] = {}
        for cid, latency in result.acks.items():
            client, sent = int(cid.split("-", 1)[0]), float(cid.split(":", 1)[1])
            if sent >= t and sent + latency < acked_by.get(client, float("inf")):
                acked_by[client] = sent + latency
        senders = len(acked_by) == result.config.connections
        healed = (max(*first.values(), *acked_by.values())
                  if recovered and senders and first else None)
        stuck = [c for c in range(result.config.connections) if c not in first]
        rooms_stuck = sorted({result.config.room_of(c) for c in stuck})
        entry = {k: v for k, v in fault.items() if k not in ("cpu_before", "time")}
        entry.update({
            "recovery_s": _s(max(first.values()) - t) if recovered and first else None,
            "first_delivery_s": _s(min(first.values()) - t) if first else None,
            "first_ack_s": _s(min(acked) - t) if acked else None,
            # until every client has had a send made after the fault acked (a client
            # whose gateway lost its broker node receives its room's other members'
            # messages long before its own sends get through)
            "senders_recovered_s": _s(max(acked_by.values()) - t) if senders else None,
            # the schedule's share of recovery_s: no room has a send before this
            "first_send_wait_s": _s(max(first_send.values()) - t) if first_send else None,
            "clients_recovered": len(first),
            "rooms_recovered": result.config.rooms - len(rooms_stuck),
            "rooms_unrecovered": rooms_stuck,
            # the first clients that never got a message sent after the fault, as they
            # were at the end of the run
            "unrecovered": {c: result.final.get(c) for c in stuck[:10]},
            "reconnects": _reconnect_stats(window),
            **_windows(result, t, healed, min(until, result.send_ended or until)),
        })
        out.append(entry)
    return out


def _windows(result: LoadResult, fault: float, healed: float | None, until: float
             ) -> dict[str, Any]:
    """e2e latency of the messages *sent* while a fault was not yet recovered (from the
    fault to *healed*: every client received a message sent after the fault and had one
    of its own acked; or to *until* when it never recovered) and after (from *healed*
    to *until*: the next fault or the end of the sends). By send time, so a send that
    waited out the fault in a client's retries counts in the window it was made in,
    with all its waiting."""
    end_during = healed if healed is not None else until
    during = sorted(d.received - d.sent for d in result.deliveries
                    if fault <= d.sent < end_during)
    after = sorted(d.received - d.sent for d in result.deliveries
                   if healed is not None and healed <= d.sent < until)
    return {"p99_during_ms": _ms(percentile(during, 99)), "deliveries_during": len(during),
            "p99_after_ms": _ms(percentile(after, 99)), "deliveries_after": len(after),
            "after_window_s": _s(until - healed) if healed is not None else None}


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
    cpu = _cpu(result, connected, after)
    cpu["load-generator (whole run)"] = round(result.load_cpu_seconds, 2)
    checks = integrity(result)
    faults = recoveries(result)
    summary: dict[str, Any] = {
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
        "acked_but_lost": checks["acked_but_lost"],
        "acked_but_lost_deliveries": checks["acked_but_lost_deliveries"],
        "acked_but_lost_examples": checks["acked_but_lost_examples"],
        "gaps": checks["gaps"],
        "streams_with_gaps": checks["streams_with_gaps"],
        "stored_twice": checks["stored_twice"],
        "ack_seq_mismatches": checks["ack_seq_mismatches"],
        "unacked": len(result.unacked),
        "unacked_examples": result.unacked[:10],
        "resent": result.resent,
        "sent_while_reconnecting": result.deferred,
        "reconnects": _reconnect_stats(result.reconnects),
        # client, closed and opened (s after the first send), close code, gateway, resent
        "reconnect_log": [[r.client, round(r.closed - result.send_started, 3),
                           round(r.opened - result.send_started, 3) if r.opened else None,
                           r.code, r.gateway, r.resent] for r in result.reconnects],
        "faults": faults,
        "faults_recovered": all(f["recovery_s"] is not None and "failed" not in f
                                for f in faults),
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
    if config.mix:  # the mixed workload: per operation kind (plain runs: no such key)
        summary["mix"] = kinds.summarize(result)
    return summary


def markdown(report: Mapping[str, Any]) -> str:
    p = report["params"]
    lat, ack = report["latency_ms"], report["ack_latency_ms"]
    params = (f"C={p['connections']} R={p['rooms']} S={p['room_size']} "
              f"M={p['rate']:g}/s D={p['duration']:g}s G={p['gateways']}")
    counts = f"{report['expected_deliveries']} / {report['distinct_deliveries']}"
    rate = f"{report['deliveries_per_s']:,.0f} (over {report['window_s']} s)"
    rows: list[tuple[str, object]] = [
        ("parameters", params),
        ("stack", report.get("stack", "")),
        ("messages stored before the run", f"{report.get('history_messages', 0):,}"),
        ("sent / acked", f"{report['sent']} / {report['acked']}"),
        ("deliveries expected / distinct", counts),
        ("loss", report["loss"]),
        ("duplicates", report["duplicates"]),
        ("order violations", report["order_violations"]),
        ("order disagreements between receivers", report["order_disagreements"]),
        ("acked but lost (messages / deliveries)",
         f"{report['acked_but_lost']} / {report['acked_but_lost_deliveries']}"),
        ("gaps (seqs / client-room streams)",
         f"{report['gaps']} / {report['streams_with_gaps']}"),
        ("stored twice (dedup failures)", report["stored_twice"]),
        ("unacked at the end", report["unacked"]),
        ("errors", report["errors"] or "none"),
        ("delivered deliveries/s", rate),
        ("e2e latency p50 / p90 / p99 / max (ms)",
         f"{lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']}"),
        ("ack latency p50 / p99 (ms)", f"{ack['p50']} / {ack['p99']}"),
        ("connect + subscribe all (s)", report["connect_s"]),
        ("stack busy after that (s)", report.get("settle_s")),
    ]
    reconnects = report.get("reconnects") or {}
    if reconnects.get("count") or report.get("faults"):
        rows += [
            ("resent (same client_id) / sent while reconnecting",
             f"{report['resent']} / {report['sent_while_reconnecting']}"),
            ("reconnects (clients; close codes; p50 / max s)",
             (f"{reconnects['count']} ({reconnects['clients']}; {reconnects['close_codes']}; "
              f"{reconnects['seconds_p50']} / {reconnects['seconds_max']})")),
        ]
    shards = report.get("shard_queues_at_end")
    if isinstance(shards, dict):
        rows.append(("shard queues at the end: ready / unacked (active consumer)",
                     "; ".join(f"{name} {q['ready']} / {q['unacked']} ({q['active']})"
                               for name, q in shards.items())))
    elif shards:
        rows.append(("shard queues at the end", shards))
    for number, fault in enumerate(report.get("faults") or [], 1):
        extra = {k: fault[k] for k in ("victim", "successor", "standby_alone_s", "takeover_s",
                                       "owned_s", "ready_s", "exit_s", "spread_s", "shares",
                                       "handovers",
                                       "how", "seen_down_s", "elected_s", "back_s",
                                       "down_s", "held_s", "waited_s", "failed",
                                       "partition_refused")
                 if fault.get(k) is not None}
        if "running_before" in fault:  # a cluster fault: nodes and leaders
            extra["nodes running before -> after"] = (
                f"{fault['running_before']} -> {fault.get('running_after')}")
            extra["shard leaders moved"] = {q: m for q, m in fault.get("leaders_moved",
                                                                      {}).items()
                                            if q.startswith("chat.seq.")}
            extra["queues that changed leader"] = len(fault.get("leaders_moved", {}))
        rows.append((f"fault {number}: {fault['fault']} at {fault['at_s']} s",
                     (f"recovery {fault['recovery_s']} s (senders "
                      f"{fault.get('senders_recovered_s')} s), e2e p99 during / after "
                      f"{fault.get('p99_during_ms')} / {fault.get('p99_after_ms')} ms "
                      f"({fault.get('deliveries_during')} / {fault.get('deliveries_after')} "
                      f"deliveries) (rooms' first send "
                      f"{fault['first_send_wait_s']} s, first delivery "
                      f"{fault['first_delivery_s']} s, first ack {fault['first_ack_s']} s, "
                      f"{fault['clients_recovered']} clients and "
                      f"{fault['rooms_recovered']} rooms recovered, "
                      f"{fault['reconnects']['count']} reconnects); {extra}")))
    if report.get("broker_nodes_at_start"):
        rows.append(("broker node of each process at start / end",
                     f"{report['broker_nodes_at_start']} / {report.get('broker_nodes_at_end')}"))
    for name, g in report["gateways"].items():
        mib = [f"{g[k] / 1024:.1f}" for k in ("rss_idle_kib", "rss_connected_kib",
                                              "rss_end_kib")]
        rows.append((f"{name} RSS idle -> connected -> end (MiB)",
                     f"{' -> '.join(mib)}; {g['rss_per_connection_kib']} KiB/conn"))
    for name, seconds in report["cpu_s_during_run"].items():
        rows.append((f"CPU s: {name}", seconds))
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    text = "\n".join(lines) + "\n"
    if report.get("mix"):
        text += "\n" + kinds.markdown(report["mix"])
    return text


def write(report: Mapping[str, Any], directory: Path) -> tuple[Path, str]:
    """``<directory>/<timestamp>.json`` and ``latest.md``; returns the JSON path and the table."""
    table = markdown(report)
    return write_named(report, directory, "", f"Burrow benchmark, {report['time']}\n\n{table}"), table


def write_named(summary: Mapping[str, Any], directory: Path, kind: str, text: str) -> Path:
    """``<directory>/<timestamp>[-<kind>].json``, and *text* (a title line, then Markdown)
    as ``latest.md``; returns the JSON path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{time.strftime('%Y%m%d-%H%M%S')}{'-' + kind if kind else ''}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    (directory / "latest.md").write_text(f"# {text}")
    return path
