"""What the monitoring files ask of the running stack: every metric name their PromQL uses.

:func:`monitoring_metric_names` reads the Grafana dashboard and the alert rules and returns
the metric names their expressions select, for tests that check each one is exported by
some scrape target (tests/integration/test_monitoring.py). :func:`exported_names` reads a
scrape in the text exposition format.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
# Series Prometheus makes itself: no target exports them.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                       "scrape_samples_post_metric_relabeling", "scrape_series_added",
                       "ALERTS", "ALERTS_FOR_STATE"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![\w:.])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?[a-zA-Z]*")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right",
                       "bool", "and", "or", "unless", "offset", "inf", "nan"})


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run Debian's promtool from the repository's root (paths in *args* are relative)."""
    binary = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(binary).exists():
        pytest.fail("promtool is not installed: ./dev test installs it (Debian's prometheus "
                    "package: apt-get install prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, check=False)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected in a PromQL expression (not functions, labels or keywords).

    Grafana's ``$__rate_interval`` and other ``$variables`` are allowed. Good enough for
    the expressions Burrow writes; not a full PromQL parser.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)      # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)     # ranges and subqueries
    text = _CLAUSE.sub(" ", text)               # by (...), on (...), group_left (...)
    text = re.sub(r"\$\{?\w+\}?", " ", text)    # dashboard variables
    text = _NUMBER.sub(" ", text)               # 0.99, 1e3, 5m after offset
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group()
        if text[match.end():].lstrip().startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function or an aggregation
        names.add(name)
    return names


def dashboard_expressions(directory: Path = DASHBOARDS) -> Iterator[tuple[str, str]]:
    """(where, expr) of every query target of every panel of every dashboard JSON."""
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield f"{path.name}: {panel.get('title')!r}", str(target["expr"])


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # panels inside collapsed rows


def rule_expressions(path: Path = ALERTS) -> Iterator[tuple[str, str]]:
    """(alert or record name, expr) of every rule of a Prometheus rule file."""
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            yield str(rule.get("alert") or rule.get("record")), str(rule["expr"])


def monitoring_metric_names() -> dict[str, set[str]]:
    """Every metric name the dashboard and the alert rules use -> where it is used.

    Names Prometheus makes itself (``up``, ...) are left out: no target exports them.
    """
    used: dict[str, set[str]] = {}
    for where, expr in [*dashboard_expressions(), *rule_expressions()]:
        for name in promql_metric_names(expr) - SYNTHETIC:
            used.setdefault(name, set()).add(where)
    return used


def exported_names(exposition: str) -> set[str]:
    """Metric names a scrape exports: sample names, and the series of declared families.

    A family declared with ``# TYPE`` but without samples yet (a labelled counter nothing
    has incremented) counts with the names its samples will have.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = (line.split() + [""])[:4]
            names.add(name)
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
            elif kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            match = _IDENT.match(line)
            if match:
                names.add(match.group())
    return names
