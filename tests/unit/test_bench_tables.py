"""The benchmark's comparison and curve tables and the mixed workload's per-kind section,
from made-up reports and records."""

from __future__ import annotations

from typing import Any

from bench import compare, curve, kinds
from bench import report as report_module
from bench.load import Delivery, LoadConfig, LoadResult


def report(deliveries_per_s: float, p99: float, sent: int, server_cpu: float,
           rss: float = 40.0) -> dict[str, Any]:
    return {
        "params": {"connections": 1000, "room_size": 10, "rate": 500.0, "duration": 10.0,
                   "body_bytes": 100, "gateways": 2},
        "sent": sent, "expected_deliveries": sent * 10, "distinct_deliveries": sent * 10,
        "loss": 0, "duplicates": 0, "order_disagreements": 0,
        "deliveries_per_s": deliveries_per_s, "connect_s": 3.0,
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99, "max": 9.0},
        "ack_latency_ms": {"p50": None, "p99": None},
        "gateways": {"gateway-0": {"rss_per_connection_kib": rss},
                     "gateway-1": {"rss_per_connection_kib": rss + 2}},
        "cpu_s_during_run": {"gateway-0": server_cpu / 2, "gateway-1": server_cpu / 2,
                             "load-generator (whole run)": 3.0},
    }


def test_ratios_divide_burrow_by_each_peer() -> None:
    reports = {"burrow": report(5000, 100, 5000, 10), "socketio": report(2500, 400, 5000, 5)}
    assert compare.ratios(reports) == {"socketio": {
        "deliveries_per_s": 2.0, "p99_ms": 0.25, "server_cpu_ms_per_message": 2.0}}


def test_a_ratio_without_a_denominator_is_none_not_a_crash() -> None:
    reports = {"burrow": report(5000, 100, 5000, 10), "websockets": report(0, 0, 0, 0)}
    assert compare.ratios(reports)["websockets"] == {
        "deliveries_per_s": None, "p99_ms": None, "server_cpu_ms_per_message": None}
    assert "| n/a | n/a | n/a |" in compare.markdown(reports)


def test_the_comparison_table_has_a_column_per_system_and_says_what_each_does() -> None:
    table = compare.markdown({"burrow": report(5000, 100, 5000, 10),
                              "socketio": report(2500, 400, 5000, 5)})
    assert "| | Burrow | python-socketio + RabbitMQ |" in table
    assert "| server CPU ms per message | 2.0 | 1.0 |" in table
    assert "| RSS per connection (KiB) | 41.0 | 41.0 |" in table
    assert "no auth, no storage" in table and "load generator CPU s | 3.0 | 3.0" in table


def test_the_curve_sweeps_connections_and_room_size_at_a_fixed_offered_load() -> None:
    points = curve.points()
    assert [(p.connections, p.room_size) for p in points] == [
        (1000, 10), (5000, 10), (10000, 10), (1000, 10), (1000, 100), (1000, 1000)]
    assert {p.rate for p in points if p.sweep == "connections"} == {300.0}
    assert {p.rate * p.room_size for p in points if p.sweep == "room size"} == {5000.0}
    small = curve.points(0.02)  # rooms larger than the connections are left out
    assert [(p.connections, p.room_size) for p in small] == [
        (20, 10), (100, 10), (200, 10), (20, 10)]


def test_the_curve_runs_every_point_and_tabulates_it() -> None:
    seen: list[curve.Point] = []

    def run_point(point: curve.Point) -> dict[str, Any]:
        seen.append(point)
        return report(point.rate * point.room_size, 50, 100, 1)

    table, reports = curve.run(run_point, 0.02)
    assert seen == curve.points(0.02) and len(reports) == len(seen)
    assert table.count("\n") == 2 + len(seen)
    assert "| connections | 100 | 10 | 2 | 300 | 3,000 | 3,000 | 1.0 | 50 | 0 | 41.0 |" in table


def test_a_failed_point_is_a_row_and_the_curve_goes_on() -> None:
    def run_point(point: curve.Point) -> dict[str, Any]:
        if point.connections == 100:
            raise TimeoutError("subscribed too late")
        return report(3000, 50, 100, 1)

    table, reports = curve.run(run_point, 0.02)
    assert "| connections | 100 | 10 | failed: TimeoutError subscribed too late |" in table
    assert len(reports) == 4 and reports[1]["failed"] == "TimeoutError: subscribed too late"


# ---- the mixed workload's section (bench.kinds) -------------------------------------------

def mixed_run(mix: tuple[tuple[str, int], ...]) -> LoadResult:
    """Room 0 = clients 0 and 1: client 0 sends a message (seq 1) and reacts (seq 2),
    client 1 edits (seq 3; client 0 never gets it) and its delete is refused."""
    result = LoadResult(LoadConfig(connections=2, room_size=2, mix=mix), 1)
    sent = {"0-0:10.0": None, "0-1:11.0": "react", "1-2:12.0": "edit", "1-3:13.0": "delete"}
    for client_id, kind in sent.items():
        result.sent_room[client_id] = "benchx-0"
        if kind is not None:
            result.kinds[client_id] = kind
    result.refused["1-3:13.0"] = "not_found"
    for client_id, seq in [("0-0:10.0", 1), ("0-1:11.0", 2), ("1-2:12.0", 3)]:
        result.acks[client_id] = 0.005 * seq
        result.acked_seq[client_id] = ("benchx-0", seq)
    for client, seq, client_id, at in [(0, 1, "0-0:10.0", 10.001), (1, 1, "0-0:10.0", 10.02),
                                       (0, 2, "0-1:11.0", 11.003), (1, 2, "0-1:11.0", 11.04),
                                       (1, 2, "0-1:11.0", 11.05),  # a duplicate
                                       (1, 3, "1-2:12.0", 12.001)]:
        result.deliveries.append(Delivery(client, "benchx-0", seq, client_id,
                                          float(client_id.split(":")[1]), at))
    return result


def test_the_mix_counts_each_kind_and_times_deliveries_to_the_other_members() -> None:
    result = mixed_run((("send", 80), ("react", 10), ("edit", 5), ("delete", 5)))
    summary = kinds.summarize(result)
    assert summary["weights"] == {"send": 80, "react": 10, "edit": 5, "delete": 5}
    send, react, edit, delete = (summary["kinds"][k] for k in kinds.KINDS)
    assert (send["sent"], send["acked"], send["expected_deliveries"],
            send["distinct_deliveries"], send["loss"]) == (1, 1, 2, 2, 0)
    assert send["latency_ms"]["max"] == 20.0  # client 1 only: the sender's copy is out
    assert react["latency_ms"]["p50"] == 40.0 and react["ack_latency_ms"]["p50"] == 10.0
    assert (edit["expected_deliveries"], edit["distinct_deliveries"], edit["loss"]) == (2, 1, 1)
    assert edit["latency_ms"]["p50"] is None  # only its sender got it
    assert (delete["sent"], delete["acked"], delete["refused"], delete["expected_deliveries"],
            delete["loss"]) == (1, 0, {"not_found": 1}, 0, 0)
    assert result.expected() == 6  # the refused delete has nothing to deliver


def test_a_plain_run_has_no_mix_section_and_a_mixed_one_has_its_table() -> None:
    plain = report_module.summarize(mixed_run(()), {}, {}, {})
    assert "mix" not in plain
    assert "Mixed workload" not in report_module.markdown(plain)
    mixed = report_module.summarize(mixed_run((("send", 9), ("edit", 1))), {}, {}, {})
    mixed["mix"]["fallbacks"] = {"edit": 3}
    mixed["mix"]["convergence"] = {
        "ok": False, "rooms": 1, "messages": 1, "change_events": 2, "clients": 2,
        "clients_converged": 1, "clients_behind": 1, "clients_diverged": 0,
        "rooms_with_seq_faults": 0, "acked_not_stored": 0, "refused_but_stored": 0,
        "examples": ["benchx-0: client 0 applied 2 frames up to seq 2, 3 stored"]}
    table = report_module.markdown(mixed)
    assert "Mixed workload (send=9, edit=1):" in table
    assert "| edit | 1 | 1 | 0 | 0 | 2 / 1 | 1 | 15.0 / 15.0 | None / None / None / None |" in table
    assert "| delete | 1 | 0 | not_found 1 | 0 | 0 / 0 | 0 |" in table
    assert "sent as messages instead: edit 3." in table
    assert "Convergence: FAILED: 1 of 2 clients" in table
    assert "- benchx-0: client 0 applied 2 frames" in table
    assert kinds.failures(mixed["mix"]) == ["convergence"]
    mixed["mix"]["convergence"] = {"ok": False, "error": "OSError: refused"}
    assert "history not read: OSError: refused" in report_module.markdown(mixed)
    assert kinds.failures(mixed["mix"]) == ["convergence"]
    mixed["mix"]["convergence"] = {"ok": True}
    assert kinds.failures(mixed["mix"]) == []
