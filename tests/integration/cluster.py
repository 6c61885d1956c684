"""A three-node RabbitMQ cluster on loopback for the cluster tests (issue 18), started once
per test module: ``rabbit_cluster``; ``whole_cluster`` is the same with every node running.

Real nodes of Debian's rabbitmq-server (:mod:`burrow.devstack.cluster`), on free ports,
clustered by classic-config peer discovery, with Burrow's definitions and the test
passwords imported once the three have joined (so every quorum queue has three members).
A test may kill a node (:meth:`Cluster.kill`); the module's later tests then see two
nodes unless it restarts it (:meth:`Cluster.restart`) or they take ``whole_cluster``,
which starts it again first. Killed at the end: its data goes with the module, and a
clean stop costs 6 s. One module has the cluster tests (tests/integration/test_cluster.py):
a cluster takes ~15 s to start, a killed node a few to come back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from burrow.devstack.cluster import Cluster, node_configs
from queues import definitions, topology
from tests.conftest import PASSWORDS, ROOT

NODES = 3


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(directory, node_configs(
        directory, NODES, "burrow-admin", PASSWORDS["burrow-admin"],
        ROOT / "rabbitmq" / "rabbitmq.conf"), definitions.render(topology.build(), PASSWORDS))
    cluster.start()
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop(timeout=0)


@pytest.fixture
def whole_cluster(rabbit_cluster: Cluster) -> Cluster:
    """The module's cluster with its three nodes running: a node an earlier test killed
    or stopped is started again (it rejoins with its data) before the test begins."""
    for index, node in enumerate(rabbit_cluster.nodes):
        if node.process is None or node.process.poll() is not None:
            rabbit_cluster.restart(index)
    return rabbit_cluster
