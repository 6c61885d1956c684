"""A worker process: broker link, database client, probes, and the consumers it runs.

``python -m consumers [name ...]`` builds one :class:`WorkerProcess` and awaits
:meth:`WorkerProcess.run`. The process declares the shared topology on its first channel
(workers own it; gateways may not declare it), serves ``/healthz``, ``/readyz`` and
``/metrics`` on ``BURROW_METRICS_HOST:BURROW_METRICS_PORT``, and stops on SIGTERM or
SIGINT after its consumers have drained. The consumers themselves arrive with the
issues that need them (sequencer, notifier, digester); until then a worker connects and
waits, which is what its readiness probe reports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from aio_pika.abc import AbstractRobustChannel
from sanic import Sanic
from sanic.config import Config

from burrow import probes
from burrow.runtime import Runtime
from burrow.settings import Settings
from queues import topology
from queues.declare import declare

log = logging.getLogger(__name__)

Consumer = Callable[[AbstractRobustChannel], Awaitable[None]]
"""Starts consuming on the channel it is given; later issues give it a class of its own."""


class Context:
    runtime: Runtime


class WorkerProcess:
    def __init__(self, settings: Settings, consumers: Sequence[str]) -> None:
        self.settings = settings
        self.consumers = tuple(consumers)
        self.stopping = asyncio.Event()
        self.app: Sanic[Config, Context] = Sanic(
            f"burrow-worker-{os.getpid()}", ctx=Context(), configure_logging=False)
        self.app.config.MOTD = False
        self.app.blueprint(probes.blueprint())

    def request_stop(self) -> None:
        log.info("stopping: draining consumers")
        self.stopping.set()

    async def run(self) -> None:
        """Serve until :meth:`request_stop` (SIGTERM, SIGINT), then close everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        settings = self.settings
        try:
            server = await self.app.create_server(
                host=settings.metrics_host, port=settings.metrics_port,
                return_asyncio_server=True, access_log=False)
        except OSError as exc:
            raise SystemExit(f"consumers: cannot serve probes on {settings.metrics_host}:"
                             f"{settings.metrics_port} ({exc.strerror}); "
                             "set BURROW_METRICS_PORT") from None
        assert server is not None  # None only with run_async=True
        self.app.ctx.runtime = runtime = Runtime.open(
            settings, f"worker {settings.instance_id} ({', '.join(self.consumers) or 'idle'})",
            on_channel=partial(declare, topo=topology.build(settings.shards)))
        try:
            await server.startup()
            log.info("worker %s up; probes on http://%s:%d", settings.instance_id,
                     settings.metrics_host, settings.metrics_port)
            await self.stopping.wait()
        finally:
            await runtime.close()
            server.close()
            await server.wait_closed()
        log.info("worker %s stopped", self.settings.instance_id)
