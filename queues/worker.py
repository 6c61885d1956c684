"""A worker process: broker link, database client, probes, and the consumers it runs.

``python -m consumers [name ...]`` builds one :class:`WorkerProcess` and awaits
:meth:`WorkerProcess.run`. The process declares its consumers' part of the topology on
its first channel (:func:`queues.topology.part`: its broker user may configure nothing
else) and is not ready until what it expects from other workers exists; it serves
``/healthz``, ``/readyz`` and ``/metrics`` on ``BURROW_METRICS_HOST:BURROW_METRICS_PORT``,
and stops on SIGTERM or SIGINT after its consumers have drained (:mod:`queues.consumer`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Mapping
from functools import partial

from sanic import Sanic
from sanic.config import Config

from burrow.runtime import probes
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from queues import topology
from queues.consumer import Consumer, ConsumerFactory
from queues.declare import declare

log = logging.getLogger(__name__)

class Context:
    runtime: Runtime


class WorkerProcess:
    def __init__(self, settings: Settings, consumers: Mapping[str, ConsumerFactory]) -> None:
        self.settings = settings
        self.names = tuple(consumers)
        self.consumers = [factory(settings) for factory in consumers.values()]
        self.stopping = asyncio.Event()
        self.app: Sanic[Config, Context] = Sanic(
            f"burrow-worker-{os.getpid()}", ctx=Context(), configure_logging=False)
        self.app.config.MOTD = False
        self.app.blueprint(probes.blueprint())

    async def _until_stopped(self, work: Awaitable[None]) -> bool:
        """Run *work* unless a stop comes first; True if it finished."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        task.result()
        return True

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
            settings, f"worker {settings.instance_id} ({', '.join(self.names) or 'idle'})",
            on_channel=partial(declare, topo=topology.for_workers(settings, self.names)))
        started: list[Consumer] = []
        try:
            await server.startup()
            log.info("worker %s up; probes on http://%s:%d", settings.instance_id,
                     settings.metrics_host, settings.metrics_port)
            for consumer in self.consumers:
                if not await self._until_stopped(consumer.start(runtime)):
                    break
                started.append(consumer)
            await self.stopping.wait()
        finally:
            for consumer in reversed(started):
                await consumer.drain()
            await runtime.close()
            server.close()
            await server.wait_closed()
        log.info("worker %s stopped", self.settings.instance_id)
