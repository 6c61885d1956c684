"""A private Burrow stack for one benchmark run, on free loopback ports in a temp dir.

A RabbitMQ node with Burrow's definitions (random passwords), the embedded database,
``gateways`` gateway processes and one sequencer, built from :mod:`burrow.devstack`.
Use it as a context manager: everything it started is stopped on exit, also on Ctrl-C
or an exception; the temp dir is removed unless ``keep`` is set.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from burrow.devstack import mongo, ports, rabbitmq
from burrow.devstack.processes import AppProcess, wait_status
from queues import definitions, topology

PROJECT = Path(__file__).resolve().parents[1]
READY = 90.0
# Limits off: the benchmark measures throughput, not the rate limiter.
UNLIMITED = "1000000000/1000000000"


class StackFailed(RuntimeError):
    """A process of the stack did not become ready; the message ends with its log."""


class Gateway:
    def __init__(self, app: AppProcess, port: int, log: Path) -> None:
        self.app, self.port, self.log = app, port, log

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"


class BenchStack:
    """``with BenchStack(gateways=2) as stack:`` then ``stack.gateways``, ``stack.pids()``."""

    def __init__(self, gateways: int = 2, keep: bool = False,
                 extra_env: dict[str, str] | None = None) -> None:
        self.gateway_count = gateways
        self.keep = keep
        self.extra_env = dict(extra_env or {})
        self.jwt_secret = secrets.token_hex(32)
        self.directory = Path(tempfile.mkdtemp(prefix="burrow-bench-"))
        self.passwords = {r.user: secrets.token_hex(12) for r in definitions.ROLES}
        self.node = rabbitmq.RabbitNode(
            rabbitmq.NodeConfig(
                directory=self.directory / "rabbitmq", amqp_port=ports.free_port(),
                management_port=ports.free_port(), prometheus_port=ports.free_port(),
                dist_port=ports.free_port(), admin_user="burrow-admin",
                admin_password=self.passwords["burrow-admin"],
                base_config=PROJECT / "rabbitmq" / "rabbitmq.conf"),
            definitions.render(topology.build(), self.passwords))
        self.db = mongo.EmbeddedMongo(self.directory / "mongo", ports.free_port())
        self.gateways: list[Gateway] = []
        self.sequencer: AppProcess | None = None
        self._apps: list[AppProcess] = []

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _env(self, user: str, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
        url = self.node.config.amqp_url(user, self.passwords[user], definitions.VHOST)
        env.update({
            "BURROW_AMQP_URL": url, "BURROW_MONGO_URL": self.db.database_url("burrow"),
            "BURROW_JWT_SECRET": self.jwt_secret, "BURROW_LOG_LEVEL": "WARNING",
            "BURROW_RATE_CONNECTION": UNLIMITED, "BURROW_RATE_USER": UNLIMITED,
            "BURROW_RATE_IP": UNLIMITED, "BURROW_RATE_FLOOD": UNLIMITED,
            # no server pings in the measurement (clients do not ping either)
            "SANIC_WEBSOCKET_PING_INTERVAL": "3600", "SANIC_WEBSOCKET_PING_TIMEOUT": "3600",
            "PYTHONUNBUFFERED": "1", **self.extra_env, **extra})
        return env

    def start(self) -> None:
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.node.start()
        self.db.start()
        self.db.wait_ready()
        self.node.wait_ready()
        metrics_port = ports.free_port()
        self.sequencer = AppProcess(
            "sequencer", "consumers", self._env("burrow-worker", {
                "BURROW_METRICS_PORT": str(metrics_port),
                "BURROW_METRICS_DIR": str(self.directory / "metrics" / "sequencer")}),
            args=["sequencer"], log=logs / "sequencer.log")
        self._apps.append(self.sequencer)
        self.sequencer.start()
        probes = [(self.sequencer, f"http://127.0.0.1:{metrics_port}/readyz",
                   logs / "sequencer.log")]
        for i in range(self.gateway_count):
            port = ports.free_port()
            log = logs / f"gateway-{i}.log"
            app = AppProcess(f"gateway-{i}", "gateway", self._env("burrow-gateway", {
                "BURROW_PORT": str(port),
                "BURROW_METRICS_DIR": str(self.directory / "metrics" / f"gateway-{i}")}),
                log=log)
            self._apps.append(app)
            app.start()
            self.gateways.append(Gateway(app, port, log))
            probes.append((app, f"http://127.0.0.1:{port}/readyz", log))
        for app, url, log in probes:
            status, body = wait_status(url, 200, READY, alive=app)
            if status != 200:
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise StackFailed(f"{app.name} not ready: {url} answered {status} {body}; "
                                  f"exit {app.exited}\n{tail}")

    def pids(self) -> dict[str, int]:
        """The root pid of each process of the stack, by name."""
        found: dict[str, int] = {}
        for app in self._apps:
            if app.process is not None and app.exited is None:
                found[app.name] = app.process.pid
        if self.node.process is not None:
            found["rabbitmq"] = self.node.process.pid
        if self.db.process is not None:
            found["database"] = self.db.process.pid
        return found

    def stop(self) -> None:
        """Stop every process (reverse order), ignoring Ctrl-C meanwhile; remove the dir."""
        previous = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: nothing to mask
            previous = None
        try:
            for app in reversed(self._apps):
                app.stop()
            self._apps.clear()
            self.db.stop()
            self.node.stop()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if not self.keep:
                shutil.rmtree(self.directory, ignore_errors=True)
