"""Several private RabbitMQ nodes on loopback, clustered: ``./dev up --cluster 3``, the
cluster tests' fixture (tests/integration/cluster.py) and the fault benchmark.

Each node is a :class:`~burrow.devstack.rabbitmq.RabbitNode` of its own (directory,
ports, node name ``burrow-<AMQP port>@localhost``). What makes them one cluster:

- **One Erlang cookie**, made once (mode 600) in the cluster's directory and copied into
  every node's HOME, where Erlang reads it: nodes with other cookies cannot talk.
- **Classic-config peer discovery**: every node's rabbitmq.conf lists every node name.
  The nodes start together; the first to take the discovery lock finds no running peer
  and, after ``discovery_retry_limit`` tries, starts the cluster; the others take the
  lock after it and join it. A node whose database exists already (a restart, a second
  ``./dev up``) skips discovery and rejoins the cluster it belongs to. Chosen over
  ``rabbitmqctl join_cluster``: no stop_app/start_app round per node, and it is how a
  real deployment (compose's cluster variant) forms.
- **Distribution**: each node listens for its peers on its own ``RABBITMQ_DIST_PORT``;
  they find each other's through epmd on its default port 4369 (``ERL_EPMD_PORT`` unset:
  one epmd for every Erlang node of the machine, which is fine as the names are unique;
  a cluster on another epmd port would need the variable set alike for every node and
  for rabbitmqctl).

For the fault benchmark (bench/cluster_faults.py) each node opens its connections to its
peers from a loopback address of its own (:func:`dist_source`), so that iptables can cut
one node off (:meth:`Cluster.partition`), and nodes see a silent peer down after
:data:`NET_TICKTIME` (10 s; production keeps RabbitMQ's 60). :meth:`Cluster.pause`
freezes a node instead (SIGSTOP) where iptables is not allowed.

Burrow's definitions are imported **once the cluster is whole**, through node 1's HTTP
API (each node loads only the admin user at boot): a quorum queue takes as members the
nodes running when it is declared, so loading them at each node's boot would give every
queue the first node alone (3.10 does not grow a queue onto nodes that join later). ``queue_leader_locator = balanced`` puts each
new queue's leader on the node that leads fewest, so leaders (the shard queues' too)
spread; ``cluster_partition_handling = pause_minority`` is what a three-node cluster
runs with (a node cut off from the others pauses rather than diverge).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from burrow.devstack import ports, rabbitmq

MAX_NODES = 9
# The first node to take the discovery lock always exhausts its tries (its peers wait for
# the lock, so none is running yet): 3 x 0.5 s rather than RabbitMQ's 10 x 0.5 s.
DISCOVERY_RETRIES = 3
DISCOVERY_INTERVAL_MS = 500
# Seconds without a word from a peer after which a node counts it down (a frozen or cut
# off node). RabbitMQ's default, what production keeps, is 60 (a peer is seen down after
# 45-75 s); the dev cluster takes 10 (7.5-12.5 s) so that the fault benchmark's partition
# and the tests see a cut-off node down, and pause_minority pause it, in seconds. The
# ticks cost nothing worth measuring (one small message per peer every 2.5 s).
NET_TICKTIME = 10


def dist_source(index: int) -> str:
    """The loopback address node *index* (from 0) opens its connections to its peers from
    (127.0.1.1, 127.0.1.2...; every 127/8 address is local on Linux). It lets a firewall
    rule tell that node's outgoing cluster traffic from its peers' (:meth:`Cluster.partition`):
    on one address they would all come from 127.0.0.1 and random ports."""
    return f"127.0.1.{index + 1}"


class ClusterFailed(rabbitmq.NodeFailed):
    """The nodes did not form one cluster (or a node did not come up)."""


@dataclass(frozen=True)
class Placement:
    """Where a quorum queue lives: its leader and its members (node names)."""

    name: str
    leader: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class FirstPorts:
    """Node 1's ports; node *i* (from 0) takes each plus *i* (5672, 5673, 5674...)."""

    amqp: int
    management: int
    prometheus: int
    dist: int


def node_configs(directory: Path, count: int, admin_user: str, admin_password: str,
                 base_config: Path | None, first: FirstPorts | None = None
                 ) -> list[rabbitmq.NodeConfig]:
    """*count* node configs under *directory* (``node-1``...), on consecutive ports from
    *first*, or on free ports when *first* is None (tests: several sessions at once)."""
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"a cluster has 1 to {MAX_NODES} nodes, not {count}")

    def port(base: int, index: int) -> int:
        return base + index if first is not None else ports.free_port()

    return [rabbitmq.NodeConfig(
        directory=directory / f"node-{i + 1}",
        amqp_port=port(first.amqp if first else 0, i),
        management_port=port(first.management if first else 0, i),
        prometheus_port=port(first.prometheus if first else 0, i),
        dist_port=port(first.dist if first else 0, i),
        admin_user=admin_user, admin_password=admin_password, base_config=base_config)
        for i in range(count)]


def cluster_config(names: Sequence[str]) -> tuple[str, ...]:
    """The rabbitmq.conf lines that make nodes *names* one cluster (module docstring)."""
    return (
        "cluster_formation.peer_discovery_backend = classic_config",
        *(f"cluster_formation.classic_config.nodes.{i} = {name}"
          for i, name in enumerate(names, 1)),
        f"cluster_formation.discovery_retry_limit = {DISCOVERY_RETRIES}",
        f"cluster_formation.discovery_retry_interval = {DISCOVERY_INTERVAL_MS}",
        "queue_leader_locator = balanced",
        "cluster_partition_handling = pause_minority",
        f"net_ticktime = {NET_TICKTIME}",
    )


class ClusterNode(rabbitmq.RabbitNode):
    """A node of a :class:`Cluster`: a :class:`RabbitNode` whose connections to its peers
    leave from its own loopback address (:func:`dist_source`)."""

    def __init__(self, config: rabbitmq.NodeConfig, definitions: dict[str, Any],
                 index: int) -> None:
        super().__init__(config, definitions)
        self.index = index

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        ip = dist_source(self.index).replace(".", ",")
        env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = (
            f"-kernel inet_dist_connect_options [{{ip,{{{ip}}}}}]")
        return env


class Cluster:
    """:meth:`start`, then :meth:`wait_ready` (formed, definitions imported); :meth:`stop`.

    *definitions*: Burrow's (:func:`queues.definitions.render`), imported once on node 1.
    """

    def __init__(self, directory: Path, configs: Sequence[rabbitmq.NodeConfig],
                 definitions: dict[str, Any]) -> None:
        self.directory = directory
        self.definitions = definitions
        names = [c.nodename for c in configs]
        # At boot each node loads the admin user alone (to answer the HTTP API); the rest
        # comes with load_definitions, once every node has joined.
        admin = [u for u in definitions.get("users", []) if u["name"] == configs[0].admin_user]
        if not admin:
            raise ValueError(f"the definitions have no user {configs[0].admin_user!r}")
        self.nodes = [ClusterNode(
            replace(c, extra_config=(*c.extra_config, *cluster_config(names))),
            {"users": admin}, index) for index, c in enumerate(configs)]
        self.paused: set[int] = set()      # nodes frozen by pause() (SIGSTOP)
        self._rules: dict[int, list[list[str]]] = {}  # partition(): iptables rules, by node

    @property
    def names(self) -> list[str]:
        return [node.config.nodename for node in self.nodes]

    def amqp_urls(self, user: str, password: str, vhost: str) -> list[str]:
        """Every node's AMQP URL as *user*, in node order."""
        return [node.config.amqp_url(user, password, vhost) for node in self.nodes]

    def start(self) -> None:
        """Start every node at once (they form the cluster among themselves)."""
        cookie = self._cookie()
        for node in self.nodes:
            node.config.directory.mkdir(parents=True, exist_ok=True)
            _write_private(node.config.directory / ".erlang.cookie", cookie)
            node.start()

    def _cookie(self) -> str:
        """The cluster's Erlang cookie: made once, kept between runs (mode 600)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "erlang.cookie"
        if path.exists():
            return path.read_text().strip()
        cookie = secrets.token_hex(24)
        _write_private(path, cookie)
        return cookie

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until every node answers, all are one cluster, and the definitions are
        imported; raises :exc:`ClusterFailed` naming the node that did not join."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.wait_ready(max(1.0, deadline - time.monotonic()))
        self.wait_formed(max(1.0, deadline - time.monotonic()))
        self.load_definitions()

    def wait_formed(self, timeout: float = 60.0) -> None:
        """Wait until every running node sees every node of the cluster running."""
        deadline = time.monotonic() + timeout
        while True:
            views = {node.config.nodename: self._running_seen_by(node)
                     for node in self.nodes if node.process is not None}
            if all(view == set(self.names) for view in views.values()):
                return
            if time.monotonic() > deadline:
                raise ClusterFailed(
                    "the nodes did not form one cluster within "
                    f"{timeout:.0f}s; running nodes each one sees: "
                    + "; ".join(f"{name}: {sorted(view)}" for name, view in views.items())
                    + "".join(node.log_tail() for node in self.nodes))
            time.sleep(0.25)

    @staticmethod
    def _running_seen_by(node: rabbitmq.RabbitNode) -> set[str]:
        try:
            return {n["name"] for n in node.api("GET", "/api/nodes", timeout=5)
                    if n.get("running")}
        except (OSError, urllib.error.URLError, ValueError):
            return set()

    def load_definitions(self) -> None:
        """Import the definitions on node 1, every node running: each quorum queue gets
        them all as members. Again at each start: passwords follow the environment, and
        queues and exchanges that exist stay as they are (with their members)."""
        self.nodes[0].api("POST", "/api/definitions", self.definitions, timeout=120)

    def recreate_changed_exchanges(self) -> list[str]:
        """:meth:`RabbitNode.recreate_changed_exchanges` for the cluster (a cluster kept
        from an older Burrow); the recreated exchanges' names."""
        return self.nodes[0].recreate_changed_exchanges(self.definitions)

    def live_node(self) -> rabbitmq.RabbitNode:
        """A node that is running (for API calls while another is down), neither frozen
        nor cut off (their API hangs or is paused)."""
        for index, node in enumerate(self.nodes):
            if index in self.paused or index in self._rules:
                continue
            if node.process is not None and node.process.poll() is None:
                return node
        raise ClusterFailed("no node of the cluster is running")

    def placement(self, vhost: str) -> dict[str, Placement]:
        """Leader and members of each quorum queue of *vhost*, by queue name."""
        path = (f"/api/queues/{urllib.parse.quote(vhost, safe='')}"
                "?columns=name,type,leader,members")
        # (leader and members are null for a queue whose stats are not collected yet)
        return {q["name"]: Placement(q["name"], q.get("leader") or "",
                                     tuple(sorted(m for m in q.get("members") or [] if m)))
                for q in self.live_node().api("GET", path, timeout=30)
                if q.get("type") == "quorum"}

    def kill(self, index: int) -> None:
        """SIGKILL node *index* (from 0) and its process group: a crash, no goodbye."""
        node = self.nodes[index]
        process, node.process = node.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def restart(self, index: int, timeout: float = 120.0) -> None:
        """Start node *index* again (its database makes it rejoin) and wait until the
        cluster sees it running."""
        node = self.nodes[index]
        node.stop()
        node.start()
        node.wait_ready(timeout)
        self.wait_formed(timeout)

    def stop_node(self, index: int, timeout: float = 60.0) -> None:
        """Stop node *index* gracefully (SIGTERM: RabbitMQ's clean shutdown, which hands
        its queues' leadership over), SIGKILL after *timeout*. :meth:`restart` starts it."""
        self.nodes[index].stop(timeout)

    def _node_pids(self, index: int) -> list[int]:
        process = self.nodes[index].process
        if process is None or process.poll() is not None:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == process.pid:
                        found.append(int(entry))
                except ProcessLookupError:
                    continue
        return found

    def pause(self, index: int) -> None:
        """Freeze node *index* (SIGSTOP to its process group: the Erlang VM and its port
        programs; epmd is a daemon of its own and is left running). Its peers see it down
        after :data:`NET_TICKTIME`; its sockets stay open, as with a hung machine."""
        for pid in self._node_pids(index):
            os.kill(pid, signal.SIGSTOP)
        self.paused.add(index)

    def resume(self, index: int) -> None:
        """SIGCONT node *index*, frozen by :meth:`pause`."""
        self.paused.discard(index)
        for pid in self._node_pids(index):
            os.kill(pid, signal.SIGCONT)

    def partition(self, index: int) -> list[str]:
        """Cut node *index* off from its peers: iptables rules dropping, on loopback,
        what reaches or leaves its distribution port (its peers' connections to it) and
        what leaves from its own address (:func:`dist_source`: its connections to them).
        AMQP and HTTP to the node are untouched: clients still reach it, as clients of a
        real partition on the other side may. Returns the rules; :meth:`heal` removes
        them (also :meth:`stop`). Raises :exc:`ClusterFailed` with iptables' own words
        when the machine does not allow it (no iptables, no CAP_NET_ADMIN)."""
        dist, source = str(self.nodes[index].config.dist_port), dist_source(index)
        rules = [["-p", "tcp", "--dport", dist], ["-p", "tcp", "--sport", dist],
                 ["-s", source, "-p", "tcp"], ["-d", source, "-p", "tcp"]]
        rules = [["INPUT", "-i", "lo", *rule, "-j", "DROP"] for rule in rules]
        if shutil.which("iptables") is None:
            raise ClusterFailed("iptables is not installed (apt-get install iptables)")
        added = self._rules.setdefault(index, [])
        for rule in rules:
            done = subprocess.run(["iptables", "-I", *rule], capture_output=True, text=True,
                                  timeout=30, check=False)
            if done.returncode != 0:
                self.heal(index)
                raise ClusterFailed(f"iptables -I {' '.join(rule)}: exit {done.returncode}: "
                                    f"{done.stderr.strip()}")
            added.append(rule)
        return [" ".join(rule) for rule in rules]

    def heal(self, index: int) -> None:
        """Remove the rules :meth:`partition` added for node *index*."""
        for rule in self._rules.pop(index, []):
            subprocess.run(["iptables", "-D", *rule], capture_output=True, timeout=30,
                           check=False)

    @property
    def partitioned(self) -> set[int]:
        """The nodes :meth:`partition` cut off (until :meth:`heal`)."""
        return set(self._rules)

    def accepts_amqp(self, index: int) -> bool:
        """Whether node *index*'s AMQP listener takes connections (a node paused by
        pause_minority closes it)."""
        try:
            with socket.create_connection(("127.0.0.1", self.nodes[index].config.amqp_port),
                                          timeout=1) as connection:
                connection.settimeout(1)
                connection.sendall(b"AMQP\x00\x00\x09\x01")
                return bool(connection.recv(8))
        except OSError:
            return False

    def running(self, index: int | None = None) -> list[str]:
        """The nodes that node *index* (default: the first live one) sees running."""
        node = self.live_node() if index is None else self.nodes[index]
        return sorted(self._running_seen_by(node))

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every node at once: SIGTERM, SIGKILL after *timeout* (0: kill now).
        Partitions are healed and frozen nodes resumed first (a stopped process ignores
        SIGTERM until continued)."""
        for index in list(self._rules):
            self.heal(index)
        for index in list(self.paused):
            self.resume(index)
        with ThreadPoolExecutor(len(self.nodes), thread_name_prefix="stop-rabbit") as pool:
            for done in [pool.submit(node.stop, timeout) for node in self.nodes]:
                done.result()


def _write_private(path: Path, text: str) -> None:
    """Write *text* to *path* readable by its owner only, never briefly by others
    (Erlang refuses a cookie file others may read)."""
    path.unlink(missing_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)

