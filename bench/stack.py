"""A private Burrow stack for one benchmark run, on free loopback ports in a temp dir.

The product's process set (:mod:`burrow.devstack.plan`, what ``./dev up`` and compose
run): a RabbitMQ node with Burrow's definitions (random passwords), the embedded
database, ``gateways`` gateway processes, ``sequencers`` sequencer processes (the first
starts as the active consumer of every shard queue; under load the others take their
share, docs/scaling.md "Sequencer scale-out"), the notifier and the
digester, with pushes going to local FCM and APNs servers and digests to a local SMTP
server (:mod:`bench.providers`, a process of its own). ``notifications=False`` leaves
the notifier, the digester and the providers out: a reduced stack, and reports say so.
Use it as a context manager: everything it started is stopped on exit, also on Ctrl-C or
an exception; the temp dir is removed unless ``keep`` is set.

The fault mode (:mod:`bench.faults`) uses :meth:`BenchStack.kill_gateway`,
:meth:`BenchStack.kill_active_sequencer` and :meth:`BenchStack.restart_rabbitmq`, the
scale mode :mod:`bench.sequencers` (start, stop and kill sequencers); they block, so
call them in a thread while the load runs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bench import seed, sequencers
from bench.measure import Stack, ctrl_c_ignored
from bench.report import tree
from burrow.devstack import mongo, plan, ports, rabbitmq
from burrow.devstack.processes import AppProcess, wait_status
from queues import definitions, topology

T = TypeVar("T")
PROJECT = Path(__file__).resolve().parents[1]
READY = 90.0
# Limits off: the benchmark measures throughput, not the rate limiter.
UNLIMITED = "1000000000/1000000000"
# Where the bench's configuration differs from ./dev up's, and why (bench/README.md):
BENCH_ENV = {
    "BURROW_LOG_LEVEL": "WARNING",
    "BURROW_RATE_CONNECTION": UNLIMITED, "BURROW_RATE_USER": UNLIMITED,
    "BURROW_RATE_IP": UNLIMITED, "BURROW_RATE_FLOOD": UNLIMITED,
    # every client of the load comes from 127.0.0.1: one address
    "BURROW_MAX_CONNECTIONS_IP": "1000000",
    # no server pings in the measurement (clients do not ping either)
    "SANIC_WEBSOCKET_PING_INTERVAL": "3600", "SANIC_WEBSOCKET_PING_TIMEOUT": "3600",
    # pushes and hourly digests fall due inside a run of seconds, not after it: the
    # notifier and the digester do in one run the work 30 s and 1 h would spread out
    "BURROW_PUSH_DELAY": "10", "BURROW_DIGEST_HOURLY": "30",
}


class Broker(Protocol):
    """What the stack asks of its broker: one RabbitNode, or a cluster of them
    (bench/cluster_stack.py)."""

    def start(self) -> None: ...
    def wait_ready(self, timeout: float = ...) -> None: ...
    def stop(self, timeout: float = ...) -> None: ...
    def api(self, method: str, path: str, body: Any = ..., timeout: float = ...) -> Any: ...


class StackFailed(RuntimeError):
    """A process of the stack did not become ready; the message ends with its log."""


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Gateway:
    def __init__(self, app: AppProcess, port: int, log: Path) -> None:
        self.app, self.port, self.log = app, port, log

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"


class BenchStack(Stack):
    """``with BenchStack(gateways=2) as stack:`` then ``stack.gateways``, ``stack.pids()``."""

    def __init__(self, gateways: int = 2, keep: bool = False,
                 extra_env: dict[str, str] | None = None, sequencers: int = 1,
                 notifications: bool = True, history: int = 0) -> None:
        if gateways < 1 or sequencers < 1:
            raise ValueError("a stack needs at least one gateway and one sequencer")
        self.gateway_count = gateways
        self.sequencer_count = sequencers
        self.notifications = notifications
        self.history = history
        self.keep = keep
        self.extra_env = dict(extra_env or {})
        self.jwt_secret = secrets.token_hex(32)
        self.directory = Path(tempfile.mkdtemp(prefix="burrow-bench-"))
        self.passwords = {r.user: secrets.token_hex(12) for r in definitions.ROLES}
        self.node: Broker = self._make_broker()
        self.db = mongo.EmbeddedMongo(self.directory / "mongo", ports.free_port())
        self.gateways: list[Gateway] = []
        self.sequencers: list[AppProcess] = []
        self.workers: dict[str, int] = {}  # worker process name -> its metrics port
        self.providers: AppProcess | None = None
        self.shards = int(self.extra_env.get("BURROW_SHARDS", topology.DEFAULT_SHARDS))
        self._apps: list[AppProcess] = []
        # held while the node restarts (a fault, in a thread): stop() waits for it, so
        # an interrupted run cannot leave a node started after the stop
        self._node_lock = threading.Lock()

    def _make_broker(self) -> Broker:
        """The broker (one node; bench/cluster_stack.py overrides it with a cluster)."""
        return rabbitmq.RabbitNode(
            rabbitmq.NodeConfig(
                directory=self.directory / "rabbitmq", amqp_port=ports.free_port(),
                management_port=ports.free_port(), prometheus_port=ports.free_port(),
                dist_port=ports.free_port(), admin_user="burrow-admin",
                admin_password=self.passwords["burrow-admin"],
                base_config=PROJECT / "rabbitmq" / "rabbitmq.conf"),
            definitions.render(topology.build(), self.passwords))

    def _amqp_url(self, user: str) -> str:
        """``BURROW_AMQP_URL`` of one process logging in as *user* (a cluster: a list)."""
        return self.rabbit_node().config.amqp_url(user, self.passwords[user], definitions.VHOST)

    def _broker_pids(self) -> dict[str, int]:
        """The broker's root pid(s) by name, for the CPU and memory figures."""
        process = self.rabbit_node().process
        return {"rabbitmq": process.pid} if process is not None else {}

    def rabbit_node(self) -> rabbitmq.RabbitNode:
        """The single node (a plain stack's broker; a cluster stack has none)."""
        assert isinstance(self.node, rabbitmq.RabbitNode), "a cluster stack overrides this"
        return self.node

    @property
    def description(self) -> str:
        """Which stack this is, for the report."""
        workers = [w.name for w in plan.WORKERS
                   if self.notifications or w.name == "sequencer"]
        if self.sequencer_count > 1:
            workers[0] = f"{self.sequencer_count} sequencers"
        text = f"{self.gateway_count} gateways, " + ", ".join(workers)
        if self.notifications:
            return f"full: {text}; pushes to local FCM/APNs servers, digests to local SMTP"
        return f"REDUCED (no notifier, no digester): {text}"

    @property
    def sequencer(self) -> AppProcess | None:
        """The first sequencer (the active one until a fault)."""
        return self.sequencers[0] if self.sequencers else None

    def _env(self, user: str, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
        env.update({
            "BURROW_AMQP_URL": self._amqp_url(user),
            "BURROW_MONGO_URL": self.db.database_url("burrow"),
            "BURROW_JWT_SECRET": self.jwt_secret, **BENCH_ENV,
            "PYTHONUNBUFFERED": "1", **self.extra_env, **extra})
        return env

    def _start_providers(self) -> dict[str, str]:
        """Start :mod:`bench.providers`; returns the environment that points at it."""
        directory = self.directory / "providers"
        providers = self.providers = AppProcess(
            # it stands in for FCM, APNs and SMTP and never uses the broker
            "providers", "bench.providers", self._env(plan.worker("notifier").user, {}),
            args=[str(directory)], log=self.directory / "logs" / "providers.log")
        providers.start()
        path = directory / "providers.json"
        if not self._poll(lambda: path.exists() or providers.exited is not None, READY) \
                or not path.exists():
            raise StackFailed(f"the local push and mail servers did not start: exit "
                              f"{providers.exited}")
        env: dict[str, str] = json.loads(path.read_text())
        return env

    def worker_processes(self) -> list[tuple[str, list[str]]]:
        """(process name, consumers) of each worker process: the product's set
        (:data:`burrow.devstack.plan.WORKERS`), the sequencer as many times as asked."""
        found: list[tuple[str, list[str]]] = []
        for worker in plan.WORKERS:
            if worker.name == "sequencer":
                found += [("sequencer" if self.sequencer_count == 1 else f"sequencer-{i}",
                           worker.args) for i in range(self.sequencer_count)]
            elif self.notifications:
                found.append((worker.name, worker.args))
        return found

    def _worker(self, name: str, consumers: list[str], logs: Path,
                extra: dict[str, str]) -> tuple[AppProcess, str, Path]:
        metrics_port = ports.free_port()
        log = logs / f"{name}.log"
        user = next(w.user for w in plan.WORKERS if w.args == consumers)
        app = AppProcess(name, plan.WORKER_MODULE, self._env(user, {
            "BURROW_METRICS_PORT": str(metrics_port),
            # names its AMQP connection "worker bench-<name> (sequencer)"
            "BURROW_INSTANCE_ID": f"bench-{name}",
            "BURROW_METRICS_DIR": str(self.directory / "metrics" / name), **extra}),
            args=consumers, log=log)
        self._apps.append(app)
        self.workers[name] = metrics_port
        return app, f"http://127.0.0.1:{metrics_port}/readyz", log

    def start(self) -> None:
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.node.start()
        seed.copy_into(self.history, self.db.storage)
        self.db.start()
        # every worker process gets the same environment, as under ./dev up
        providers = self._start_providers() if self.notifications else {}
        self._worker_extra = providers  # for a sequencer started later (start_sequencer)
        self.db.wait_ready()
        self.node.wait_ready()
        probes: list[tuple[AppProcess, str, Path]] = []
        for name, consumers in self.worker_processes():
            probe = self._worker(name, consumers, logs, providers)
            probes.append(probe)
            if consumers == ["sequencer"]:
                self.sequencers.append(probe[0])  # started below, the first one first
            else:
                probe[0].start()
        self.sequencers[0].start()
        for i in range(self.gateway_count):
            port = ports.free_port()
            log = logs / f"gateway-{i}.log"
            app = AppProcess(f"gateway-{i}", plan.GATEWAY_MODULE, self._env(plan.GATEWAY_USER, {
                "BURROW_PORT": str(port),
                "BURROW_METRICS_DIR": str(self.directory / "metrics" / f"gateway-{i}")}),
                log=log)
            self._apps.append(app)
            app.start()
            self.gateways.append(Gateway(app, port, log))
            probes.append((app, f"http://127.0.0.1:{port}/readyz", log))
        if self.sequencer_count > 1:
            # The first one becomes the active consumer of every shard before the others
            # subscribe: every run starts alike, and the others take their share of the
            # shards under load (consumers/shard_balance.py).
            self._wait_active(self.sequencers[0], probes[0][2])
            for app in self.sequencers[1:]:
                app.start()
        for app, url, log in probes:
            status, body = wait_status(url, 200, READY, alive=app)
            if status != 200:
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise StackFailed(f"{app.name} not ready: {url} answered {status} {body}; "
                                  f"exit {app.exited}\n{tail}")
        if self.sequencer_count > 1:
            self._wait_consumers(self.sequencer_count)

    def worker_metrics(self) -> dict[str, str]:
        """Each worker process's ``/metrics`` text, by process name ("" if unreachable)."""
        found = {}
        for name, port in self.workers.items():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=5) as response:
                    found[name] = response.read().decode()
            except OSError:
                found[name] = ""
        return found

    def queue_depths(self, names: Collection[str]) -> dict[str, dict[str, Any]]:
        """Messages ready and unacknowledged, and consumers, of each queue of *names*
        (management API)."""
        path = (f"/api/queues/{urllib.parse.quote(definitions.VHOST, safe='')}"
                "?columns=name,messages_ready,messages_unacknowledged,consumers")
        return {q["name"]: {"ready": q.get("messages_ready"),
                            "unacked": q.get("messages_unacknowledged"),
                            "consumers": q.get("consumers")}
                for q in self.node.api("GET", path, timeout=5) if q.get("name") in names}

    # ---- the shard queues' consumers (RabbitMQ management API) -------------------------

    def shard_consumers(self) -> dict[str, list[tuple[str, bool]]]:
        """Per shard queue: (connection name, active) of each consumer, as the broker sees it."""
        # A consumer's channel names its connection by address; the client-provided name
        # (``worker bench-<name> (sequencer)``) is on the connection.
        # (The API shows an object it has no stats for yet as [] instead of {}.)
        named: dict[str, str] = {}
        for connection in self.node.api("GET", "/api/connections", timeout=5):
            properties = _mapping(connection.get("client_properties"))
            provided = (connection.get("user_provided_name")
                        or properties.get("connection_name"))
            named[str(connection.get("name"))] = str(provided or "")
        out: dict[str, list[tuple[str, bool]]] = {}
        for index in range(self.shards):
            name = topology.shard_queue(index)
            path = (f"/api/queues/{urllib.parse.quote(definitions.VHOST, safe='')}/"
                    f"{urllib.parse.quote(name, safe='')}")
            info: dict[str, Any] = self.node.api("GET", path, timeout=5)
            active_tag = info.get("single_active_consumer_tag")
            found = []
            for consumer in info.get("consumer_details", []):
                channel = _mapping(consumer.get("channel_details"))
                address = str(channel.get("connection_name", ""))
                connection = named.get(address, address)
                active = (consumer.get("activity_status") == "single_active"
                          or consumer.get("consumer_tag") == active_tag)
                found.append((connection, active))
            out[name] = found
        return out

    def shard_queues(self, wait: float = 10.0) -> dict[str, dict[str, Any]]:
        """Per shard queue: messages ready and unacknowledged, consumers, and the active
        one's name (a stalled shard: messages ready and a full prefetch unacknowledged).

        The management API's figures are up to ``collect_statistics_interval`` (5 s) old
        and missing (None) until the first collection after a restart: this waits up to
        *wait* seconds for them.
        """
        def complete() -> dict[str, dict[str, Any]] | None:
            found = self._shard_queues()
            if found and all(None not in q.values() for q in found.values()):
                return found
            return None

        return self._poll(complete, wait) or self._shard_queues()

    def _shard_queues(self) -> dict[str, dict[str, Any]]:
        active = self.active_sequencers()
        return {name: {**depth, "active": active[name]}
                for name, depth in sorted(self.queue_depths(active).items())}

    def _sequencer_of(self, connection_name: str) -> AppProcess | None:
        for app in self.sequencers:
            if f"bench-{app.name} " in connection_name:
                return app
        return None

    def active_sequencers(self) -> dict[str, str | None]:
        """Per shard queue: the name of the sequencer that is its active consumer (or None)."""
        out: dict[str, str | None] = {}
        for queue, consumers in self.shard_consumers().items():
            apps = [self._sequencer_of(c) for c, active in consumers if active]
            out[queue] = apps[0].name if apps and apps[0] is not None else None
        return out

    def active_sequencer(self) -> AppProcess | None:
        """The sequencer active on the most shard queues, as the management API shows."""
        counts = Counter(name for name in self.active_sequencers().values() if name)
        if not counts:
            return None
        name = counts.most_common(1)[0][0]
        return next(app for app in self.sequencers if app.name == name)

    @staticmethod
    def _poll(done: Callable[[], T], timeout: float) -> T | None:
        """Call *done* until it returns a true value (management API errors count as not
        yet); return it, or the last value after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        value: T | None = None
        while True:
            try:
                value = done()
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                value = None
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    def _wait_active(self, app: AppProcess, log: Path) -> None:
        active = self._poll(lambda: set(self.active_sequencers().values()) == {app.name}
                            and app.exited is None, READY)
        if not active:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise StackFailed(f"{app.name} did not become the active consumer of every "
                              f"shard: {self._describe()}; exit {app.exited}\n{tail}")

    def _wait_consumers(self, count: int) -> None:
        ok = self._poll(lambda: all(len(c) >= count
                                    for c in self.shard_consumers().values()), READY)
        if not ok:
            raise StackFailed(f"not every sequencer consumes every shard: {self._describe()}")

    def _describe(self) -> str:
        try:
            return str(self.shard_consumers())
        except (OSError, urllib.error.URLError, ValueError) as exc:
            return f"(management API: {exc})"

    # ---- faults ----------------------------------------------------------------------

    def start_sequencer(self) -> tuple[AppProcess, str]:
        """Start one more sequencer process during a run (scale-up); returns it and its
        readiness URL without waiting."""
        name = f"sequencer-{len(self.sequencers)}"
        app, url, _ = self._worker(name, ["sequencer"], self.directory / "logs",
                                   getattr(self, "_worker_extra", {}))
        self.sequencers.append(app)
        app.start()
        return app, url

    def kill9(self, app: AppProcess) -> list[int]:
        """kill -9 *app* and everything under it (:mod:`bench.sequencers`)."""
        return self._kill9(app)

    @staticmethod
    def _kill9(app: AppProcess) -> list[int]:
        """kill -9 the process and everything under it; wait until the root is reaped."""
        process = app.process
        if process is None or process.poll() is not None:
            return []
        members = tree(process.pid)
        app.signal(signal.SIGKILL)  # its process group (it runs in a session of its own)
        for pid in members:  # and anything that left the group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
        return members

    def kill_gateway(self, index: int) -> dict[str, Any]:
        """kill -9 gateway *index* (Sanic manager and worker); it is not restarted."""
        gateway = self.gateways[index]
        start = time.monotonic()
        pids = self._kill9(gateway.app)
        return {"victim": gateway.app.name, "pids": pids,
                "action_s": round(time.monotonic() - start, 3)}

    def kill_active_sequencer(self) -> dict[str, Any]:
        """kill -9 the sequencer active on the most shards, then watch the others take
        its shards (:func:`bench.sequencers.kill_busiest`: ``owned_s`` from the
        processes' metrics, ``takeover_s`` from the management API: every shard with
        exactly one active consumer, none the victim's)."""
        return sequencers.kill_busiest(self)

    def restart_rabbitmq(self) -> dict[str, Any]:
        """Stop the node (SIGTERM, clean) and start it again on the same ports and data
        directory; returns when it is ready again (``down_s``: stop to ready)."""
        with self._node_lock:
            start = time.monotonic()
            self.node.stop()
            stopped = time.monotonic()
            self.node.start()
            self.node.wait_ready()
        return {"victim": "rabbitmq", "stop_s": round(stopped - start, 3),
                "down_s": round(time.monotonic() - start, 3)}

    def pids(self) -> dict[str, int]:
        """The root pid of each process of the stack, by name."""
        found: dict[str, int] = {}
        for app in self._apps:
            if app.process is not None and app.exited is None:
                found[app.name] = app.process.pid
        found.update(self._broker_pids())
        if self.db.process is not None:
            found["database"] = self.db.process.pid
        return found

    def stop(self) -> None:
        """Stop every process (reverse order), ignoring Ctrl-C meanwhile; remove the dir."""
        try:
            with ctrl_c_ignored():
                for app in reversed(self._apps):
                    app.stop()
                self._apps.clear()
                if self.providers is not None:
                    self.providers.stop()
                self.db.stop()
                with self._node_lock:
                    self.node.stop()
        finally:
            if not self.keep:
                shutil.rmtree(self.directory, ignore_errors=True)
