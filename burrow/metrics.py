"""Metrics every Burrow process exports, and the one way to render them.

Gateways run several Sanic worker processes, so metrics use prometheus-client's
multiprocess mode whenever ``PROMETHEUS_MULTIPROC_DIR`` is set (the composition roots set
it before this module is imported); a scrape then sums every worker's files.
Gauges say ``livemin``: the process set counts as connected only if every live process is.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Gauge, multiprocess
from prometheus_client.exposition import choose_encoder

DEPENDENCY_UP = Gauge("burrow_dependency_up",
                      "1 when the last check of the dependency (broker, database) answered",
                      ["dependency"], multiprocess_mode="livemin")


def render(accept: str | None) -> tuple[bytes, str]:
    """The current metrics in the format the scraper's *accept* header asks for."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()  # fresh per scrape: the collector reads every file
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def process_exited(pid: int) -> None:
    """Drop a finished worker's live gauges from the multiprocess directory."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid)
