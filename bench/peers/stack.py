"""A private peer stack for one run, on free loopback ports in a temp dir.

``socketio``: a private RabbitMQ node (the same package, base config and start code as
the Burrow stack's, so the broker is not what differs) and ``servers`` Socket.IO
processes sharing rooms through it. ``websockets``: one broadcast server, no broker.
Like :class:`bench.stack.BenchStack` it is a context manager that stops everything it
started on exit, also on Ctrl-C or an exception, and removes the temp dir unless
``keep`` is set.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import Stack, ctrl_c_ignored
from burrow.devstack import ports, rabbitmq
from burrow.devstack.processes import AppProcess
from queues.definitions import RABBIT_VERSION, password_hash

PROJECT = Path(__file__).resolve().parents[2]
KINDS = ("socketio", "websockets")
READY = 90.0
VHOST = "peers"
USER = "peers-admin"
MODULES = {"socketio": "bench.peers.socketio_server",
           "websockets": "bench.peers.broadcast_server"}


class PeerFailed(RuntimeError):
    """A server of the peer stack did not start; the message ends with its log."""


def definitions(password: str) -> dict[str, Any]:
    """One vhost and one administrator on it: all a Socket.IO manager needs (it declares
    its own fanout exchange and queues)."""
    return {
        "rabbit_version": RABBIT_VERSION,
        "users": [{"name": USER, "password_hash": password_hash(password),
                   "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": ["administrator"], "limits": {}}],
        "vhosts": [{"name": VHOST}],
        "permissions": [{"user": USER, "vhost": VHOST, "configure": ".*", "write": ".*",
                         "read": ".*"}],
        "topic_permissions": [], "parameters": [], "global_parameters": [], "policies": [],
        "queues": [], "exchanges": [], "bindings": [],
    }


class Server:
    def __init__(self, app: AppProcess, port: int, log: Path, path: str) -> None:
        self.app, self.port, self.log, self.path = app, port, log, path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"


class PeerStack(Stack):
    """``with PeerStack("socketio", servers=2) as stack:`` then ``stack.ws_urls``."""

    def __init__(self, kind: str, servers: int = 2, keep: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.kind = kind
        # the broker-less ceiling is one process by construction
        self.server_count = servers if kind == "socketio" else 1
        self.keep = keep
        self.directory = Path(tempfile.mkdtemp(prefix=f"burrow-peer-{kind}-"))
        self.password = secrets.token_hex(12)
        self.node: rabbitmq.RabbitNode | None = None
        if kind == "socketio":
            self.node = rabbitmq.RabbitNode(
                rabbitmq.NodeConfig(
                    directory=self.directory / "rabbitmq", amqp_port=ports.free_port(),
                    management_port=ports.free_port(), prometheus_port=ports.free_port(),
                    dist_port=ports.free_port(), admin_user=USER,
                    admin_password=self.password,
                    base_config=PROJECT / "rabbitmq" / "rabbitmq.conf"),
                definitions(self.password))
        self.servers: list[Server] = []

    @property
    def ws_urls(self) -> list[str]:
        return [s.ws_url for s in self.servers]

    def start(self) -> None:
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        args: list[str] = []
        path = "/"
        if self.node is not None:
            self.node.start()
            self.node.wait_ready()
            args = ["--amqp", self.node.config.amqp_url(USER, self.password, VHOST)]
            path = "/socket.io/?EIO=4&transport=websocket"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
        env["PYTHONUNBUFFERED"] = "1"
        for i in range(self.server_count):
            port = ports.free_port()
            name = f"gateway-{self.kind}-{i}"  # "gateway*": the report shows its RSS
            log = logs / f"{name}.log"
            app = AppProcess(name, MODULES[self.kind], env,
                             args=["--port", str(port), *args], log=log)
            self.servers.append(Server(app, port, log, path))
            app.start()
        for server in self.servers:
            _wait_accepting(server)

    def pids(self) -> dict[str, int]:
        """The root pid of each process of the stack, by name (for bench.report.sample)."""
        found = {s.app.name: s.app.process.pid for s in self.servers
                 if s.app.process is not None and s.app.exited is None}
        if self.node is not None and self.node.process is not None:
            found["rabbitmq"] = self.node.process.pid
        return found

    def stop(self) -> None:
        """Stop the servers, then the broker, ignoring Ctrl-C meanwhile; remove the dir."""
        try:
            with ctrl_c_ignored():
                for server in reversed(self.servers):
                    server.app.stop()
                if self.node is not None:
                    self.node.stop()
        finally:
            if not self.keep:
                shutil.rmtree(self.directory, ignore_errors=True)


def _wait_accepting(server: Server, timeout: float = READY) -> None:
    """Wait until *server*'s port accepts a TCP connection; raise :exc:`PeerFailed` with
    its log's tail if it exits first or the time runs out.

    A TCP accept is enough: each server opens its port only once it is ready (the
    Socket.IO one after its broker queue is bound).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.app.exited is None:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    tail = server.log.read_text(errors="replace")[-3000:] if server.log.exists() else ""
    state = (f"exited with {server.app.exited}" if server.app.exited is not None
             else f"not accepting on port {server.port} after {timeout:.0f}s")
    raise PeerFailed(f"{server.app.name} {state}\n{tail}")
