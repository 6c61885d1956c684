"""Stop signals in Sanic's main process: a SIGTERM to the gateway's whole process group,
or to its main process alone, ends with the workers drained, exit 0 and no traceback.

The main process watches its workers through a multiprocessing Manager, the process
behind ``app.shared_ctx`` and Sanic's ``worker_state``. A group SIGTERM (systemd's default
``KillMode=control-group``, ``docker stop`` of a container whose PID 1 is a shell,
``./dev up``) failed about 1 stop in 10; tests/integration/test_group_stop.py makes each
way certain:

- it killed the Manager too, and the main process, still watching its workers drain
  through it, failed with ``EOFError`` (or ``BrokenPipeError``, ``ConnectionResetError``)
  and exit 1: :func:`manager_spared` starts the Manager deaf to SIGINT and SIGTERM, so
  it ends when the main process shuts it down, after its workers;
- Sanic's own handler talks to the Manager, from whatever the main thread was doing:
  landing while the main thread waited for an answer of the Manager, it sent requests
  of its own on the same connection, answers went to the wrong callers, and the main
  process failed (``'NoneType' object has no attribute 'get'``) with exit 1:
  :func:`stop_from_the_monitor_loop` makes the signal only ask Sanic's monitor loop to
  stop, which it does between two of its own calls, as Sanic's console and Inspector
  stop it (the ``__TERMINATE__`` message);
- with the Manager spared, a worker the group's SIGTERM killed while it was still
  importing never acknowledged its start, and Sanic's start-up wait waited for it
  forever (killed after the grace period): :func:`terminate_once_started`.

All three are here, in our start-up code, rather than in a patched Sanic (25.12.1); the
tests above fail if an upgrade of Sanic or Python takes one away.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from types import FrameType

from sanic.worker.manager import WorkerManager

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TERMINATE = "__TERMINATE__"  # what sanic/worker/manager.py's monitor loop stops on
# A worker's states (sanic.worker.constants.ProcessState) before and once it started:
STARTING = frozenset({None, "NONE", "IDLE", "STARTING", "STARTED"})
ACKED = "ACKED"


@contextmanager
def manager_spared() -> Iterator[Callable[[], None]]:
    """Processes started inside the block never take SIGINT or SIGTERM; yields
    ``release``, to call once they run (a ``main_process_start`` listener: Sanic starts
    its Manager first thing in ``Sanic.serve``, runs those listeners, then the workers).

    A child inherits both ignored signals and the signal mask through fork and exec:
    inside the block both signals are ignored *and* blocked here, so the Manager ignores
    them for its whole life, and dies only by SIGKILL or when the main process shuts it
    down. Workers, started after ``release``, take signals as before.

    In this process the block only delays a signal: Linux keeps a blocked signal pending
    even when it is ignored, and ``release`` delivers it, as ``KeyboardInterrupt`` for
    SIGTERM too (Sanic has no handler of its own yet then), so the start-up unwinds and
    Sanic shuts its Manager down. The resource tracker is started first: multiprocessing
    unblocks both signals right after it starts one, which would let a signal in the
    window be discarded. ``release`` runs again, harmlessly, when the block ends, and
    SIGTERM's former disposition is put back if nothing replaced it since.
    """
    resource_tracker.ensure_running()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    held = True

    def release() -> None:
        nonlocal held
        if held:
            held = False
            signal.signal(signal.SIGINT, previous[signal.SIGINT])
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)  # may raise, above

    try:
        yield release
    finally:
        try:
            release()
        finally:
            if signal.getsignal(signal.SIGTERM) is signal.default_int_handler:
                signal.signal(signal.SIGTERM, previous[signal.SIGTERM])


def stop_from_the_monitor_loop(manager: WorkerManager) -> None:
    """Take SIGINT and SIGTERM over from Sanic's handler (call it in a
    ``main_process_ready`` listener: Sanic installs its handler just before).

    The first signal only logs and has ``__TERMINATE__`` posted to the monitor loop
    (:func:`terminate_once_started`), which then shuts the workers down as Sanic's
    handler would (``WorkerManager.shutdown``) and waits for them. Further signals are
    ignored, as the workers ignore them (:func:`burrow.runtime.process.ignore_stop_signals`):
    Sanic's handler would SIGKILL the whole group mid-drain ("Shutdown interrupted.
    Killing."); SIGKILL still ends it at once.
    """
    requested = False

    def on_stop_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal requested
        name = signal.Signals(signum).name
        if requested:
            log.info("%s ignored: stopping already", name)
            return
        requested = True
        log.info("Received signal %s. Shutting down.", name)
        threading.Thread(target=terminate_once_started, args=(manager,), daemon=True,
                         name="stop-request").start()

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_stop_signal)


def terminate_once_started(manager: WorkerManager, interval: float = 0.1) -> None:
    """Post ``__TERMINATE__`` once no worker is still starting (every one acknowledged its
    start, or has ended since), that is once the monitor loop runs (in a thread of its own: it waits, and talks to the Manager on
    a connection of its own).

    Posted earlier, Sanic's start-up wait (``WorkerManager.wait_for_ack``) would only
    post it back to itself, over and over, and never count down to its threshold; and a
    worker the group's SIGTERM killed before it acknowledged (while it was still
    importing, before Sanic gave it handlers) would never acknowledge: such a worker is
    marked acknowledged here, so that the wait ends and the stop proceeds (it had
    nothing to drain). Gives up, logged, if the Manager is gone.
    """
    try:
        while True:
            states = manager.worker_state.copy()  # type: ignore[attr-defined]
            servers = {name: state for name, state in states.items() if state.get("server")}
            for process in manager.processes:
                state = servers.get(process.name)
                if state is not None and state.get("state") in STARTING \
                        and not process.is_alive():
                    servers[process.name] = {**state, "state": ACKED}
                    manager.worker_state[process.name] = servers[process.name]
                    log.info("%s ended before it started: counted as started", process.name)
            if (len(servers) == manager.num_server
                    and not any(state.get("state") in STARTING for state in servers.values())):
                manager.monitor_publisher.send(TERMINATE)
                return
            time.sleep(interval)
    except (OSError, EOFError) as exc:  # BrokenPipeError, ConnectionResetError: Manager gone
        log.warning("stop request not passed on: %r", exc)
