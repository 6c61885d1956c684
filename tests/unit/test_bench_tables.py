"""The benchmark's comparison and curve tables, from made-up reports."""

from __future__ import annotations

from typing import Any

from bench import compare, curve


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
