"""The local RabbitMQ cluster's configuration (burrow.devstack.cluster), without starting
a node: what each node's rabbitmq.conf says, its ports, what it loads at boot, the
cookie. tests/integration/test_cluster.py runs the real three nodes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from burrow.devstack import cluster, rabbitmq
from burrow.devstack.__main__ import DevConfig, cluster_ports, main, prometheus_jobs
from queues import definitions, topology

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {r.user: f"{r.user}-x" for r in definitions.ROLES}


def three(tmp_path: Path) -> cluster.Cluster:
    configs = cluster.node_configs(tmp_path, 3, "burrow-admin", "pw",
                                   ROOT / "rabbitmq" / "rabbitmq.conf",
                                   cluster.FirstPorts(5672, 15672, 15692, 25672))
    return cluster.Cluster(tmp_path, configs, definitions.render(topology.build(), PASSWORDS))


def test_nodes_take_consecutive_ports_and_names_of_their_own(tmp_path: Path) -> None:
    nodes = [n.config for n in three(tmp_path).nodes]
    assert [(c.amqp_port, c.management_port, c.prometheus_port, c.dist_port)
            for c in nodes] == [(5672, 15672, 15692, 25672), (5673, 15673, 15693, 25673),
                                (5674, 15674, 15694, 25674)]
    assert [c.nodename for c in nodes] == [
        "burrow-5672@localhost", "burrow-5673@localhost", "burrow-5674@localhost"]
    assert [c.directory for c in nodes] == [tmp_path / f"node-{i}" for i in (1, 2, 3)]
    free = cluster.node_configs(tmp_path, 3, "a", "b", None)  # tests: free ports
    assert len({p for c in free for p in (c.amqp_port, c.management_port,
                                          c.prometheus_port, c.dist_port)}) == 12
    for count in (0, cluster.MAX_NODES + 1):
        with pytest.raises(ValueError, match="a cluster has 1 to 9 nodes"):
            cluster.node_configs(tmp_path, count, "a", "b", None)


def test_every_node_lists_every_node_and_spreads_leaders(tmp_path: Path) -> None:
    ring = three(tmp_path)
    for node in ring.nodes:
        text = rabbitmq.render_config(node.config, tmp_path / "defs.json")
        assert "cluster_formation.peer_discovery_backend = classic_config" in text
        assert [line.split(" = ")[1] for line in text.splitlines()
                if line.startswith("cluster_formation.classic_config.nodes.")] == ring.names
        assert "queue_leader_locator = balanced" in text
        assert "cluster_partition_handling = pause_minority" in text
        keys = [line.split("=")[0].strip() for line in text.splitlines()
                if line and not line.startswith("#")]
        assert len(keys) == len(set(keys)), "a key is set twice"


def test_nodes_load_only_the_admin_at_boot(tmp_path: Path) -> None:
    """The topology comes later, once (quorum queues declared on a lone node would keep
    that node as their only member)."""
    ring = three(tmp_path)
    assert [node.definitions for node in ring.nodes] == [
        {"users": [u for u in ring.definitions["users"] if u["name"] == "burrow-admin"]}] * 3
    with pytest.raises(ValueError, match="no user 'burrow-admin'"):
        cluster.Cluster(tmp_path, [n.config for n in ring.nodes], {"users": []})


def test_the_cookie_is_private_and_kept(tmp_path: Path) -> None:
    ring = three(tmp_path)
    cookie = ring._cookie()
    path = tmp_path / "erlang.cookie"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(cookie) >= 32 and three(tmp_path)._cookie() == cookie


def test_the_launcher_checks_every_node_port_and_refuses_a_bad_count(tmp_path: Path) -> None:
    config = DevConfig.from_env({"BURROW_DEV_DIR": str(tmp_path)})
    checked = cluster_ports(config.cluster_configs(3))
    assert (5674, "RabbitMQ node 3's AMQP", "BURROW_DEV_AMQP_PORT") in checked
    assert (25673, "RabbitMQ node 2's Erlang distribution", "BURROW_DEV_DIST_PORT") in checked
    assert len(checked) == 8  # node 1's are the single node's, checked as ever
    with pytest.raises(SystemExit) as refused:
        main(["up", "--cluster", "10"])
    assert refused.value.code == 2


def test_prometheus_scrapes_every_node_of_a_cluster(tmp_path: Path) -> None:
    """A node's Prometheus endpoint reports only the queues it hosts: ``up --cluster 3
    --prometheus`` must scrape all three, not node 1 alone."""
    config = DevConfig.from_env({"BURROW_DEV_DIR": str(tmp_path)})
    jobs = {job.name: job.targets
            for job in prometheus_jobs(config, config.cluster_configs(3))}
    first = config.prometheus_port
    nodes = tuple(f"127.0.0.1:{first + i}" for i in range(3))
    assert jobs["rabbitmq"] == jobs["rabbitmq-detailed"] == nodes
    single = {job.name: job.targets for job in prometheus_jobs(config, [config.node_config()])}
    assert single["rabbitmq"] == (f"127.0.0.1:{first}",)
