"""Burrow's own processes (gateway, workers) started as children, and HTTP probing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def stop_group(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM *process*'s group (started with ``start_new_session``), SIGKILL it after
    *timeout*; nothing if it is not running."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def get(url: str, timeout: float = 2.0,
        context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """GET *url*: its status and JSON body (None if not JSON); raises ``OSError`` if
    unreachable. *context*: whom to trust for an https URL (None: the system's CAs)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


class AppProcess:
    """``python -m <module> [args]`` with *env*; :meth:`stop` sends SIGTERM and waits."""

    def __init__(self, name: str, module: str, env: Mapping[str, str],
                 args: Sequence[str] = (), log: Path | None = None) -> None:
        self.name = name
        self.command = [sys.executable, "-m", module, *args]
        self.env = dict(env)
        self.log = log  # None: share the launcher's terminal
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The child holds its own descriptor of the log: ours closes right away.
        with open(self.log, "ab") if self.log else contextlib.nullcontext() as output:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=output,
                                            stderr=subprocess.STDOUT if output else None,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def exited(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after *timeout*); returns the exit code."""
        process = self.process
        if process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return process.wait()


def wait_status(url: str, status: int, timeout: float, alive: AppProcess | None = None,
                body: Any = None, in_a_row: int = 1,
                context: ssl.SSLContext | None = None) -> tuple[int | None, Any]:
    """Poll *url* until it answers *status* (and *body*, when given) *in_a_row* times in
    a row; return the last answer.

    *in_a_row* > 1 for a server of several processes on one port (Sanic workers): each
    request is a new connection that any of them may take, and each must be ready.
    Stops early when the process *alive* has exited; the caller checks the result.
    """
    deadline = time.monotonic() + timeout
    last: tuple[int | None, Any] = (None, None)
    good = 0
    while time.monotonic() < deadline:
        if alive is not None and alive.exited is not None:
            break
        try:
            last = get(url, context=context)
        except OSError as exc:
            last = (None, str(exc))
        if last[0] == status and (body is None or last[1] == body):
            good += 1
            if good >= in_a_row:
                break
            continue
        good = 0
        time.sleep(0.1)
    return last
