"""On a real broker, the topology declared by code is the one in definitions.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from burrow.devstack import plan, rabbitmq
from queues import definitions, topology
from queues.declare import declare
from tests.conftest import PASSWORDS, Vhost

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def checked_in() -> dict[str, Any]:
    return json.loads((ROOT / "rabbitmq" / "definitions.json").read_text())


def shape(defs: dict[str, Any]) -> dict[str, set[str]]:
    """Exchanges, queues and bindings as comparable strings, without the vhost."""
    return {
        "exchanges": {json.dumps([e["name"], e["type"], e["durable"], e["internal"],
                                  e["auto_delete"], e["arguments"]], sort_keys=True)
                      for e in defs["exchanges"]},
        "queues": {json.dumps([q["name"], q["durable"], q["auto_delete"], q["arguments"]],
                              sort_keys=True) for q in defs["queues"]},
        "bindings": {json.dumps([b["source"], b["destination"], b["destination_type"],
                                 b["routing_key"]]) for b in defs["bindings"]},
    }


def broker_shape(vhost: Vhost) -> dict[str, set[str]]:
    live = vhost.api("GET", "/api/definitions/{vhost}")
    assert isinstance(live, dict)
    return shape(live)


async def declare_as(vhost: Vhost, kind: str) -> None:
    """Declare what ``python -m consumers KIND`` declares, as its own broker user."""
    connection = await aio_pika.connect(vhost.url(plan.worker(kind).user))
    async with connection:
        await declare(await connection.channel(), topology.part(topology.build(), kind))


async def declare_as_workers(vhost: Vhost) -> None:
    for kind in ("sequencer", "digester", "notifier"):  # the notifier expects the others'
        await declare_as(vhost, kind)


async def test_declared_by_code_equals_definitions_json(vhost: Vhost) -> None:
    """The three workers' parts, each declared with its own user, are the topology."""
    await declare_as_workers(vhost)
    await declare_as_workers(vhost)  # idempotent: a second declaration changes nothing
    assert broker_shape(vhost) == shape(checked_in())


async def test_a_worker_that_starts_first_waits_for_what_others_declare(vhost: Vhost) -> None:
    """The notifier declares its own queues at once (jobs for them are routed from then
    on), but cannot bind to chat.fanout before the sequencer declared it, nor publish
    digests before the digester declared its delay tiers: it fails NOT_FOUND (the broker
    link retries) until they exist, without declaring them itself (it may not)."""
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity, match="chat.fanout"):
        await declare_as(vhost, "notifier")
    queues = {q["name"] for q in vhost.api("GET", "/api/queues/{vhost}")}  # type: ignore[union-attr]
    assert queues == {q.name for q in topology.part(topology.build(), "notifier").queues}
    await declare_as(vhost, "sequencer")
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity, match="digest.delay"):
        await declare_as(vhost, "notifier")
    await declare_as(vhost, "digester")
    await declare_as(vhost, "notifier")
    assert broker_shape(vhost) == shape(checked_in())


async def test_code_accepts_what_an_admin_loaded_from_definitions_json(vhost: Vhost) -> None:
    topo_only = {k: checked_in()[k] for k in ("exchanges", "queues", "bindings")}
    vhost.api("POST", "/api/definitions/{vhost}", topo_only)
    loaded = broker_shape(vhost)
    # Redeclaring with other arguments would close the channel with PRECONDITION_FAILED.
    await declare_as_workers(vhost)
    assert broker_shape(vhost) == loaded == shape(checked_in())


async def test_a_drifted_broker_is_refused_not_silently_changed(vhost: Vhost) -> None:
    drifted = definitions.topology_definitions(topology.build())
    drifted["queues"][0]["arguments"]["x-delivery-limit"] = 99
    vhost.api("POST", "/api/definitions/{vhost}", drifted)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await declare_as_workers(vhost)


def test_a_node_from_an_older_burrow_gets_its_changed_exchanges_recreated(
        broker: rabbitmq.RabbitNode, vhost: Vhost) -> None:
    """``burrow.jobs`` was direct before the workers got users of their own; loading the
    definitions at boot keeps an existing exchange as it is, so ``./dev up`` on a kept
    node recreates it (and its bindings) with the type the definitions give."""
    vhost.load_topology()
    vhost.api("DELETE", "/api/exchanges/{vhost}/burrow.jobs")
    vhost.api("PUT", "/api/exchanges/{vhost}/burrow.jobs", {"type": "direct", "durable": True})
    wanted = definitions.render(topology.build(), PASSWORDS, vhost=vhost.name)
    node = rabbitmq.RabbitNode(broker.config, wanted)
    assert node.recreate_changed_exchanges() == ["burrow.jobs"]
    found = vhost.api("GET", "/api/exchanges/{vhost}/burrow.jobs")
    assert isinstance(found, dict) and found["type"] == "topic"
    bound = vhost.api("GET", "/api/exchanges/{vhost}/burrow.jobs/bindings/source")
    assert isinstance(bound, list)
    assert sorted((b["destination"], b["routing_key"]) for b in bound) == sorted(
        (b["destination"], b["routing_key"]) for b in wanted["bindings"]
        if b["source"] == "burrow.jobs")
    assert node.recreate_changed_exchanges() == []  # nothing else differs
