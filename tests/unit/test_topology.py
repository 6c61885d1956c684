"""The topology as data: shards, job families and dead-letter paths hold together."""

from __future__ import annotations

import pytest

from queues import topology
from queues.topology import JOBS, SHARD, Binding, JobFamily, build, tier_name


def test_shard_queues_are_single_active_quorum_queues_bound_by_weight() -> None:
    topo = build(shards=3)
    for index in range(3):
        queue = topo.queue(f"chat.seq.{index}")
        assert queue.arguments["x-queue-type"] == "quorum"
        assert queue.arguments["x-single-active-consumer"] is True
        assert Binding(SHARD, queue.name, "1") in topo.bindings
    with pytest.raises(KeyError):
        topo.queue("chat.seq.3")


def test_ingress_reaches_shards_through_an_internal_hash_exchange() -> None:
    topo = build()
    shard = next(e for e in topo.exchanges if e.name == SHARD)
    assert shard.type == "x-consistent-hash" and shard.internal
    assert Binding(topology.INGRESS, SHARD, "room.*.msg", "exchange") in topo.bindings


def test_every_dead_letter_route_ends_in_a_declared_bound_queue() -> None:
    topo = build()
    names = {q.name for q in topo.queues}
    for queue in topo.queues:
        target = queue.arguments.get("x-dead-letter-routing-key")
        if target is None:
            assert queue.name.endswith(".dead"), f"{queue.name} dead-letters nowhere"
            continue
        assert queue.arguments["x-dead-letter-exchange"] == JOBS
        assert target in names
        assert Binding(JOBS, target, target) in topo.bindings


def test_delay_and_retry_tiers_wait_then_return_to_the_due_queue() -> None:
    family = JobFamily("push", delays=(30,), retries=(5, 300))
    topo = build(families=(family,))
    for name, ttl in [("push.delay.30s", 30_000), ("push.retry.5s", 5_000),
                      ("push.retry.5m", 300_000)]:
        args = topo.queue(name).arguments
        assert args["x-message-ttl"] == ttl
        assert args["x-dead-letter-routing-key"] == "push.due"
        assert args["x-dead-letter-strategy"] == "at-least-once"
    due = topo.queue("push.due").arguments
    assert due["x-dead-letter-routing-key"] == "push.dead"
    assert due["x-delivery-limit"] == topology.DELIVERY_LIMIT


def test_names_are_unique() -> None:
    topo = build()
    names = [q.name for q in topo.queues]
    assert len(names) == len(set(names))
    assert len(topo.bindings) == len(set(topo.bindings))


@pytest.mark.parametrize(("seconds", "name"), [(5, "5s"), (90, "90s"), (300, "5m"),
                                               (3600, "1h"), (5400, "90m"), (86400, "1d")])
def test_tier_names_are_readable(seconds: int, name: str) -> None:
    assert tier_name(seconds) == name


@pytest.mark.parametrize("bad", [0, -5])
def test_bad_tiers_and_shard_counts_are_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        tier_name(bad)
    with pytest.raises(ValueError, match="at least one shard"):
        build(shards=bad)
