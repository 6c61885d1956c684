"""A SIGTERM to a gateway's whole process group, or to its main process alone, stops it
cleanly: workers drained, exit 0, no traceback.

The group is what systemd's default ``KillMode=control-group``, ``docker stop`` of a
container whose PID 1 is a shell, and ``./dev up`` (burrow/devstack/processes.py) signal;
besides Sanic's main process and its workers it holds the multiprocessing Manager behind
``app.shared_ctx`` and Sanic's ``worker_state``. About 1 stop in 10 exited 1 with a
traceback (tests/integration/test_guarantees.py's SIGTERM test), when the signal landed
while the main process waited for an answer of the Manager; here that moment is made
certain, and so is a worker killed by it while still importing. The causes and their
fixes: gateway/main_process.py.

The workers' process (``python -m consumers``) has no children: a group SIGTERM is its
own SIGTERM, checked with exit 0 and nothing but JSON lines in its log by
tests/integration/test_processes.py.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Vhost, eventually
from tests.integration.conftest import Running, Start

pytestmark = pytest.mark.integration
T = 30  # seconds: every wait is bounded


def children(pid: int) -> list[tuple[int, int, str]]:
    """(start time in clock ticks, pid, command line) of *pid*'s children, oldest first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid:  # ppid
            found.append((int(fields[19]), int(entry.name), cmdline))
    return sorted(found)


def sanic_manager(gateway: Running) -> int:
    """The pid of the gateway's multiprocessing Manager: the first process it spawned
    (Sanic starts it before any worker; the resource tracker is not spawned this way)."""
    process = gateway.app.process
    assert process is not None
    spawned = [pid for _, pid, cmdline in children(process.pid) if "spawn_main" in cmdline]
    assert len(spawned) >= 2, f"no Manager and worker under {process.pid}: {spawned}"
    return spawned[0]


def blocked_on_a_socket(pid: int) -> bool:
    """Whether *pid*'s main thread waits in a read of a Unix socket (its Manager link)."""
    return Path(f"/proc/{pid}/wchan").read_text().startswith("unix_stream")


def stopped_cleanly(gateway: Running) -> None:
    """Exit 0, no traceback, and the stop was the signal's (not a failure's)."""
    code = gateway.exit_code(T)
    log = gateway.log.read_text(errors="replace")
    assert code == 0 and "Traceback" not in log and "Shutting down" in log, (
        f"exit {code}\n{gateway.log_tail()}")


def signalled_while_waiting_on_the_manager(gateway: Running, send: Callable[[], None]) -> None:
    """*send* a SIGTERM while the gateway's main process waits for an answer of its
    Manager, the race of the flaky stops made certain: the Manager is stopped (SIGSTOP)
    until the main process is seen blocked in its read, and continued after *send*."""
    process = gateway.app.process
    assert process is not None
    manager = sanic_manager(gateway)
    os.kill(manager, signal.SIGSTOP)
    try:
        assert eventually(lambda: blocked_on_a_socket(process.pid))
        send()
    finally:
        os.kill(manager, signal.SIGCONT)


def test_a_gateway_stops_with_0_whichever_of_its_processes_sigterm_reaches_first(
        start: Start, vhost: Vhost, mongo_url: str) -> None:
    """Three fresh gateways, started together, each stopped by a SIGTERM: to the whole
    group, and to the main process alone, both while the main process waits for its
    Manager; then to the whole group of an idle gateway.

    Without :func:`~gateway.main_process.manager_spared` the group's SIGTERM kills the
    Manager under the waiting main process (EOFError); without
    :func:`~gateway.main_process.stop_from_the_monitor_loop` Sanic's handler, run inside
    the main process's wait, talks to the Manager on the same connection and the
    answers cross (``'NoneType' object has no attribute 'get'``)."""
    gateways = [start("gateway", vhost.url("burrow-gateway"), mongo_url) for _ in range(3)]
    for gateway in gateways:
        gateway.wait("up", "up")
    group, main_alone, idle = gateways
    signalled_while_waiting_on_the_manager(group, lambda: group.app.signal(signal.SIGTERM))
    assert main_alone.app.process is not None
    signalled_while_waiting_on_the_manager(
        main_alone, lambda: main_alone.app.process.send_signal(signal.SIGTERM))  # type: ignore[union-attr]
    idle.app.signal(signal.SIGTERM)
    for gateway in gateways:
        stopped_cleanly(gateway)


def first_worker(gateway_pid: int) -> int:
    """The pid of the gateway's first worker, as soon as it is spawned (polled every
    10 ms: a worker imports for a few hundred milliseconds before it has handlers)."""
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        spawned = [pid for _, pid, cmdline in children(gateway_pid) if "spawn_main" in cmdline]
        if len(spawned) >= 2:  # the Manager first
            return spawned[1]
        time.sleep(0.01)
    raise AssertionError(f"no worker under {gateway_pid} after {T}s")


def sigterm_caught(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def test_a_gateway_whose_worker_dies_of_the_group_sigterm_while_importing_stops_with_0(
        start: Start, vhost: Vhost, mongo_url: str) -> None:
    """The group's SIGTERM can kill a worker that is still importing (no handler yet), so
    it never acknowledges its start; Sanic's main process would wait for that forever
    (gateway/main_process.py ``terminate_once_started``). The worker is caught in that
    state (stopped the moment it appears, its SIGTERM not yet caught), then the group is
    signalled."""
    for _ in range(3):  # a worker that got its handlers before we looked: a fresh try
        gateway = start("gateway", vhost.url("burrow-gateway"), mongo_url)
        process = gateway.app.process
        assert process is not None
        pid = first_worker(process.pid)
        os.kill(pid, signal.SIGSTOP)
        if not sigterm_caught(pid):
            break
        os.kill(pid, signal.SIGCONT)
    else:
        pytest.fail("never saw a worker before its signal handlers")
    gateway.app.signal(signal.SIGTERM)
    os.kill(pid, signal.SIGCONT)  # it takes the pending SIGTERM first: fatal, no handler yet
    stopped_cleanly(gateway)
