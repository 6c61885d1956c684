"""A real Prometheus (Debian's ``prometheus`` package) scraping a local stack.

``./dev up --prometheus`` runs one; the tests run one against their own stack
(tests/integration/test_monitoring.py). Everything lives in one directory: the generated
``prometheus.yml`` (written as JSON, which is YAML), the rule files it loads (Burrow's
``monitoring/alerts.yml``, optionally with every ``for:`` rewritten so that a test sees an
alert fire within seconds), the TSDB and the log. It listens on loopback only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from burrow.devstack.processes import stop_group

PROJECT = Path(__file__).resolve().parents[2]
ALERTS = PROJECT / "monitoring" / "alerts.yml"
BINARY = Path("/usr/bin/prometheus")
# RabbitMQ's per-queue metrics the rules and the dashboard read (depth, consumers).
DETAILED_FAMILIES = ("queue_coarse_metrics", "queue_consumer_count")


class PrometheusFailed(RuntimeError):
    """Prometheus is missing, exited, or did not become ready; the message ends with its log."""


@dataclass(frozen=True)
class ScrapeJob:
    """One ``scrape_configs`` entry: a job name, its ``host:port`` targets, path and params."""

    name: str
    targets: tuple[str, ...]
    metrics_path: str = "/metrics"
    params: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def render(self) -> dict[str, Any]:
        job: dict[str, Any] = {"job_name": self.name, "metrics_path": self.metrics_path,
                               "static_configs": [{"targets": list(self.targets)}]}
        if self.params:
            job["params"] = {k: list(v) for k, v in self.params.items()}
        return job


def rabbitmq_jobs(*addresses: str) -> list[ScrapeJob]:
    """RabbitMQ's prometheus plugin at each node's *addresses*: aggregated metrics and
    per-queue ones (a node reports only what it hosts: a cluster is scraped node by node)."""
    return [ScrapeJob("rabbitmq", addresses),
            ScrapeJob("rabbitmq-detailed", addresses, "/metrics/detailed",
                      {"family": DETAILED_FAMILIES})]


def binary() -> Path | None:
    """The prometheus executable, or None when Debian's package is not installed."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    return BINARY if BINARY.exists() else None


def render_config(jobs: Sequence[ScrapeJob], rule_files: Sequence[Path],
                  interval: float) -> dict[str, Any]:
    """prometheus.yml as data: one scrape and evaluation *interval* (seconds) for all."""
    every = _duration(interval)
    return {
        "global": {"scrape_interval": every, "evaluation_interval": every,
                   "scrape_timeout": _duration(min(interval, 10.0))},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [job.render() for job in jobs],
    }


def override_for(rules: str, hold: str) -> str:
    """*rules* (a rule file's text) with every alert's ``for:`` set to *hold*.

    For tests and demos only: with ``0s`` an alert fires at the first evaluation that sees
    its condition, instead of after the minutes the production rule waits.
    """
    return re.sub(r"^(\s+)for:\s*\S+\s*$", rf"\g<1>for: {hold}", rules, flags=re.MULTILINE)


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


class PrometheusServer:
    """Call :meth:`start` then :meth:`wait_ready`; :meth:`stop` ends it."""

    def __init__(self, directory: Path, jobs: Sequence[ScrapeJob], port: int,
                 interval: float = 15.0, rules: Sequence[Path] = (ALERTS,),
                 rule_for: str | None = None) -> None:
        self.directory = directory
        self.jobs = list(jobs)
        self.port = port
        self.interval = interval
        self.rules = list(rules)
        self.rule_for = rule_for
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "prometheus.log"
        self.config_path = directory / "prometheus.yml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        """Write the rule files and prometheus.yml into the directory; return the config."""
        self.directory.mkdir(parents=True, exist_ok=True)
        rule_files = []
        for source in self.rules:
            if self.rule_for is None:
                rule_files.append(source)
                continue
            copy = self.directory / f"{source.stem}.for-{self.rule_for}{source.suffix}"
            copy.write_text(override_for(source.read_text(), self.rule_for))
            rule_files.append(copy)
        config = render_config(self.jobs, rule_files, self.interval)
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")
        return self.config_path

    def start(self) -> None:
        executable = binary()
        if executable is None:
            raise PrometheusFailed("prometheus is not installed: install Debian's prometheus "
                                   "package (./dev does it: apt-get install prometheus)")
        config = self.write_config()
        (self.directory / "data").mkdir(exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [str(executable), f"--config.file={config}",
                 f"--storage.tsdb.path={self.directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raises ``OSError`` if unreachable."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise PrometheusFailed(f"/api/v1/{path}: {body}")
        return body["data"]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ``/-/ready`` answers 200; raise :exc:`PrometheusFailed` otherwise."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusFailed(
                    f"prometheus exited with {self.process.returncode}{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise PrometheusFailed(f"prometheus did not become ready on {self.url} within "
                               f"{timeout:.0f}s ({last}){self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(["", f"--- {self.log_path}", *text[-lines:]])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Prometheus flushes and exits), SIGKILL after *timeout*."""
        process, self.process = self.process, None
        stop_group(process, timeout)
