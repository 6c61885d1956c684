"""The mixed workload's report: the numbers per operation kind (send, react, edit,
delete), and its Markdown table.

Pure: computed from a run's records (:class:`bench.load.LoadResult`). An operation's
kind is in ``result.kinds`` (changes only: a ``client_id`` not there is a send). Per
kind: operations sent, acked, refused by the sequencer (by error code: a refused change
is not stored and has nothing to deliver), unacked at the end; deliveries expected (each
operation not refused x its room's members, the sender too) and distinct, loss; ack
latency (send -> ``ack``) and end-to-end latency (send -> the frame delivered to each
*other* member of the room: the sender's own copy is left out of this one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.load import LoadResult
from bench.stats import ms, percentile

KINDS = ("send", "react", "edit", "delete")


def sender_of(client_id: str) -> int:
    """The client that sent *client_id* (``<client>-<k>:<time>``)."""
    return int(client_id.split("-", 1)[0])


def summarize(result: LoadResult) -> dict[str, Any]:
    """``{"weights": {kind: weight}, "kinds": {kind: numbers}}``."""
    config, kinds, refused = result.config, result.kinds, result.refused
    stats: dict[str, dict[str, Any]] = {k: {
        "sent": 0, "acked": 0, "refused": {}, "unacked": 0, "expected_deliveries": 0,
        "distinct_deliveries": 0} for k in KINDS}
    size: dict[str, int] = {}
    for client_id, room in result.sent_room.items():
        entry = stats[kinds.get(client_id, "send")]
        entry["sent"] += 1
        if client_id in refused:
            code = refused[client_id]
            entry["refused"][code] = entry["refused"].get(code, 0) + 1
            continue
        if room not in size:
            size[room] = len(config.members(int(room.rsplit("-", 1)[1])))
        entry["expected_deliveries"] += size[room]
    acks: dict[str, list[float]] = {k: [] for k in KINDS}
    for client_id, latency in result.acks.items():
        acks[kinds.get(client_id, "send")].append(latency)
    for client_id in result.unacked:
        stats[kinds.get(client_id, "send")]["unacked"] += 1
    e2e: dict[str, list[float]] = {k: [] for k in KINDS}
    seen: set[tuple[int, str, int]] = set()
    for d in result.deliveries:
        key = (d.client, d.room, d.seq)
        if key in seen:
            continue
        seen.add(key)
        kind = kinds.get(d.client_id, "send")
        stats[kind]["distinct_deliveries"] += 1
        if d.client != sender_of(d.client_id):
            e2e[kind].append(d.received - d.sent)
    for kind, entry in stats.items():
        ack, lat = sorted(acks[kind]), sorted(e2e[kind])
        entry["acked"] = len(ack)
        entry["loss"] = entry["expected_deliveries"] - entry["distinct_deliveries"]
        entry["ack_latency_ms"] = {"p50": ms(percentile(ack, 50)),
                                   "p99": ms(percentile(ack, 99))}
        entry["latency_ms"] = {"p50": ms(percentile(lat, 50)), "p90": ms(percentile(lat, 90)),
                               "p99": ms(percentile(lat, 99)),
                               "max": ms(lat[-1] if lat else None)}
    return {"weights": dict(config.mix), "kinds": stats}


def failures(mix: Mapping[str, Any]) -> list[str]:
    """What fails a mixed run beyond the plain checks: a convergence check not ok."""
    convergence = mix.get("convergence")
    if convergence is None:
        return []
    return [] if convergence.get("ok") else ["convergence"]


def markdown(mix: Mapping[str, Any]) -> str:
    """The per-kind table, then the fallbacks and the convergence check."""
    weights = ", ".join(f"{k}={w}" for k, w in mix["weights"].items())
    lines = [f"Mixed workload ({weights}):", "",
             ("| kind | sent | acked | refused | unacked | deliveries expected / distinct "
              "| loss | ack p50 / p99 (ms) | e2e to the others p50 / p90 / p99 / max (ms) |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind, s in mix["kinds"].items():
        ack, lat = s["ack_latency_ms"], s["latency_ms"]
        refused = ", ".join(f"{c} {n}" for c, n in sorted(s["refused"].items())) or 0
        lines.append(f"| {kind} | {s['sent']} | {s['acked']} | {refused} | {s['unacked']} "
                     f"| {s['expected_deliveries']} / {s['distinct_deliveries']} "
                     f"| {s['loss']} | {ack['p50']} / {ack['p99']} "
                     f"| {lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']} |")
    lines.append("")
    fallbacks = mix.get("fallbacks")
    if fallbacks:
        lines.append("Changes drawn without a target yet, sent as messages instead: "
                     + ", ".join(f"{k} {n}" for k, n in fallbacks.items()) + ".")
    convergence = mix.get("convergence")
    if convergence is not None:
        if "error" in convergence:
            lines.append(f"Convergence: FAILED, history not read: {convergence['error']}")
        else:
            c = convergence
            verdict = "ok" if c["ok"] else "FAILED"
            lines.append(
                f"Convergence: {verdict}: {c['clients_converged']} of {c['clients']} clients "
                f"show their room as stored ({c['rooms']} rooms, {c['messages']} messages, "
                f"{c['change_events']} change events); rooms with stored seq faults "
                f"{c['rooms_with_seq_faults']}, acked but not stored {c['acked_not_stored']}, "
                f"refused but stored {c['refused_but_stored']}, clients behind "
                f"{c['clients_behind']}, diverged {c['clients_diverged']}.")
            lines += [f"- {example}" for example in c["examples"]]
    return "\n".join(lines) + "\n"
