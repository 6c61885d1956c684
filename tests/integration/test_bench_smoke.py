"""The benchmark end to end with tiny parameters (a smoke test, never a timed one).

``python -m bench`` starts its own private stack, drives it, stops it and reports; every
delivery must arrive exactly once and in order.
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


def test_bench_smoke_is_lossless(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--connections", "20", "--room-size", "5",
         "--rate", "50", "--duration", "2", "--gateways", "1", "--drain", "10",
         "--results", str(tmp_path), "--json"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert report["params"]["rooms"] == 4
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
