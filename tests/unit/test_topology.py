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
            # Hook requests expire when their sequencer stops waiting (each carries the
            # hook's time-out, the queue's TTL is a backstop): a dead copy helps nobody.
            expiring = queue.name == topology.HOOK_QUEUE and "x-message-ttl" in queue.arguments
            assert queue.name.endswith(".dead") or expiring, \
                f"{queue.name} dead-letters nowhere"
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


def test_the_workers_parts_together_are_the_whole_topology() -> None:
    """Every name is declared by exactly one worker kind (burrow.jobs by each), so the
    kinds running side by side, each with its own broker user, declare everything."""
    topo = build(shards=3)
    parts = {kind: topology.part(topo, kind) for kind in topology.OWNERS}
    assert {e.name for p in parts.values() for e in p.exchanges} == {
        e.name for e in topo.exchanges}
    assert sorted(q.name for p in parts.values() for q in p.queues) == sorted(
        q.name for q in topo.queues)  # each queue in one part only
    assert {b for p in parts.values() for b in p.bindings} == set(topo.bindings)
    for kind, mine in parts.items():
        for other, theirs in parts.items():
            if kind != other:
                assert {e.name for e in mine.exchanges} & {e.name for e in theirs.exchanges} \
                    == {JOBS}
    assert topology.part(topo, *topology.OWNERS) == topo  # one process running them all
    assert topology.part(topo) == topology.Topology((), (), ())


def test_a_worker_expects_what_other_kinds_declare_for_it() -> None:
    """The notifier binds notify.messages to the sequencer's chat.fanout and publishes
    digests into the digester's delay tiers: it checks for them instead of declaring."""
    topo = build(families=topology.job_families(digest_periods=(1800, 86400)))
    notifier = topology.part(topo, "notifier")
    assert notifier.expected_exchanges == (topology.FANOUT,)
    assert notifier.expected_queues == ("digest.delay.30m", "digest.delay.1d")
    assert Binding(topology.FANOUT, topology.NOTIFY_MESSAGES, "room.*.msg") in notifier.bindings
    for kind in ("sequencer", "digester"):
        alone = topology.part(topo, kind)
        assert alone.expected_exchanges == alone.expected_queues == ()
    both = topology.part(topo, "notifier", "digester")
    assert both.expected_queues == () and both.expected_exchanges == (topology.FANOUT,)
