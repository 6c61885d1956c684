"""The alert rules pass promtool's checks and their unit tests (monitoring/alerts_test.yml),
and every dashboard query is valid PromQL.

promtool comes from Debian's ``prometheus`` package, which ``./dev test`` installs; without
it these tests fail (never skip): CI must run them.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.monitoring import (
    ALERTS,
    MONITORING,
    dashboard_expressions,
    exported_names,
    monitoring_metric_names,
    promql_metric_names,
    promtool,
    rule_expressions,
)

RULE_NAMES = {"BurrowBrokerDown", "BurrowDatabaseDown", "BurrowShardWithoutConsumer",
              "BurrowSequencerLagHigh", "BurrowAckLatencyHigh", "BurrowDeadLettersWaiting",
              "BurrowPushFailureRatio", "BurrowEmailFailureRatio", "BurrowGatewayNotReady"}


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "monitoring/alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_NAMES)} rules found" in result.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "monitoring/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def rules() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_every_rule_is_there_with_severity_summary_and_runbook() -> None:
    assert {r["alert"] for r in rules()} == RULE_NAMES
    for rule in rules():
        labels, notes = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(notes, dict)
        assert labels["severity"] in {"page", "ticket"}, rule["alert"]
        assert notes["summary"], rule["alert"]
        assert re.fullmatch(r"docs/(admin|metrics)\.md#[a-z0-9_-]+", notes["runbook_url"])
        doc, anchor = str(notes["runbook_url"]).split("#")
        assert anchor in heading_anchors(MONITORING.parent / doc), notes["runbook_url"]


def heading_anchors(doc: Path) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings (lower case, spaces to -)."""
    return {re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in doc.read_text().splitlines() if line.startswith("#")}


def test_every_rule_has_unit_tests_that_see_it_fire_and_stay_quiet() -> None:
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == RULE_NAMES
    assert quiet == RULE_NAMES


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana's $__rate_interval -> 1m)."""
    expressions = list(dashboard_expressions())
    assert len(expressions) >= 20
    records = [{"record": f"dashboard:query_{i}",
                "expr": re.sub(r"\$__(rate_)?interval", "1m", expr)}
               for i, (_, expr) in enumerate(expressions)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_metric_names_are_found_in_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job="x"}[5m])))'
            ' / on (job) group_left (queue) b_total offset 5m > 1e3 and bool_ish'
            ' or min without (le) (c{q=~"chat\\\\.seq\\\\..*"}) unless d[$__rate_interval]')
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b_total", "bool_ish", "c", "d"}


def test_the_monitoring_files_use_the_metrics_the_issue_names() -> None:
    used = monitoring_metric_names()
    assert "up" not in used  # Prometheus's own: no target exports it
    for name in ("burrow_dependency_up", "burrow_gateway_ack_seconds_bucket",
                 "burrow_gateway_frames_in_total", "burrow_gateway_frames_out_total",
                 "burrow_gateway_connections", "burrow_sequencer_lag_seconds",
                 "burrow_sequencer_shard_active", "burrow_pushes_total", "burrow_emails_total",
                 "rabbitmq_detailed_queue_consumers", "rabbitmq_detailed_queue_messages"):
        assert name in used, name
    assert {n for n, _ in rule_expressions()} == RULE_NAMES


def test_exported_names_include_declared_families_without_samples() -> None:
    text = ("# HELP burrow_jobs_total Jobs\n# TYPE burrow_jobs_total counter\n"
            "# TYPE burrow_push_seconds histogram\n"
            'rabbitmq_detailed_queue_consumers{vhost="/",queue="q"} 1\n'
            "burrow_dependency_up 1.0\n")
    assert exported_names(text) == {
        "burrow_jobs_total", "burrow_push_seconds", "burrow_push_seconds_bucket",
        "burrow_push_seconds_sum", "burrow_push_seconds_count",
        "rabbitmq_detailed_queue_consumers", "burrow_dependency_up"}
