"""A real Prometheus (Debian's package, burrow/devstack/prometheus.py) scrapes a running
stack: every target is up, every metric the dashboard and the alert rules use is exported,
every dashboard query runs, and BurrowShardWithoutConsumer fires once the only sequencer
is killed.

The production rules wait a minute (``for: 1m``) before firing; this test loads the same
monitoring/alerts.yml with every ``for:`` rewritten to ``0s``
(``PrometheusServer(rule_for="0s")``, ``./dev up --alert-for 0s``) and scrapes and
evaluates every second, so the alert fires within seconds. The rules' timing itself is
covered by their promtool unit tests (monitoring/alerts_test.yml).
"""

from __future__ import annotations

import asyncio
import datetime
import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from websockets.exceptions import InvalidStatus

import burrow.runtime.metrics  # noqa: F401  (declares Burrow's metrics in REGISTRY)
from burrow.devstack import ports, prometheus, rabbitmq
from tests.conftest import eventually
from tests.fakes.smtp import FakeSmtpServer
from tests.integration.conftest import Stack, raw_ws
from tests.monitoring import dashboard_expressions, exported_names, monitoring_metric_names

pytestmark = pytest.mark.integration

SHARDS = {f"chat.seq.{i}" for i in range(4)}


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., prometheus.PrometheusServer]]:
    started: list[prometheus.PrometheusServer] = []

    def run(jobs: list[prometheus.ScrapeJob]) -> prometheus.PrometheusServer:
        server = prometheus.PrometheusServer(tmp_path / "prometheus", jobs, ports.free_port(),
                                             interval=1.0, rule_for="0s")
        started.append(server)
        server.start()
        server.wait_ready()
        return server

    yield run
    for server in started:
        server.stop()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def evaluated_at(server: prometheus.PrometheusServer) -> float:
    """Oldest last-evaluation time (epoch seconds) over the rule groups."""
    times = []
    for group in server.api("rules")["groups"]:
        stamp = re.sub(r"(\.\d{6})\d*", r"\1", group["lastEvaluation"]).replace("Z", "+00:00")
        times.append(datetime.datetime.fromisoformat(stamp).timestamp())
    return min(times)


def shard_alerts(server: prometheus.PrometheusServer, vhost: str) -> list[dict[str, Any]]:
    return [a for a in server.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "BurrowShardWithoutConsumer"
            and a["labels"].get("vhost") == vhost]


async def traffic(stack: Stack, relay: FakeSmtpServer) -> None:
    """A message round trip, a refused handshake and an email: the metrics get samples."""
    stack.room("lobby", "alice", "bob")
    alice = await stack.client("alice")
    bob = await stack.client("bob")
    await asyncio.wait_for(bob.subscribe("lobby"), 30)
    ack = await asyncio.wait_for(alice.send("lobby", "hello"), 30)
    message = await asyncio.wait_for(bob.messages.get(), 30)
    assert (message.seq, message.body) == (ack.seq, "hello")
    with pytest.raises(InvalidStatus):
        async with raw_ws(stack.gateways[0].ws_url, "not-a-token"):
            pass
    connection = await aio_pika.connect(stack.vhost.url("burrow-backend"))
    async with connection:
        channel = await connection.channel()
        jobs = await channel.get_exchange("burrow.jobs", ensure=False)
        await jobs.publish(aio_pika.Message(orjson.dumps(
            {"kind": "email", "id": "metrics-1", "to": "ops@example.test",
             "subject": "Hello", "text": "scraped"}), message_id="metrics-1",
            content_type="application/json"), routing_key="email.due")
    await relay.wait_for_async(1, timeout=30)


async def test_prometheus_scrapes_the_stack_and_alerts_when_a_shard_loses_its_sequencer(
        broker: rabbitmq.RabbitNode, relay: FakeSmtpServer, stack: Stack,
        start_prometheus: Callable[..., prometheus.PrometheusServer]) -> None:
    workers = stack.add_workers("notifier", "digester", BURROW_SMTP_URL=relay.url)
    [gateway], [sequencer] = stack.gateways, stack.sequencers
    jobs = [prometheus.ScrapeJob("burrow-gateway", (f"127.0.0.1:{gateway.port}",)),
            prometheus.ScrapeJob("burrow-sequencer", (f"127.0.0.1:{sequencer.port}",)),
            prometheus.ScrapeJob("burrow-workers",
                                 tuple(f"127.0.0.1:{w.port}" for w in workers)),
            *prometheus.rabbitmq_jobs(f"127.0.0.1:{broker.config.prometheus_port}")]
    server = start_prometheus(jobs)
    await traffic(stack, relay)

    # every target up
    def targets() -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = server.api("targets")["activeTargets"]
        return active

    def all_up() -> bool:
        active = targets()
        return (len(active) == sum(len(j.targets) for j in jobs)
                and all(t["health"] == "up" for t in active))

    eventually(all_up, timeout=30)
    assert {t["labels"]["job"] for t in targets()} == {j.name for j in jobs}

    # every metric name the dashboard and the rules use is exported by some target
    exported: set[str] = set()
    for target in targets():
        exported |= exported_names(scrape(target["scrapeUrl"]))
    used = monitoring_metric_names()
    missing = set(used) - exported
    assert not missing, (
        "used by the dashboard or the alert rules but exported by no target: "
        + ", ".join(f"{n} ({sorted(used[n])})" for n in sorted(missing)))

    # every dashboard query runs, and every rule evaluates without error
    for where, expr in dashboard_expressions():
        server.api("query", query=re.sub(r"\$__(rate_)?interval", "1m", expr))  # raises
    eventually(lambda: all(r["health"] == "ok" for g in server.api("rules")["groups"]
                           for r in g["rules"]), timeout=10)

    # while the sequencer consumes every shard, the alert stays quiet
    shard_query = (f'rabbitmq_detailed_queue_consumers{{vhost="{stack.vhost.name}",'
                   'queue=~"chat\\\\.seq\\\\.[0-9]+"} > 0')
    eventually(lambda: len(server.api("query", query=shard_query)["result"]) == len(SHARDS),
               timeout=15)
    seen = time.time()
    eventually(lambda: evaluated_at(server) > seen + 1, timeout=15)
    assert shard_alerts(server, stack.vhost.name) == []

    # kill the only consumer of the shard queues: the alert fires for each shard
    sequencer.app.signal(signal.SIGKILL)

    def firing() -> set[str]:
        return {a["labels"]["queue"] for a in shard_alerts(server, stack.vhost.name)
                if a["state"] == "firing"}

    eventually(lambda: firing() == SHARDS, timeout=30)
    [alert, *_] = shard_alerts(server, stack.vhost.name)
    assert alert["labels"]["severity"] == "page"
    assert alert["annotations"]["runbook_url"].startswith("docs/")
    # and Prometheus sees the sequencer's own target go down
    eventually(lambda: any(t["labels"]["job"] == "burrow-sequencer" and t["health"] == "down"
                           for t in targets()), timeout=15)
