"""The benchmark's comparison peers with tiny parameters (smoke tests, never timed ones).

Each peer starts its own private stack (Socket.IO: RabbitMQ and two servers; websockets:
one broadcast server) and must deliver every message to every member of its room, once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.load import LoadConfig
from bench.peers.load import run_peer_load
from bench.peers.stack import PeerStack

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["socketio", "websockets"])
def test_peer_delivers_every_message_to_every_member(kind: str) -> None:
    config = LoadConfig(connections=20, room_size=10, rate=50, duration=1, drain=10)
    with PeerStack(kind, servers=2) as stack:
        assert len(stack.ws_urls) == (2 if kind == "socketio" else 1)
        assert ("rabbitmq" in stack.pids()) == (kind == "socketio")
        result = asyncio.run(run_peer_load(config, kind, stack.ws_urls))

    assert result.sent == 50
    assert result.acks == {}
    assert result.errors == {}
    receivers: dict[str, set[int]] = {client_id: set() for client_id in result.sent_room}
    for d in result.deliveries:
        assert d.room == result.sent_room[d.client_id]
        receivers[d.client_id].add(d.client)
    for client_id, room in result.sent_room.items():
        members = set(config.members(int(room.rsplit("-", 1)[1])))
        assert receivers[client_id] == members, client_id
    summary = report.summarize(result, {}, {}, {})
    assert summary["expected_deliveries"] == 50 * 10
    assert summary["distinct_deliveries"] == 500
    assert summary["loss"] == 0
    assert summary["duplicates"] == 0
    assert summary["order_violations"] == 0
    if kind == "websockets":  # one process broadcasting in arrival order: one order
        assert summary["order_disagreements"] == 0


def test_peers_command_prints_the_report() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.peers", "--kind", "websockets", "--connections", "20",
         "--room-size", "5", "--rate", "50", "--duration", "1", "--json"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    table, _, raw = done.stdout.partition("\n{")
    assert "| loss | 0 |" in table
    summary = json.loads("{" + raw)
    assert summary["peer"] == "websockets"
    assert summary["distinct_deliveries"] == 50 * 5
    assert set(summary["cpu_s_during_run"]) == {"gateway-websockets-0",
                                                "load-generator (whole run)"}
