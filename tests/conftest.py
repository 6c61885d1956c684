"""Real servers for the tests, started once per session on free loopback ports.

``broker`` is a private RabbitMQ node (never the developer's running one) loaded with
Burrow's definitions and test passwords; ``vhost`` gives each test an empty virtual host
with the roles' permissions. ``mongo_server`` is the embedded MongoDB-wire server; ``mongo_url`` gives each test
its own database. ``redis_url`` is a private Redis (Debian's redis-server, nothing
persisted) for shared rate limits; tests keep to keys of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from burrow.devstack import mongo, ports, rabbitmq
from burrow.storage import database
from queues import definitions, topology
from tests.tls import ThrowawayCA

PASSWORDS = {r.user: f"{r.user}-test" for r in definitions.ROLES}
JWT_SECRET = "test-secret-for-burrow-tokens-0123456789"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    """The session's certificate authority: the broker's TLS listener, the TLS database
    and TLS gateways have certificates from it (tests/integration/test_tls.py)."""
    return ThrowawayCA(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory,
           tls_ca: ThrowawayCA) -> Iterator[rabbitmq.RabbitNode]:
    config = rabbitmq.NodeConfig(
        directory=tmp_path_factory.mktemp("rabbitmq"), amqp_port=ports.free_port(),
        management_port=ports.free_port(), prometheus_port=ports.free_port(),
        dist_port=ports.free_port(), admin_user="burrow-admin",
        admin_password=PASSWORDS["burrow-admin"],
        base_config=ROOT / "rabbitmq" / "rabbitmq.conf",
        tls=tls_ca.server("rabbitmq"), amqps_port=ports.free_port(),  # AMQP over TLS too
        # the management API's counts (queue depths, connections) every second, not every
        # 5: tests that wait for a depth wait for the next count (test_notifier_isolation)
        extra_config=("collect_statistics_interval = 1000",))
    node = rabbitmq.RabbitNode(config, definitions.render(topology.build(), PASSWORDS))
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        # Killed, not stopped: its data goes with the session, and a clean stop of
        # RabbitMQ 3.10 takes 6 s (its management agent waits 5 s; rabbitmq-server#11070)
        node.stop(timeout=0)


@dataclass(frozen=True)
class Vhost:
    node: rabbitmq.RabbitNode
    name: str

    def url(self, user: str) -> str:
        """AMQP URL of this vhost as *user*, with the test password of its role."""
        return self.node.config.amqp_url(user, PASSWORDS[user], urllib.parse.quote(self.name))

    def tls_url(self, user: str) -> str:
        """The same over the node's TLS listener, verified against the session's CA."""
        return self.node.config.amqps_url(user, PASSWORDS[user],
                                          urllib.parse.quote(self.name))

    def api(self, method: str, path: str, body: object = None) -> object:
        """Management API call; ``{vhost}`` in *path* is this vhost, URL-quoted."""
        return self.node.api(method, path.format(vhost=urllib.parse.quote(self.name, safe="")),
                             body)

    def load_topology(self) -> None:
        """Load the default topology, as rabbitmq/definitions.json does on the brokers of
        ``./dev up``, compose and production: no worker then waits for another."""
        self.api("POST", "/api/definitions/{vhost}",
                 definitions.topology_definitions(topology.build(), self.name))


@contextlib.contextmanager
def fresh_vhost(broker: rabbitmq.RabbitNode) -> Iterator[Vhost]:
    """An empty virtual host with the roles' permissions, deleted afterwards: ``vhost``'s,
    or a test module's own (tests/integration/test_attachments_s3.py)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    host = Vhost(broker, name)
    host.api("PUT", "/api/vhosts/{vhost}")
    for permission in definitions.permissions(name):
        host.api("PUT", f"/api/permissions/{{vhost}}/{permission['user']}",
                 {k: permission[k] for k in ("configure", "write", "read")})
    for topic in definitions.topic_permissions(name):
        host.api("PUT", f"/api/topic-permissions/{{vhost}}/{topic['user']}",
                 {k: topic[k] for k in ("exchange", "write", "read")})
    yield host
    if broker.process is not None:  # a test may have left the node stopped
        host.api("DELETE", "/api/vhosts/{vhost}")


@pytest.fixture
def vhost(broker: rabbitmq.RabbitNode) -> Iterator[Vhost]:
    with fresh_vhost(broker) as host:
        yield host


@contextlib.contextmanager
def running(server: mongo.EmbeddedMongo) -> Iterator[mongo.EmbeddedMongo]:
    """*server* started and answering; killed afterwards (its data is the tests' only:
    a clean stop of SecantusDB waits 2 s for its accept thread)."""
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop(timeout=0)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mongo.EmbeddedMongo]:
    with running(mongo.EmbeddedMongo(tmp_path_factory.mktemp("mongo") / "data",
                                     ports.free_port())) as server:
        yield server


@contextlib.contextmanager
def fresh_database(mongo_server: mongo.EmbeddedMongo) -> Iterator[str]:
    """The URL of a database of its own, dropped afterwards: ``mongo_url``'s, or a test
    module's own."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield mongo_server.database_url(name)
    if mongo_server.process is not None:
        with MongoClient(mongo_server.url, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(name)


@pytest.fixture
def mongo_url(mongo_server: mongo.EmbeddedMongo) -> Iterator[str]:
    with fresh_database(mongo_server) as url:
        yield url


@pytest.fixture
async def db(mongo_url: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """A fresh database of the real server, through Burrow's own client settings."""
    client = database.open_client(mongo_url, 10.0)
    try:
        yield client.get_default_database()
    finally:
        await client.close()


def child_env(directory: Path) -> dict[str, str]:
    """The environment of a Burrow child process: the test's own, minus any BURROW_*
    (``process_env``'s, or a test module's own with a directory of the module's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    env.update({"BURROW_HEALTH_INTERVAL": "0.2", "BURROW_RECONNECT_INTERVAL": "0.5",
                "BURROW_JWT_SECRET": JWT_SECRET,
                "BURROW_DB_TIMEOUT": "1", "BURROW_METRICS_DIR": str(directory / "metrics"),
                # every test's clients share 127.0.0.1 and fire requests in bursts: the
                # limits are off unless a test sets them (tests/integration/test_rate_limits)
                "BURROW_RATE_IP": "100000/100000", "BURROW_RATE_USER": "100000/100000",
                "BURROW_RATE_CONNECTION": "100000/100000",
                "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture
def process_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a Burrow child process: the test's own, minus any BURROW_*."""
    return child_env(tmp_path)


async def until(probe: Callable[[], object], timeout: float = 30.0) -> None:
    """:func:`eventually` from a coroutine, for a probe that may itself be async.

    For state that has no event of its own (a document another process deletes, a
    server that comes back); fails the test after *timeout*.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"not true after {timeout}s"
        await asyncio.sleep(0.1)


def eventually(probe: Callable[[], object], timeout: float = 30.0) -> object:
    """Poll *probe* until it returns something truthy; fail the test after *timeout*.

    For state the broker publishes on its own schedule (the management API's connection
    list is refreshed every few seconds), where there is no event to wait on.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            assert result, f"still {result!r} after {timeout}s"
            return result
        time.sleep(0.2)


class RedisServer:
    """A private redis-server on loopback: its own directory, nothing persisted.

    Never the machine's own Redis: the shared rate-limit tests start and stop it at will.
    """

    def __init__(self, directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            pytest.fail("redis-server is not installed: ./dev test installs it (Debian's "
                        "redis-server package)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.directory), "--save", "", "--appendonly", "no",
             "--logfile", str(self.log), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once the server answers PING; fail with its log if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited {self.process.returncode}:\n{self._tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {self.port} did not answer PING within "
                            f"{timeout}s:\n{self._tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else "(no log)"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private Redis for the whole session (tests keep to their own keys)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), ports.free_port())
    server.start()
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()
