"""The dev launcher (``./dev up`` runs it) brings the whole stack up and takes it down.

Each test runs ``python -m burrow.devstack up`` as a child with its own free ports and
data directory, so it never meets a developer's running stack.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from burrow.client import ChatClient
from burrow.core import tokens
from burrow.devstack import plan, ports
from burrow.devstack.__main__ import DEV_SECRET
from burrow.devstack.processes import get
from queues import topology
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration
ADMIN = "launcher-admin-pw"
PORT_VARS = ("BURROW_DEV_AMQP_PORT", "BURROW_DEV_MANAGEMENT_PORT", "BURROW_DEV_PROMETHEUS_PORT",
             "BURROW_DEV_DIST_PORT", "BURROW_DEV_MONGO_PORT", "BURROW_PORT",
             "BURROW_METRICS_PORT",
             # the mailbox (burrow.devstack.mailbox), not on a running ./dev up's 8025 / 1025
             "BURROW_DEV_MAILBOX_PORT", "BURROW_DEV_SMTP_PORT")


@dataclass
class Launcher:
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    offset: int = 0

    def port(self, name: str) -> int:
        return int(self.env[name])

    def start(self, *args: str) -> None:
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "burrow.devstack", "up", *args], env=self.env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def up(self, *args: str, attempts: int = 3) -> None:
        """Start and wait until the stack is up. A port picked free for this test can be
        taken by another test process before the launcher checks it (the suite runs two
        at once): the launcher then stops before starting anything, saying so, and this
        picks fresh ports and starts again; any other failure fails the test."""
        for attempt in range(attempts):
            self.start(*args)
            try:
                self.wait_line("Burrow is up")
                return
            except AssertionError:
                output = self.log.read_text()[self.offset:]
                if (self.process is None or self.process.poll() is None
                        or " is taken " not in output or attempt == attempts - 1):
                    raise
                self.env.update({name: str(ports.free_port()) for name in PORT_VARS})

    def wait_line(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text()[self.offset:]:  # this run's output only
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.log.read_text()}"
            time.sleep(0.2)

    def interrupt(self) -> int:
        """Ctrl-C, as a person at the terminal would; returns the exit code."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(120)

    def api(self, path: str, body: object = None) -> object:
        """Management API as the admin: GET, or POST when there is a *body*."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port('BURROW_DEV_MANAGEMENT_PORT')}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": "Basic "
                     + base64.b64encode(f"burrow-admin:{ADMIN}".encode()).decode(),
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    env.update({name: str(ports.free_port()) for name in PORT_VARS})
    env.update({"BURROW_DEV_DIR": str(tmp_path / "state"),
                "BURROW_RABBITMQ_ADMIN_PASSWORD": ADMIN, "PYTHONUNBUFFERED": "1"})
    running = Launcher(env, tmp_path / "launcher.log")
    yield running
    if running.process is not None and running.process.poll() is None:
        running.interrupt()


def assert_all_ports_free(launcher: Launcher) -> None:
    for name in PORT_VARS:
        ports.ensure_free(launcher.port(name), name, name)


async def chat_round_trip(port: int) -> None:
    """Through the launched stack: create a room, send, get the ack and the message."""
    token = tokens.mint(DEV_SECRET, "alice")
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"http://127.0.0.1:{port}/v1/rooms", json={"id": "hello"},
                                   headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 201, response.text
    client = ChatClient([f"ws://127.0.0.1:{port}/v1/ws"], lambda: token)
    await client.connect()
    try:
        await asyncio.wait_for(client.subscribe("hello"), 30)
        ack = await asyncio.wait_for(client.send("hello", "it works"), 30)
        message = await asyncio.wait_for(client.messages.get(), 30)
        assert (ack.seq, message.seq, message.body) == (1, 1, "it works")
    finally:
        await client.close()


def test_up_serves_everything_ctrl_c_stops_it_and_the_next_run_has_the_data(
        launcher: Launcher) -> None:
    """Two runs of one data directory: the first serves everything and leaves data in
    the database and the broker, Ctrl-C stops it all; the second, with Prometheus,
    finds that data and scrapes every process. The first also follows docs/mailbox.md
    (tests/integration/test_mailbox.py). (One test: a run of the launcher takes ~25 s to
    start and stop, and a third run would check nothing the two do not.)"""
    # docs/mailbox.md: a digest within seconds
    launcher.env["BURROW_DIGEST_HOURLY"] = "2"
    launcher.up()
    text = launcher.log.read_text()
    gateway = f"http://127.0.0.1:{launcher.port('BURROW_PORT')}"
    management = f"http://127.0.0.1:{launcher.port('BURROW_DEV_MANAGEMENT_PORT')}"
    assert gateway in text
    assert f"{management}  login burrow-admin / {ADMIN}" in text
    assert get(f"{gateway}/readyz") == (200, {"ready": True,
                                              "checks": {"broker": "up", "database": "up"}})
    queues = {q["name"] for q in launcher.api("/api/queues/burrow")}  # type: ignore[attr-defined]
    # each gateway worker's reply queue and each sequencer's heartbeat queue are its own
    shared = {q for q in queues
              if not q.startswith(("gateway.", topology.SEQUENCERS_PREFIX))}
    # and the digester's delay tier for BURROW_DIGEST_HOURLY=2 (see above)
    assert shared == {q.name for q in topology.build().queues} | {"digest.delay.2s"}
    # each Sanic worker of the gateway is an instance with a queue of its own, and the
    # one sequencer has its heartbeat queue
    assert len({q for q in queues if q.startswith("gateway.")}) == plan.GATEWAY_WORKERS == 2
    assert len({q for q in queues if q.startswith(topology.SEQUENCERS_PREFIX)}) == 1
    exchanges = {e["name"] for e in launcher.api("/api/exchanges/burrow")}  # type: ignore[attr-defined]
    assert {e.name for e in topology.build().exchanges} <= exchanges
    # The plugins are on: each answers for itself.
    overview = launcher.api("/api/overview")
    assert "x-consistent-hash" in {t["name"] for t in overview["exchange_types"]}  # type: ignore[index]
    assert launcher.api("/api/shovels/burrow") == []  # 404 without the shovel plugins
    broker_metrics = f"http://127.0.0.1:{launcher.port('BURROW_DEV_PROMETHEUS_PORT')}/metrics"
    with urllib.request.urlopen(broker_metrics, timeout=10) as response:
        assert b"rabbitmq_queue_messages" in response.read()

    asyncio.run(chat_round_trip(launcher.port("BURROW_PORT")))
    # (imported here: test_mailbox imports this module)
    from tests.integration.test_mailbox import (
        an_address_is_verified_from_the_mailbox_and_gets_a_digest,
    )
    an_address_is_verified_from_the_mailbox_and_gets_a_digest(launcher)

    # every worker process answers its own probes, from BURROW_METRICS_PORT on
    first = launcher.port("BURROW_METRICS_PORT")
    for i, worker in enumerate(plan.WORKERS):
        assert f"{worker.name:<14} http://127.0.0.1:{first + i}/metrics" in text
        assert get(f"http://127.0.0.1:{first + i}/readyz")[0] == 200

    # data for the next run: a document, and a job parked in a dead-letter queue
    mongo = f"mongodb://127.0.0.1:{launcher.port('BURROW_DEV_MONGO_PORT')}/?directConnection=true"
    with MongoClient(mongo, serverSelectionTimeoutMS=5000) as client:
        client.burrow.keep.insert_one({"_id": "kept"})
    routed = launcher.api("/api/exchanges/burrow/burrow.jobs/publish", {
        "properties": {"delivery_mode": 2}, "routing_key": "email.dead",
        "payload": "parked job", "payload_encoding": "string"})
    assert routed == {"routed": True}

    assert launcher.interrupt() == 0
    assert "burrow-dev: stopped" in launcher.log.read_text()
    assert_all_ports_free(launcher)
    for i in range(len(plan.WORKERS)):
        ports.ensure_free(first + i, "a worker's probes", "BURROW_METRICS_PORT")

    # the next run (its ports may be new ones: Launcher.up): the data is the same
    launcher.up("--prometheus", "--scrape-interval", "1")
    mongo = f"mongodb://127.0.0.1:{launcher.port('BURROW_DEV_MONGO_PORT')}/?directConnection=true"
    with MongoClient(mongo, serverSelectionTimeoutMS=5000) as client:
        assert client.burrow.keep.find_one({"_id": "kept"}) == {"_id": "kept"}
    parked = launcher.api("/api/queues/burrow/email.dead/get", {
        "count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert [m["payload"] for m in parked] == ["parked job"]  # type: ignore[attr-defined]
    scrapes_every_process_and_rabbitmq(launcher)


def test_a_taken_port_is_reported_before_anything_starts(launcher: Launcher) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", launcher.port("BURROW_DEV_MANAGEMENT_PORT")))
        squatter.listen()
        launcher.start()
        assert launcher.process is not None
        assert launcher.process.wait(60) != 0
    text = launcher.log.read_text()
    assert "is taken" in text and "set BURROW_DEV_MANAGEMENT_PORT to another port" in text
    assert "starting RabbitMQ" not in text


def scrapes_every_process_and_rabbitmq(launcher: Launcher) -> None:
    """A run with ``--prometheus --scrape-interval 1``: Prometheus scrapes every
    process and RabbitMQ with the alert rules loaded; Ctrl-C stops it too."""
    output = launcher.log.read_text()[launcher.offset:]  # this run's
    found = re.search(r"prometheus +(http://127\.0\.0\.1:(\d+))", output)
    assert found, output
    url, port = found.group(1), int(found.group(2))
    config = json.loads((Path(launcher.env["BURROW_DEV_DIR"]) / "prometheus" / "prometheus.yml")
                        .read_text())
    assert config["global"]["scrape_interval"] == "1000ms"
    assert config["rule_files"] == [str(ROOT / "monitoring" / "alerts.yml")]

    def targets() -> list[tuple[str, str, str]]:
        status, body = get(f"{url}/api/v1/targets")
        assert status == 200, body
        return [(t["labels"]["job"], t["health"], t["scrapeUrl"])
                for t in body["data"]["activeTargets"]]

    eventually(lambda: {h for _, h, _ in targets()} == {"up"}, timeout=30)
    prom = launcher.port("BURROW_DEV_PROMETHEUS_PORT")
    first = launcher.port("BURROW_METRICS_PORT")
    # one target per worker process: sequencer, notifier, digester (burrow.devstack.plan)
    assert sorted((job, u) for job, _, u in targets()) == sorted([
        ("burrow-gateway", f"http://127.0.0.1:{launcher.port('BURROW_PORT')}/metrics"),
        *(("burrow-workers", f"http://127.0.0.1:{first + i}/metrics") for i in range(3)),
        ("rabbitmq", f"http://127.0.0.1:{prom}/metrics"),
        ("rabbitmq-detailed", (f"http://127.0.0.1:{prom}/metrics/detailed"
                               "?family=queue_coarse_metrics&family=queue_consumer_count"))])
    status, rules = get(f"{url}/api/v1/rules")
    assert status == 200
    assert len([r for g in rules["data"]["groups"] for r in g["rules"]]) == 9

    assert launcher.interrupt() == 0
    ports.ensure_free(port, "Prometheus", "--prometheus-port")
    assert_all_ports_free(launcher)
