"""The cluster fault benchmark, small: ``python -m bench --faults --cluster 3`` with 20
clients, its own three-node cluster and full stack, the suite's share of the schedule.

The full schedule (kill, restart, graceful stop, restart, partition) needs ~90 s of sends
and is run outside CI (bench/README.md, "Cluster faults"); the suite runs
``--cluster-faults kill``: the node leading the most shard queues is SIGKILLed while the
clients send, and the run must lose nothing acked, leave no gap, duplicate nothing, keep
every room in order, every process must end on a survivor, every client must deliver
again, and every send must be acked in the end: after the node loss RabbitMQ 3.10 may
nack every publish of the reopened channel of a gateway to one shard (2 runs in 7 left
sends unacked for good), which the gateway's publisher renewal now mends
(burrow/runtime/renewing_publisher.py; bench/RESULTS.md, "Cluster faults").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_cluster_node_killed_under_load_loses_nothing_acked(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--faults", "--cluster", "3", "--cluster-faults",
         "kill", "--connections", "20", "--room-size", "5", "--rate", "20",
         "--duration", "6", "--drain", "60", "--results", str(tmp_path)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert "3-node RabbitMQ cluster" in report["stack"]
    # the processes' first node rotates: they do not all start on one node
    assert len(set(report["broker_nodes_at_start"].values())) > 1, report
    assert report["sent"] == 120
    for name in ("acked_but_lost", "gaps", "duplicates", "order_violations", "stored_twice"):
        assert report[name] == 0, (name, report[name])
    [fault] = report["faults"]
    assert fault["fault"].startswith("SIGKILL the node leading most shards"), fault
    assert "failed" not in fault, fault
    # some process of the stack was on the victim, and every process is connected to a
    # survivor at the end: the failover was exercised and worked
    start, end = report["broker_nodes_at_start"], report["broker_nodes_at_end"]
    assert fault["victim"] in start.values(), start
    assert set(end) == set(start) and fault["victim"] not in end.values(), (start, end)
    assert fault["victim"] not in fault["running_after"]
    assert len(fault["running_after"]) == 2
    assert fault["recovery_s"] is not None and fault["clients_recovered"] == 20, fault
    assert report["faults_recovered"]
    # it led shards, and they have a leader on a survivor now
    assert fault["shards_led_before"].get(fault["victim"], 0) >= 1, fault
    assert fault["victim"] not in fault["shards_led_after"], fault
    # every send acked in the end (the sends channel stuck nacking one shard is renewed)
    assert report["acked"] == 120 and report["unacked"] == 0, (report["unacked"],
                                                              report["errors"])
    assert fault["senders_recovered_s"] is not None, fault
