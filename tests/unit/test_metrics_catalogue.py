"""docs/metrics.md catalogues every metric burrow/runtime/metrics.py defines, so it cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from burrow.runtime import metrics

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "metrics.md"


def exported_names() -> set[str]:
    """What each metric of burrow/runtime/metrics.py is called on /metrics (counters end in
    ``_total``), including those made on first use (:func:`metrics.gateway_ready`)."""
    found = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    found.append(metrics.gateway_ready())
    names = set()
    for metric in found:
        name = metric._name  # prometheus-client keeps no public name
        names.add(f"{name}_total" if metric._type == "counter" else name)
    return names


def catalogued_names() -> set[str]:
    """The metric names in the first column of the catalogue's tables."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", CATALOGUE.read_text(), re.MULTILINE))


def test_every_metric_is_catalogued() -> None:
    names = exported_names()
    assert "burrow_gateway_ready" in names and "burrow_jobs_total" in names
    assert names - catalogued_names() == set()


def test_every_name_defined_in_the_module_is_found() -> None:
    # A metric made elsewhere than at module level (like gateway_ready) is still caught:
    # every quoted metric name in the module's source must be one the test knows.
    source = Path(metrics.__file__).read_text()
    quoted = set(re.findall(r'"(burrow_[a-z_]+)"', source))
    assert quoted - exported_names() == set()


def test_the_catalogue_lists_only_burrow_metrics_that_exist_and_the_broker_ones() -> None:
    burrow = {name for name in catalogued_names() if name.startswith("burrow_")}
    assert burrow == exported_names()
    assert {"rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_consumers",
            "rabbitmq_detailed_queue_messages_unacked"} <= catalogued_names()
