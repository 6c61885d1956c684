"""A process whose broker is gone for good still stops on SIGTERM, well before SIGKILL.

Deleting the vhost under a running process is the cheapest broker that never comes back:
the broker closes the connection, and the robust connection's reconnects are refused
forever. Before the stop steps were bounded (burrow/runtime/broker.py ``stop_step``), a
robust queue's cancel waited for that reconnect, and every worker kind was SIGKILLed after
20-25 s. Unacked jobs need nothing from the stop: the broker requeued them when the
connection died (at-least-once; the handlers are idempotent).
"""

from __future__ import annotations

import signal
import time

import pytest

from burrow.devstack import plan
from tests.conftest import Vhost
from tests.integration.conftest import Running, Start

BOUND = 10.0  # generous on a busy machine: the SIGKILL deadline is 20 s; measured 0.1 s


def stop_after_vhost_gone(process: Running, vhost: Vhost) -> tuple[int, float]:
    """Delete *vhost*, wait until the process reports its broker down, SIGTERM it:
    its exit code and how long the stop took."""
    process.wait("up", "up")
    vhost.api("DELETE", "/api/vhosts/{vhost}")
    try:
        process.wait("down", "up")
        began = time.monotonic()
        process.app.signal(signal.SIGTERM)
        code = process.exit_code(30)
        return code, time.monotonic() - began
    finally:
        vhost.api("PUT", "/api/vhosts/{vhost}")  # for the fixture's own delete


# The notifier drains through queues/jobs.py (JobQueue and BatchJobQueue, as the digester);
# the sequencer has its own drain. A gateway stopped in 0.4 s before the fix already (its
# closes skip a closed channel), so it is not repeated here.
@pytest.mark.parametrize("kind", ["notifier", "sequencer"])
def test_a_worker_stops_on_sigterm_when_its_vhost_is_gone(kind: str, start: Start,
                                                          vhost: Vhost, mongo_url: str) -> None:
    vhost.load_topology()  # no worker waits for another's declarations
    worker = start("worker", vhost.url(plan.worker(kind).user), mongo_url, kind)
    code, took = stop_after_vhost_gone(worker, vhost)
    assert code == 0, worker.log_tail()  # a SIGTERM stop exits 0 (docs/deploy.md)
    assert took < BOUND, f"{kind} took {took:.1f} s to stop\n{worker.log_tail()}"
