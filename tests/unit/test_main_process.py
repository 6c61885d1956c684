"""Stop signals in the gateway's main process (gateway/main_process.py), pinned without a
server: the checks that send themselves SIGTERM run in a child Python; the start-up
watch (``terminate_once_started``) runs here against a stand-in of Sanic's manager.

The whole races, with Sanic, are tests/integration/test_group_stop.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from multiprocessing import Pipe
from pathlib import Path

from gateway.main_process import TERMINATE, terminate_once_started

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


SPARED = """
import multiprocessing, os, signal, subprocess
from gateway.main_process import manager_spared

def deaf(pid):
    status = dict(line.split(":\\t") for line in open(f"/proc/{pid}/status").read().splitlines()
                  if line.startswith("Sig"))
    mask = 1 << (signal.SIGTERM - 1)
    return bool(int(status["SigIgn"], 16) & mask), bool(int(status["SigBlk"], 16) & mask)

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")  # as Sanic does
    with manager_spared() as release:
        manager = multiprocessing.Manager()  # as Sanic.serve does, its resource tracker too
        os.kill(os.getpid(), signal.SIGTERM)  # a stop while held: not lost
        try:
            release()
        except KeyboardInterrupt:
            print("delivered-at-release")
    print("sigterm-restored", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    print("manager-ignores,blocks", *deaf(manager._process.pid))
    os.kill(manager._process.pid, signal.SIGTERM)
    os.kill(manager._process.pid, signal.SIGINT)
    shared = manager.dict()
    shared["state"] = "ok"  # the Manager still answers
    print("manager-answers", shared["state"])
    manager.shutdown()
    later = subprocess.Popen(["sleep", "30"])
    print("later-child-ignores,blocks", *deaf(later.pid))
    later.kill()
    later.wait()
"""


def test_the_manager_never_takes_a_stop_signal_and_one_held_back_is_not_lost() -> None:
    """A child started in the block ignores SIGTERM for good (so a group SIGTERM cannot
    kill Sanic's Manager under its main process), one started after does not, and a
    SIGTERM that reached the main process meanwhile surfaces at ``release``, even though
    starting the Manager started multiprocessing's resource tracker, which unblocks
    SIGINT and SIGTERM behind itself."""
    assert run(SPARED) == ["delivered-at-release", "sigterm-restored", "True",
                           "manager-ignores,blocks", "True", "True",
                           "manager-answers", "ok",
                           "later-child-ignores,blocks", "False", "False"]


MONITOR = """
import signal
from multiprocessing import Pipe
from gateway.main_process import stop_from_the_monitor_loop

class Manager:  # what the handler may touch of Sanic's WorkerManager, workers started
    num_server = 1
    processes = ()
    def __init__(self):
        self.monitor_subscriber, self.monitor_publisher = Pipe(True)
        self.worker_state = {"Sanic-Server-0-0": {"server": True, "state": "ACKED"}}
    def shutdown_signal(self, signum, frame):
        print("sanic-handler", signal.Signals(signum).name)

manager = Manager()
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, manager.shutdown_signal)  # as WorkerManager.__init__ does
stop_from_the_monitor_loop(manager)
signal.raise_signal(signal.SIGTERM)
print("posted", manager.monitor_subscriber.poll(10) and manager.monitor_subscriber.recv())
print("nothing-else", not manager.monitor_subscriber.poll(0))
signal.raise_signal(signal.SIGINT)
signal.raise_signal(signal.SIGTERM)
print("ignored", not manager.monitor_subscriber.poll(0))
"""


def test_a_stop_signal_only_asks_the_monitor_loop_to_stop_and_further_ones_are_ignored(
        ) -> None:
    """The first signal posts ``__TERMINATE__`` (the monitor loop shuts the workers down
    between its own calls to the Manager) and calls nothing of Sanic's; further ones
    neither post again nor reach Sanic's handler, which would kill the group mid-drain."""
    assert run(MONITOR) == ["posted", "__TERMINATE__", "nothing-else", "True",
                            "ignored", "True"]


class Worker:
    def __init__(self, name: str, alive: bool) -> None:
        self.name, self.alive = name, alive

    def is_alive(self) -> bool:
        return self.alive


class StartingManager:
    """Sanic's WorkerManager as :func:`terminate_once_started` sees it: two workers, one
    acknowledged, one not yet."""
    num_server = 2

    def __init__(self) -> None:
        self.monitor_subscriber, self.monitor_publisher = Pipe(True)
        self.worker_state = {"Sanic-Server-0-0": {"server": True, "state": "ACKED"},
                             "Sanic-Server-1-0": {"server": True, "state": "STARTED"},
                             "Sanic-Main": {"pid": 1}}
        self.processes = [Worker("Sanic-Server-0-0", True), Worker("Sanic-Server-1-0", True)]


def test_the_stop_is_posted_only_once_every_worker_started_and_a_dead_one_counts(
        ) -> None:
    """Posted before the monitor loop runs, Sanic's start-up wait would bounce the
    message forever; a worker killed while importing (before it acknowledged) would keep
    that wait going forever: it is counted as started."""
    manager = StartingManager()
    waiting = threading.Thread(target=terminate_once_started, args=(manager, 0.01))
    waiting.start()
    try:
        assert not manager.monitor_subscriber.poll(0.2)  # a worker still starting
        manager.processes[1].alive = False  # killed before it acknowledged
        assert manager.monitor_subscriber.poll(10)
        assert manager.monitor_subscriber.recv() == TERMINATE
    finally:
        manager.processes[1].alive = False
        waiting.join(10)
    assert manager.worker_state["Sanic-Server-1-0"] == {"server": True, "state": "ACKED"}
    assert not manager.monitor_subscriber.poll(0)  # once


def test_a_worker_that_ended_after_it_started_does_not_hold_the_stop_back() -> None:
    manager = StartingManager()
    manager.worker_state["Sanic-Server-1-0"]["state"] = "FAILED"  # crashed while serving
    manager.processes[1].alive = False
    terminate_once_started(manager, 0.01)  # type: ignore[arg-type]
    assert manager.monitor_subscriber.poll(0) and manager.monitor_subscriber.recv() == TERMINATE
    assert manager.worker_state["Sanic-Server-1-0"]["state"] == "FAILED"  # left as it was
