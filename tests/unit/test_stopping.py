"""A gateway worker stops promptly whatever moment the SIGTERM lands.

Two causes of stops that hung until SIGKILL (about 1 in 40 when the SIGTERM came within
milliseconds of "Worker ready"), each pinned here without a server or a race:

- a task registered with Sanic's ``app.add_task`` whose cancellation needs the event loop
  again (PyMongo's server selection) is awaited by Sanic with the loop stopped, forever:
  background tasks go through :class:`~burrow.runtime.background.Background`, whose
  :meth:`stop` runs inside a stop listener and is bounded;
- a second stop signal (the group's SIGTERM and Sanic's SIGINT to its workers) landing
  after Sanic removed its handlers raised KeyboardInterrupt inside a stop listener, which
  Sanic then ran again over a half-closed state: :func:`ignore_stop_signals`.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from burrow.runtime.background import Background

ROOT = Path(__file__).resolve().parents[2]


async def test_a_task_whose_cancellation_needs_the_loop_finishes_it_before_stop_returns(
        ) -> None:
    """Like PyMongo's server selection: on cancel it still awaits a few times (a lock, a
    condition) before it ends. ``stop`` runs the loop for it."""
    started, cleaned = asyncio.Event(), asyncio.Event()

    async def selecting_a_server() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            for _ in range(20):
                await asyncio.sleep(0)
            cleaned.set()
            raise

    background = Background()
    task = background.start(selecting_a_server(), name="ensure-indexes")
    await started.wait()
    await background.stop(timeout=5)
    assert task.cancelled() and cleaned.is_set()
    assert background.running == []


async def test_a_task_that_will_not_end_is_left_behind_after_the_bound(
        caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallows every cancel

    background = Background()
    task = background.start(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    try:
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, "burrow.runtime.background"):
            await background.stop(timeout=0.2)
        assert time.monotonic() - began < 2
        assert "still cancelling after 0.2s: stubborn" in caplog.text
        assert background.running == ["stubborn"]
    finally:
        release.set()  # else the test loop's teardown would wait for it forever
        await task


async def test_stop_twice_and_a_failed_task_are_fine(caplog: pytest.LogCaptureFixture) -> None:
    """Sanic may run a stop listener twice; a task that failed is logged, not lost."""
    async def broken() -> None:
        raise RuntimeError("boom")

    background = Background()
    with caplog.at_level(logging.ERROR, "burrow.runtime.background"):
        task = background.start(broken(), name="broken")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # the done callback
    assert "background task broken failed" in caplog.text
    await background.stop()
    await background.stop()
    assert background.running == []


def test_no_process_registers_tasks_with_sanic() -> None:
    """``app.add_task`` tasks are awaited by Sanic with its loop stopped (see above)."""
    calls = [f"{path.relative_to(ROOT)}:{node.lineno}"
             for top in ("gateway", "queues", "consumers", "burrow")
             for path in sorted((ROOT / top).rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if isinstance(node, ast.Attribute) and node.attr == "add_task"]
    assert calls == [], "use burrow.runtime.background.Background instead"


def test_once_stopping_further_sigint_and_sigterm_are_ignored() -> None:
    """In a child process: the signals would end it (SIGTERM) or raise (SIGINT)."""
    code = ("import os, signal\n"
            "from burrow.runtime.process import ignore_stop_signals\n"
            "ignore_stop_signals()\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "print('still stopping')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)
    assert (done.returncode, done.stdout.strip()) == (0, "still stopping"), done.stderr
