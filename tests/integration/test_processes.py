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

import aio_pika
import pytest

from burrow.core import ids
from burrow.core.envelopes import Send
from burrow.devstack import plan, ports
from burrow.devstack.processes import get
from burrow.runtime.variables import IGNORED
from queues import topology
from tests.conftest import Vhost, eventually, until
from tests.integration.conftest import Running

pytestmark = pytest.mark.integration


def start_workers(start, vhost: Vhost, mongo_url: str) -> list[Running]:
    """Each worker kind in a process of its own, as its own broker user (plan.WORKERS)."""
    return [start("worker", vhost.url(w.user), mongo_url, *w.args) for w in plan.WORKERS]


def test_gateway_and_workers_become_ready_and_export_metrics(
        start, vhost: Vhost, mongo_url: str) -> None:
    gateway = start("gateway", vhost.url("burrow-gateway"), mongo_url)
    workers = start_workers(start, vhost, mongo_url)
    for proc in (gateway, *workers):
        proc.wait("up", "up")
    for proc in (gateway, *workers):
        assert get(proc.url("/healthz"))[0] == 200
        status, _ = get(proc.url("/no-such-path"))
        assert status == 404
        with urllib.request.urlopen(proc.url("/metrics")) as resp:
            text = resp.read().decode()
        assert 'burrow_dependency_up{dependency="broker"} 1.0' in text
        assert 'burrow_dependency_up{dependency="database"} 1.0' in text
    # Together the workers declared the whole shared topology in their empty vhost.
    queues = {q["name"] for q in vhost.api("GET", "/api/queues/{vhost}")}  # type: ignore[union-attr]
    assert {q.name for q in topology.build().queues} <= queues
    assert eventually(lambda: connected_users(vhost) == USERS)


USERS = {"burrow-gateway", "burrow-sequencer", "burrow-notifier", "burrow-digester"}


def connected_users(vhost: Vhost) -> set[str]:
    connections = vhost.api("GET", "/api/vhosts/{vhost}/connections")
    assert isinstance(connections, list)
    return {c["user"] for c in connections}


def test_sigterm_stops_every_process_cleanly(start, vhost: Vhost, mongo_url: str) -> None:
    gateway = start("gateway", vhost.url("burrow-gateway"), mongo_url)
    workers = start_workers(start, vhost, mongo_url)
    for proc in (gateway, *workers):
        proc.wait("up", "up")
    assert gateway.app.stop() == 0
    for worker in workers:
        assert worker.app.stop() == 0
        assert "stopped" in worker.log.read_text()
    # Not on a terminal: every line each wrote is a JSON object a log shipper indexes.
    for app, process in ((gateway, "gateway"),
                         *((w, kind.name) for w, kind in zip(workers, plan.WORKERS,
                                                             strict=True))):
        lines = app.log.read_text().splitlines()
        assert lines, app.log
        not_json = [line for line in lines if not line.startswith("{")]
        assert not not_json, f"{app.log}: lines that are not JSON:\n" + "\n".join(not_json)
        for line in lines:
            entry = json.loads(line)
            assert {"ts", "level", "process", "logger", "event"} <= entry.keys(), line
            assert entry["process"] == process


async def test_a_worker_started_before_the_ones_it_needs_waits_then_works(
        start, vhost: Vhost, mongo_url: str) -> None:
    """Any worker may start first. The notifier, alone in an empty vhost, declares its own
    queues but is not ready: its user may not declare the sequencer's chat.fanout nor the
    digester's delay tiers, so it waits for them; then it binds notify.messages to
    chat.fanout and takes the messages the sequencer stores."""
    notifier = start("worker", vhost.url("burrow-notifier"), mongo_url, "notifier")
    await until(lambda: "waiting for what another worker declares" in notifier.log_tail(20000))
    assert get(notifier.url("/readyz"))[0] == 503
    queues = {q["name"] for q in vhost.api("GET", "/api/queues/{vhost}")}  # type: ignore[union-attr]
    assert {topology.NOTIFY_MESSAGES, topology.PUSH.due} <= queues
    assert topology.FANOUT not in {e["name"] for e in vhost.api(  # type: ignore[union-attr]
        "GET", "/api/exchanges/{vhost}")}
    others = [start("worker", vhost.url(w.user), mongo_url, *w.args)
              for w in plan.WORKERS if w.name != "notifier"]
    for proc in (notifier, *others):
        proc.wait("up", "up")
    async with await aio_pika.connect(vhost.url("burrow-backend")) as connection:
        ingress = await (await connection.channel()).get_exchange(topology.INGRESS,
                                                                    ensure=False)
        await ingress.publish(aio_pika.Message(Send("r1", "system:t", "c1", "hi").to_json()),
                              ids.message_key("r1"))
    await until(lambda: notifier.metric("burrow_jobs_total", queue=topology.NOTIFY_MESSAGES,
                                        outcome="done") == 1)


def test_client_and_tool_variables_do_not_stop_a_process(start, vhost: Vhost,
                                                         mongo_url: str) -> None:
    """A shell set up for the command-line client or the examples (docs/cli.md) runs the
    gateway too: processes ignore the launcher's, compose's, the clients' and the tests'
    variables (docs/configuration.md), and only those."""
    client = {"BURROW_URL": "https://chat.example", "BURROW_TOKEN": "eyJhbGciOi.x.y",
              "BURROW_CA_FILE": "/nonexistent/ca.pem",
              "BURROW_BACKEND_URL": "amqp://burrow-backend:pw@127.0.0.1:5672/burrow"}
    gateway = start("gateway", vhost.url("burrow-gateway"), mongo_url,
                    **{**dict.fromkeys(IGNORED, "1"), **client})
    gateway.wait("up", "up")


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
    processes = [gateway, *start_workers(start, vhost, mongo_url)]
    for proc in processes:
        proc.wait("up", "up")
    server.stop()
    try:
        for proc in processes:
            proc.wait(*down)
    finally:
        server.start()
        server.wait_ready()
    for proc in processes:
        proc.wait("up", "up")
    assert [proc.app.exited for proc in processes] == [None] * len(processes)
    if dependency == "broker":  # all came back on their own, as the same processes
        assert eventually(lambda: connected_users(vhost) == USERS)


@pytest.mark.parametrize(("module", "args", "env", "message"), [
    ("gateway", [], {}, "BURROW_AMQP_URL is not set"),
    ("consumers", [], {}, "BURROW_AMQP_URL is not set"),
    ("gateway", [], {"BURROW_AMQP_URL": "amqp://h/v", "BURROW_PORT": "x"},
     "BURROW_PORT='x' is invalid"),
    ("consumers", ["nope"], {}, "unknown consumer 'nope'"),
    ("consumers", [], {"BURROW_AMQP_URL": "amqp://h/v", "BURROW_TOKEN": "t",
                       "BURROW_PROT": "8000"},
     "unknown setting BURROW_PROT (did you mean BURROW_PORT?)"),
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
