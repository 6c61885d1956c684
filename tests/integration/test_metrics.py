"""The gateway's and the sequencer's metrics move with real traffic (docs/metrics.md).

Each test drives real processes and reads their ``/metrics`` as a Prometheus server
would; every process has its own multiprocess directory, so the counts start at zero.
"""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from burrow.core import tokens
from tests.conftest import eventually
from tests.integration.conftest import Running, Stack, raw_ws

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(process: Running) -> Samples:
    """The process's /metrics as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(process.url("/metrics"), timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_gateway_counts_connections_auth_frames_and_latencies(stack: Stack) -> None:
    gateway = stack.gateways[0]
    stack.room("lobby", "alice")
    for token in (None, tokens.mint("another-secret-of-at-least-32-bytes!!", "eve")):
        with pytest.raises(InvalidStatus):
            async with raw_ws(gateway.ws_url, token):
                pass
    async with raw_ws(gateway.ws_url, stack.token("alice")) as ws:
        await ws.send({"type": "subscribe", "room": "lobby"})
        assert (await ws.recv())["type"] == "subscribed"
        await ws.send({"type": "send", "room": "lobby", "client_id": "c1", "body": "hi"})
        got = {(await ws.recv())["type"], (await ws.recv())["type"]}
        assert got == {"ack", "message"}
        await ws.send("this is not JSON")
        assert (await ws.recv())["code"] == "bad_json"
        await ws.send({"type": "shout", "room": "lobby"})
        assert (await ws.recv())["code"] == "unknown_type"
        await ws.send({"type": "ping"})
        assert (await ws.recv())["type"] == "pong"

        samples = scrape(gateway)
        assert value(samples, "burrow_gateway_connections", transport="ws") == 1
        assert value(samples, "burrow_gateway_handshakes_total", transport="ws") == 1
        assert value(samples, "burrow_gateway_auth_failures_total", reason="missing") == 1
        assert value(samples, "burrow_gateway_auth_failures_total",
                     reason="bad_signature") == 1
        for kind, count in (("subscribe", 1), ("send", 1), ("ping", 1), ("invalid", 2)):
            assert value(samples, "burrow_gateway_frames_in_total", type=kind) == count, kind
        for kind, count in (("subscribed", 1), ("ack", 1), ("message", 1), ("error", 2),
                            ("pong", 1)):
            assert value(samples, "burrow_gateway_frames_out_total", type=kind) == count, kind
        assert value(samples, "burrow_gateway_ack_seconds_count") == 1
        assert 0 < value(samples, "burrow_gateway_ack_seconds_sum") < 30
        # The fan-out latency needs the sequencer's stored-at header: one message, one
        # observation (per gateway, not per subscriber).
        assert value(samples, "burrow_gateway_fanout_seconds_count") == 1
        assert value(samples, "burrow_gateway_ready") == 1
        assert value(samples, "burrow_gateway_slow_client_closes_total") == 0

    status, _ = stack.http("GET", "/v1/poll?rooms=lobby&timeout=0", "alice")
    assert status == 200

    def closed() -> bool:
        samples = scrape(gateway)
        return (value(samples, "burrow_gateway_connections", transport="ws") == 0
                and value(samples, "burrow_gateway_connections", transport="poll") == 0
                and value(samples, "burrow_gateway_handshakes_total", transport="poll") == 1)

    eventually(closed)


async def test_gateway_counts_rate_limited_sends_by_scope(stack: Stack) -> None:
    gateway = stack.add_gateway(BURROW_RATE_CONNECTION="1/0.01", BURROW_RATE_USER="100/100",
                                BURROW_RATE_FLOOD="2/60")
    stack.room("busy", "bob")
    async with raw_ws(gateway.ws_url, stack.token("bob")) as ws:
        for client_id in "abcdefgh":  # the server reads on after a close only up to a frame
            await ws.send({"type": "send", "room": "busy", "client_id": client_id,
                           "body": "x"})
        assert await ws.closed() == 4429
    samples = scrape(gateway)
    assert value(samples, "burrow_gateway_rate_limited_total", scope="connection") == 2
    assert value(samples, "burrow_gateway_rate_limited_total", scope="flood") == 1


async def test_sequencer_exports_batches_store_time_messages_and_shard_ownership(
        stack: Stack) -> None:
    sequencer = stack.sequencers[0]
    stack.room("lobby", "alice")
    async with raw_ws(stack.gateways[0].ws_url, stack.token("alice")) as ws:
        for _ in range(2):  # the same client_id twice: stored once, one duplicate
            await ws.send({"type": "send", "room": "lobby", "client_id": "c1", "body": "hi"})
            ack = await ws.recv_until("ack")
            assert ack["seq"] == 1

    samples = scrape(sequencer)
    assert value(samples, "burrow_sequencer_messages_total") == 1
    assert value(samples, "burrow_sequencer_duplicates_total") == 1
    assert value(samples, "burrow_sequencer_batch_size_count") == 2
    assert value(samples, "burrow_sequencer_batch_size_sum") == 2
    assert value(samples, "burrow_sequencer_store_seconds_count") == 2
    shards = {dict(labels)["shard"] for name, labels in samples
              if name == "burrow_sequencer_shard_active"}
    assert shards == {"0", "1", "2", "3"}  # BURROW_SHARDS defaults to 4
    active = {shard for shard in shards
              if value(samples, "burrow_sequencer_shard_active", shard=shard) == 1}
    assert len(active) == 1  # the shard of room lobby: the only one that delivered

    def caught_up() -> bool:
        now = scrape(sequencer)
        return all((("burrow_sequencer_lag_seconds", (("shard", shard),)) in now
                    and value(now, "burrow_sequencer_lag_seconds", shard=shard) == 0)
                   for shard in shards)

    eventually(caught_up)
