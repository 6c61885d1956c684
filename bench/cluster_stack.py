"""The bench's full stack on a RabbitMQ cluster: ``python -m bench --cluster N``.

The same processes and configuration as :class:`bench.stack.BenchStack` (gateways,
sequencers, notifier, digester, local providers, the embedded database), but the broker
is N private RabbitMQ nodes clustered on loopback (:class:`burrow.devstack.cluster.Cluster`:
classic-config peer discovery, ``pause_minority``, ``queue_leader_locator = balanced``,
every quorum queue on every node).

Every process gets ``BURROW_AMQP_URL`` with every node's URL, the list rotated one node
further per process started, so that the processes' first choice spreads over the nodes
(all on node 1, a fault of node 1 would move everything and a fault elsewhere nothing).
:meth:`ClusterBenchStack.broker_nodes` says which node each process is connected to, from
the management API (each connection's ``node``).
"""

from __future__ import annotations

from typing import Any

from bench.report import tree
from bench.stack import PROJECT, BenchStack, Broker
from burrow.devstack import cluster
from queues import definitions, topology


class ClusterBroker:
    """A :class:`~burrow.devstack.cluster.Cluster` as the stack's :class:`Broker`: the
    management API of whichever node is running."""

    def __init__(self, nodes: cluster.Cluster) -> None:
        self.cluster = nodes

    def start(self) -> None:
        self.cluster.start()

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.cluster.wait_ready(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Kill every node at once (after the run; a clean stop of three nodes costs
        ~6 s and the run's data goes with the temp dir)."""
        self.cluster.stop(timeout=0)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        return self.cluster.live_node().api(method, path, body, timeout)


class ClusterBenchStack(BenchStack):
    """``with ClusterBenchStack(nodes=3, gateways=2, sequencers=2) as stack:``;
    ``stack.cluster`` is the broker (kill, stop, restart, pause, partition one node)."""

    def __init__(self, nodes: int = 3, **kwargs: Any) -> None:
        self.node_count = nodes
        self._rotation = 0  # the next process's first node
        # bench.cluster_faults: the node of each fault ("killed", "stopped") and when
        self.fault_nodes: dict[str, int] = {}
        self.fault_nodes_at: dict[int, float] = {}
        super().__init__(**kwargs)

    def _make_broker(self) -> Broker:
        directory = self.directory / "rabbitmq"
        configs = cluster.node_configs(directory, self.node_count, "burrow-admin",
                                       self.passwords["burrow-admin"],
                                       PROJECT / "rabbitmq" / "rabbitmq.conf")
        self.cluster = cluster.Cluster(directory, configs,
                                       definitions.render(topology.build(), self.passwords))
        return ClusterBroker(self.cluster)

    def _amqp_url(self, user: str) -> str:
        urls = self.cluster.amqp_urls(user, self.passwords[user], definitions.VHOST)
        first, self._rotation = self._rotation % len(urls), self._rotation + 1
        return ",".join(urls[first:] + urls[:first])

    def _broker_pids(self) -> dict[str, int]:
        return {f"rabbit-{i + 1}": node.process.pid
                for i, node in enumerate(self.cluster.nodes)
                if node.process is not None and node.process.poll() is None}

    @property
    def description(self) -> str:
        return f"{super().description}; on a {self.node_count}-node RabbitMQ cluster"

    def node_label(self, name: str) -> str:
        """``rabbit-2`` for node 2's Erlang name (``burrow-<port>@localhost``)."""
        names = self.cluster.names
        return f"rabbit-{names.index(name) + 1}" if name in names else str(name)

    def broker_nodes(self, wait: float = 10.0) -> dict[str, str]:
        """Which node each process of the stack is connected to (management API: each
        AMQP connection's ``node``), by process name (``rabbit-N``). A connection shows
        in the API a few seconds after it opened: waits up to *wait* s for every live
        process (the providers have no broker connection)."""
        wanted = {app.name for app in self._apps if app.exited is None}
        found = self._poll(lambda: (nodes := self._broker_nodes()).keys() >= wanted
                           and nodes, wait)
        return found or self._broker_nodes()

    def _broker_nodes(self) -> dict[str, str]:
        owner: dict[int, str] = {}
        for app in self._apps:
            if app.process is not None and app.exited is None:
                owner.update(dict.fromkeys(tree(app.process.pid), app.name))
        found: dict[str, str] = {}
        path = "/api/connections?columns=name,node,client_properties,user_provided_name"
        for connection in self.node.api("GET", path, timeout=10):
            properties = connection.get("client_properties") or {}
            named = str(connection.get("user_provided_name")
                        or (properties.get("connection_name") if isinstance(properties, dict)
                            else "") or "")
            process = self._process_of(named, owner)
            if process is not None:
                found[process] = self.node_label(str(connection.get("node")))
        return dict(sorted(found.items()))

    @staticmethod
    def _process_of(connection_name: str, owner: dict[int, str]) -> str | None:
        """The stack process a connection belongs to: workers name it
        ``worker bench-<process> (...)``, gateways ``gateway <instance> pid <pid>``."""
        if connection_name.startswith("worker bench-"):
            return connection_name.removeprefix("worker bench-").split(" ", 1)[0]
        if " pid " in connection_name:
            pid = connection_name.rsplit(" pid ", 1)[1].split()[0]
            return owner.get(int(pid)) if pid.isdigit() else None
        return None

    def leaders(self) -> dict[str, str]:
        """The leader (``rabbit-N``) of every quorum queue of Burrow's vhost."""
        return {name: self.node_label(p.leader or "none")
                for name, p in self.cluster.placement(definitions.VHOST).items()}

    def shard_leader_counts(self) -> dict[int, int]:
        """How many shard queues (``chat.seq.N``) each node index leads."""
        counts = dict.fromkeys(range(self.node_count), 0)
        for index in range(self.shards):
            leader = self.leaders().get(topology.shard_queue(index), "")
            if leader.startswith("rabbit-"):
                counts[int(leader.removeprefix("rabbit-")) - 1] += 1
        return counts
