"""Burrow's own processes for integration tests: ``start`` runs gateways and workers as
children (the real entry points) against the test's vhost and database; ``stack`` runs a
whole chat path (sequencer + gateways) and gives clients and tokens for it.
``shared_stack`` is the same, started once per module (``module_stack``) for tests that
keep to rooms of their own and leave its base processes running: a module that overrides
``stack`` with it saves a start and a stop of both per test (the suite's budget).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from burrow.client import ChatClient
from burrow.core import tokens
from burrow.devstack import mongo, plan, ports, rabbitmq
from burrow.devstack.processes import AppProcess, wait_status
from tests.conftest import JWT_SECRET, Vhost, child_env, fresh_database, fresh_vhost
from tests.fakes.smtp import FakeSmtpServer

READY = 60.0  # generous deadlines: the suite must hold on a busy 2-core machine


class Running:
    def __init__(self, app: AppProcess, port: int, log: Path) -> None:
        self.app, self.port, self.log = app, port, log

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the process's ``/metrics`` as Prometheus reads it (0 if absent)."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as response:
            text = response.read().decode()
        return next((sample.value for family in text_string_to_metric_families(text)
                     for sample in family.samples
                     if sample.name == name and sample.labels == labels), 0.0)

    def exit_code(self, timeout: float) -> int:
        """Wait for the process to end; its exit code. Shows its log when it hangs, so a
        wrong code can be explained from the assertion's message with :meth:`log_tail`."""
        process = self.app.process
        assert process is not None, f"{self.app.name} was never started"
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.app.name} still running\n{self.log_tail()}") from None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait(self, broker: str, database: str) -> None:
        """Wait until /readyz reports these states, with the status that goes with them."""
        ready = broker == database == "up"
        want = {"ready": ready, "checks": {"broker": broker, "database": database}}
        got = wait_status(self.url("/readyz"), 200 if ready else 503, READY,
                          alive=self.app, body=want)
        assert got == (200 if ready else 503, want), (
            f"{self.app.name} /readyz: wanted {want}, last {got}; exit {self.app.exited}\n"
            f"{self.log.read_text()[-3000:]}")


Start = Callable[..., Running]


@pytest.fixture
def start(process_env: dict[str, str], tmp_path: Path, vhost: Vhost,
          mongo_url: str) -> Iterator[Start]:
    """``start(kind, amqp_url, mongo_url, *args, port=None, **env)``: kind is gateway or
    worker; *port* (default: a free one) is the gateway's, or the worker's probes'.

    After the test's vhost and database (it asks for them), so its processes stop before
    they go: a clean stop, though a worker whose vhost is gone stops promptly too
    (tests/integration/test_vhost_gone.py)."""
    with starting(process_env, tmp_path) as run:
        yield run


@contextmanager
def starting(process_env: dict[str, str], directory: Path) -> Iterator[Start]:
    """``start``'s function, its logs and metrics in *directory*; its processes stopped
    afterwards (``start``'s, or a test module's own: tests/integration/test_attachments_s3.py)."""
    started: list[AppProcess] = []

    def run(kind: str, amqp_url: str, mongo_url: str, *args: str, port: int | None = None,
            **extra: str) -> Running:
        port = port or ports.free_port()
        env = {**process_env, "BURROW_AMQP_URL": amqp_url, "BURROW_MONGO_URL": mongo_url,
               **extra}
        env["BURROW_PORT" if kind == "gateway" else "BURROW_METRICS_PORT"] = str(port)
        env["BURROW_METRICS_DIR"] = str(directory / f"metrics-{kind}-{port}")
        log = directory / f"{kind}-{port}.log"
        app = AppProcess(kind, "gateway" if kind == "gateway" else "consumers", env,
                         args=args, log=log)
        app.start()
        started.append(app)
        return Running(app, port, log)

    try:
        yield run
    finally:
        stop_all(started)


def stop_all(apps: list[AppProcess], timeout: float = 20.0) -> None:
    """SIGTERM every process first, then wait for each (SIGKILL after *timeout*): their
    clean stops overlap instead of adding up, a second or so per test with a stack."""
    for app in apps:
        app.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for app in apps:
        if app.process is None:
            continue
        try:
            app.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            app.signal(signal.SIGKILL)
            app.process.wait()


@pytest.fixture
def relay() -> Iterator[FakeSmtpServer]:
    """A capturing SMTP server (its own thread) that worker processes can send to."""
    with FakeSmtpServer() as server:
        yield server


@dataclass
class Stack:
    """A sequencer and gateways on one vhost and database, and helpers to talk to them."""

    start: Start
    vhost: Vhost
    mongo_url: str
    gateways: list[Running] = field(default_factory=list)
    sequencers: list[Running] = field(default_factory=list)
    workers: list[Running] = field(default_factory=list)  # add_worker's, sequencers too
    clients: list[ChatClient] = field(default_factory=list)

    def add_gateway(self, port: int | None = None, **env: str) -> Running:
        """Start a gateway (on *port*: say, where a killed one listened) and wait until ready."""
        gateway = self.start("gateway", self.vhost.url("burrow-gateway"), self.mongo_url,
                             port=port, **env)
        gateway.wait("up", "up")
        self.gateways.append(gateway)
        return gateway

    def add_base(self) -> None:
        """The stack's sequencer and gateway, started together, then waited for: their
        starts overlap (each process's imports and connections; about a second a stack),
        and neither waits for the other, as in a deployment."""
        sequencer = self.start("worker", self.vhost.url(plan.worker("sequencer").user),
                               self.mongo_url, "sequencer")
        gateway = self.start("gateway", self.vhost.url("burrow-gateway"), self.mongo_url)
        self.sequencers.append(sequencer)
        self.workers.append(sequencer)
        self.gateways.append(gateway)
        for process in (sequencer, gateway):
            process.wait("up", "up")

    def add_sequencer(self, **env: str) -> Running:
        worker = self.add_worker("sequencer", **env)
        self.sequencers.append(worker)
        return worker

    def add_worker(self, name: str, **env: str) -> Running:
        """Start ``python -m consumers NAME`` as its own broker user; wait until ready."""
        [worker] = self.add_workers(name, **env)
        return worker

    def add_workers(self, *names: str, **env: str) -> list[Running]:
        """Start a worker process per name, then wait until each is ready (a notifier is
        not ready before the sequencer's chat.fanout and the digester's delay tiers
        exist: :meth:`Vhost.load_topology` or those workers declare them)."""
        workers = [self.start("worker", self.vhost.url(plan.worker(name).user),
                              self.mongo_url, name, **env) for name in names]
        self.workers.extend(workers)
        for worker in workers:
            worker.wait("up", "up")
        return workers

    def token(self, user: str, ttl: float = 3600, roles: tuple[str, ...] = ()) -> str:
        return tokens.mint(JWT_SECRET, user, ttl, roles)

    def http(self, method: str, path: str, user: str | None, body: Any = None,
             gateway: int = 0, token: str | None = None) -> tuple[int, Any]:
        """Call the gateway's HTTP API as *user*; returns (status, JSON body or None)."""
        headers = {"Content-Type": "application/json"}
        if token or user:
            headers["Authorization"] = f"Bearer {token or self.token(user or '')}"
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        request = urllib.request.Request(self.gateways[gateway].url(path), data=data,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, (json.loads(raw) if raw else None)

    def room(self, room: str, owner: str, *members: str) -> None:
        status, body = self.http("POST", "/v1/rooms", owner,
                                 {"id": room, "members": list(members)})
        assert status == 201, body

    async def client(self, user: str, gateways: list[int] | None = None,
                     **kwargs: Any) -> ChatClient:
        urls = [self.gateways[i].ws_url for i in (gateways or range(len(self.gateways)))]
        client = ChatClient(urls, lambda: self.token(user), **kwargs)
        await client.connect()
        self.clients.append(client)
        return client


@pytest.fixture
async def stack(vhost: Vhost, mongo_url: str, start: Start) -> AsyncIterator[Stack]:
    # (start is set up last so its processes stop before the vhost and database go)
    """One sequencer and one gateway; tests add more with ``add_gateway`` / ``add_sequencer``."""
    with_stack = Stack(start, vhost, mongo_url)
    with_stack.add_base()
    yield with_stack
    for client in with_stack.clients:
        await client.close()
    # G2/G4 hold in every test that uses a client, not only the ones about them: a
    # duplicate or a gap any client saw fails the test that caused it.
    violations = [v for client in with_stack.clients for v in client.violations]
    assert not violations, f"seq violations seen by the test's clients: {violations}"


@pytest.fixture(scope="module")
def module_vhost(broker: rabbitmq.RabbitNode) -> Iterator[Vhost]:
    """``vhost``, for a module's stack."""
    with fresh_vhost(broker) as host:
        yield host


@pytest.fixture(scope="module")
def module_mongo_url(mongo_server: mongo.EmbeddedMongo) -> Iterator[str]:
    """``mongo_url``, for a module's stack."""
    with fresh_database(mongo_server) as url:
        yield url


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory, module_vhost: Vhost,
                 module_mongo_url: str) -> Iterator[Stack]:
    """``stack``'s sequencer and gateway, started once for a module (about 4 s a test
    saved: a start and a stop of both). Tests take it through ``shared_stack``."""
    directory = tmp_path_factory.mktemp("module-stack")
    with starting(child_env(directory), directory) as run:
        shared = Stack(run, module_vhost, module_mongo_url)
        shared.add_base()
        yield shared


@pytest.fixture
async def shared_stack(module_stack: Stack) -> AsyncIterator[Stack]:
    """The module's stack as ``stack`` gives it, for a test that keeps to rooms (and
    users' state) of its own and leaves the base sequencer and gateway running: what it
    adds (gateways, sequencers, clients) is stopped after it, and its clients' views are
    checked for gaps and duplicates as ``stack`` checks them. Workers it adds (a notifier,
    a digester) stop after it too, but the vhost's queues are the module's: a test with
    workers keeps to queues' contents of its own, or leaves nothing in them."""
    gateways, sequencers = len(module_stack.gateways), len(module_stack.sequencers)
    workers = len(module_stack.workers)
    base = [*module_stack.gateways, *module_stack.sequencers]
    yield module_stack
    clients, module_stack.clients = module_stack.clients, []
    for client in clients:
        await client.close()
    added = [*module_stack.gateways[gateways:], *module_stack.workers[workers:]]
    del module_stack.gateways[gateways:], module_stack.sequencers[sequencers:]
    del module_stack.workers[workers:]
    stop_all([process.app for process in added])
    violations = [v for client in clients for v in client.violations]
    assert not violations, f"seq violations seen by the test's clients: {violations}"
    stopped = [process.app.name for process in base if process.app.exited is not None]
    assert not stopped, f"the test stopped the module's {stopped}: give it its own stack"


class Raw:
    """A bare WebSocket to the gateway, for protocol tests: send frames, read frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        return frame

    async def recv_until(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        """Skip frames until one of type *kind* (e.g. past message frames to an ack)."""
        return await self.recv_until_any((kind,), timeout)

    async def recv_until_any(self, kinds: tuple[str, ...],
                             timeout: float = 30) -> dict[str, Any]:
        """Skip frames until one whose type is one of *kinds*."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] in kinds:
                return frame

    async def closed(self, timeout: float = 30) -> int | None:
        """Wait for the server to close; return its close code."""
        try:
            async with asyncio.timeout(timeout):
                async for _ in self.ws:
                    pass
        except ConnectionClosed:
            pass
        return self.ws.close_code


@asynccontextmanager
async def raw_ws(url: str, token: str | None, **kwargs: Any) -> AsyncIterator[Raw]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(url, additional_headers=headers, open_timeout=10, ping_interval=None,
                       **kwargs) as ws:
        yield Raw(ws)
