"""The benchmark end to end with tiny parameters (a smoke test, never a timed one).

``python -m bench`` starts its own private stack, drives it, stops it and reports; every
delivery must arrive exactly once and in order. The mixed workload (``--mix``) runs on
the suite's own stack instead (one sequencer, one gateway): a private stack would add
~20 s, and what the mix adds is in the load and the report, not in the stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import mix, report
from bench.__main__ import failures
from bench.load import LoadConfig, run_load
from tests.conftest import JWT_SECRET
from tests.integration.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_bench_smoke_is_lossless(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--connections", "20", "--room-size", "5",
         "--rate", "50", "--duration", "2", "--gateways", "1", "--drain", "10",
         "--history", "1500", "--results", str(tmp_path), "--json"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert report["params"]["rooms"] == 4
    assert report["history_messages"] == 1500  # on top of a stored history (bench.seed)
    assert report["sent"] == 100
    assert report["acked"] == 100
    assert report["expected_deliveries"] == 100 * 5
    assert report["distinct_deliveries"] == 500
    assert report["loss"] == 0
    assert report["duplicates"] == 0
    assert report["order_violations"] == 0
    assert report["order_disagreements"] == 0
    assert report["latency_ms"]["p50"] is not None
    assert (tmp_path / "latest.md").read_text().count("| loss | 0 |") == 1
    assert set(report["cpu_s_during_run"]) >= {"gateway-0", "sequencer", "rabbitmq",
                                               "database"}


def test_bench_fault_mode_loses_nothing_acked(tmp_path: Path) -> None:
    """``--faults``: kill -9 gateway-0, kill -9 the active sequencer, restart RabbitMQ,
    while 20 clients send; every acked message reaches every member, with no gap."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--faults", "--connections", "20", "--room-size",
         "5", "--rate", "20", "--duration", "5", "--drain", "30",
         "--results", str(tmp_path)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert report["params"]["gateways"] == 2
    assert report["sent"] == 100
    assert report["acked"] == 100
    assert report["acked_but_lost"] == 0
    assert report["gaps"] == 0
    assert report["duplicates"] == 0
    assert report["order_violations"] == 0
    assert report["stored_twice"] == 0
    faults = report["faults"]
    assert [f["fault"] for f in faults] == ["kill -9 gateway-0", "kill -9 the active sequencer",
                                            "restart RabbitMQ (stop + start)"]
    assert report["faults_recovered"]
    for fault in faults:
        assert fault["recovery_s"] is not None, fault
        assert fault["clients_recovered"] == 20, fault
    assert faults[0]["victim"] == "gateway-0"
    assert faults[0]["reconnects"]["count"] >= 10  # gateway-0 had clients 0, 2, ..., 18
    assert faults[1]["victim"] == "sequencer-0"
    assert faults[1]["successor"] == "sequencer-1"
    assert set(report["cpu_s_during_run"]) >= {"gateway-1", "sequencer-1",
                                               "gateway-0 (until killed)",
                                               "sequencer-0 (until killed)",
                                               "rabbitmq (2 runs)"}


async def test_bench_mixed_workload_converges(stack: Stack) -> None:
    """Sends, reactions, edits and deletes from 10 clients in 2 rooms: every operation
    acked or refused, delivered once and in order to every member (messages and change
    events in one seq order), and every client's view equals the stored rooms."""
    config = LoadConfig(connections=10, room_size=5, rate=40, duration=2.5, drain=10,
                        offline=1, devices=0, mix=mix.parse("send=60,react=20,edit=10,delete=10"))
    workload = mix.MixWorkload(config.mix, seed=3)
    http = [g.url("") for g in stack.gateways]
    result = await run_load(config, http, [g.ws_url for g in stack.gateways], JWT_SECRET,
                            workload=workload)
    summary = report.summarize(result, {}, {}, {})
    summary["mix"]["convergence"] = convergence = await asyncio.to_thread(
        workload.converge, http, JWT_SECRET, result)
    assert failures(summary) == [], (summary, convergence)
    assert summary["sent"] == 100 and summary["unacked"] == 0
    assert summary["distinct_deliveries"] == summary["expected_deliveries"] > 400
    for name in ("loss", "duplicates", "order_violations", "order_disagreements",
                 "acked_but_lost", "gaps", "stored_twice"):
        assert summary[name] == 0, (name, summary)
    kinds = summary["mix"]["kinds"]
    for kind, numbers in kinds.items():
        refused = sum(numbers["refused"].values())
        assert numbers["sent"] > 0 and numbers["acked"] + refused == numbers["sent"], kind
        assert numbers["loss"] == 0, kind
    assert kinds["send"]["refused"] == {} and kinds["edit"]["refused"] == {}
    assert convergence["ok"] and convergence["clients_converged"] == 10
    changes = sum(kinds[k]["acked"] for k in ("react", "edit", "delete"))
    assert convergence["change_events"] == changes
    assert convergence["messages"] == kinds["send"]["acked"]
