"""Gateway and worker processes: probes, clean exits, and recovery from restarts.

Each test runs the real entry points (``python -m gateway``, ``python -m consumers``) as
child processes against the session's broker and database, and waits on their probes
with deadlines: ``/readyz`` must say 503 while a dependency is down and 200 once it is
back, with no restart of the process itself.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from burrow.devstack import ports
from burrow.devstack.processes import get
from consumers import CONSUMERS
from queues import topology
from tests.conftest import Vhost, eventually

pytestmark = pytest.mark.integration


def test_gateway_and_worker_become_ready_and_export_metrics(
        start, vhost: Vhost, mongo_url: str) -> None:
    gateway = start("gateway", vhost.url("burrow-gateway"), mongo_url)
    worker = start("worker", vhost.url("burrow-worker"), mongo_url)
    gateway.wait("up", "up")
    worker.wait("up", "up")
    for proc in (gateway, worker):
        assert get(proc.url("/healthz"))[0] == 200
        status, _ = get(proc.url("/no-such-path"))
        assert status == 404
        with urllib.request.urlopen(proc.url("/metrics")) as resp:
            text = resp.read().decode()
        assert 'burrow_dependency_up{dependency="broker"} 1.0' in text
        assert 'burrow_dependency_up{dependency="database"} 1.0' in text
    # The worker declared the whole shared topology in its vhost.
    queues = {q["name"] for q in vhost.api("GET", "/api/queues/{vhost}")}  # type: ignore[union-attr]
    assert {q.name for q in topology.build().queues} <= queues
    assert eventually(lambda: connected_users(vhost) == {"burrow-gateway", "burrow-worker"})


def connected_users(vhost: Vhost) -> set[str]:
    connections = vhost.api("GET", "/api/vhosts/{vhost}/connections")
    assert isinstance(connections, list)
    return {c["user"] for c in connections}


def test_sigterm_stops_both_cleanly(start, vhost: Vhost, mongo_url: str) -> None:
    gateway = start("gateway", vhost.url("burrow-gateway"), mongo_url)
    worker = start("worker", vhost.url("burrow-worker"), mongo_url)
    gateway.wait("up", "up")
    worker.wait("up", "up")
    assert gateway.app.stop() == 0
    assert worker.app.stop() == 0
    assert "stopped" in worker.log.read_text()
    # Not on a terminal: every line either wrote is a JSON object a log shipper indexes.
    for app, process in ((gateway, "gateway"), (worker, "+".join(CONSUMERS))):
        lines = app.log.read_text().splitlines()
        assert lines, app.log
        for line in lines:
            entry = json.loads(line)
            assert {"ts", "level", "process", "logger", "event"} <= entry.keys(), line
            assert entry["process"] == process


def test_not_ready_while_the_broker_is_unreachable(start, mongo_url: str) -> None:
    nowhere = f"amqp://burrow-gateway:x@127.0.0.1:{ports.free_port()}/burrow"
    gateway = start("gateway", nowhere, mongo_url)
    gateway.wait("down", "up")
    assert get(gateway.url("/healthz"))[0] == 200  # alive, just not ready


def test_not_ready_with_a_refused_login(start, vhost: Vhost, mongo_url: str) -> None:
    wrong = vhost.url("burrow-gateway").replace("burrow-gateway-test", "wrong")
    gateway = start("gateway", wrong, mongo_url)
    gateway.wait("down", "up")


@pytest.mark.parametrize("dependency", ["broker", "database"])
def test_dependency_restart_503_then_200(start, request: pytest.FixtureRequest, vhost: Vhost,
                                         mongo_url: str, dependency: str) -> None:
    server = request.getfixturevalue("broker" if dependency == "broker" else "mongo_server")
    down = ("down", "up") if dependency == "broker" else ("up", "down")
    gateway = start("gateway", vhost.url("burrow-gateway"), mongo_url)
    worker = start("worker", vhost.url("burrow-worker"), mongo_url)
    gateway.wait("up", "up")
    worker.wait("up", "up")
    server.stop()
    try:
        gateway.wait(*down)
        worker.wait(*down)
    finally:
        server.start()
        server.wait_ready()
    gateway.wait("up", "up")
    worker.wait("up", "up")
    assert gateway.app.exited is None and worker.app.exited is None
    if dependency == "broker":  # both came back on their own, as the same processes
        assert eventually(
            lambda: connected_users(vhost) == {"burrow-gateway", "burrow-worker"})


@pytest.mark.parametrize(("module", "args", "env", "message"), [
    ("gateway", [], {}, "BURROW_AMQP_URL is not set"),
    ("consumers", [], {}, "BURROW_AMQP_URL is not set"),
    ("gateway", [], {"BURROW_AMQP_URL": "amqp://h/v", "BURROW_PORT": "x"},
     "BURROW_PORT='x' is invalid"),
    ("consumers", ["nope"], {}, "unknown consumer 'nope'"),
    ("consumers", ["digester"], {"BURROW_AMQP_URL": "amqp://h/v", "BURROW_JWT_SECRET": ""},
     "BURROW_UNSUBSCRIBE_SECRET is needed"),
    ("consumers", ["notifier"], {"BURROW_AMQP_URL": "amqp://h/v",
                                 "BURROW_APNS_KEY_FILE": "/nonexistent/AuthKey.p8",
                                 "BURROW_APNS_KEY_ID": "K", "BURROW_APNS_TEAM_ID": "T",
                                 "BURROW_APNS_TOPIC": "t"}, "No such file"),
    ("consumers", ["notifier"], {"BURROW_AMQP_URL": "amqp://h/v", "BURROW_FCM_PROJECT": "p"},
     "BURROW_FCM_CREDENTIALS (a service-account JSON file) is needed"),
])
def test_bad_configuration_exits_with_a_clear_message(process_env: dict[str, str], module: str,
                                                      args: list[str], env: dict[str, str],
                                                      message: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, *args], env={**process_env, **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_gateway_exits_on_sigint_too(start, vhost: Vhost, mongo_url: str) -> None:
    gateway = start("gateway", vhost.url("burrow-gateway"), mongo_url)
    gateway.wait("up", "up")
    gateway.app.signal(signal.SIGINT)
    assert gateway.app.process.wait(30) == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(("module", "variable"), [("gateway", "BURROW_PORT"),
                                                  ("consumers", "BURROW_METRICS_PORT")])
def test_a_taken_port_exits_with_a_clear_message(process_env: dict[str, str], module: str,
                                                 variable: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**process_env, "BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:1/burrow",
               variable: str(port)}
        done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr and variable in done.stderr
    assert "Traceback" not in done.stderr
