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

from burrow import database, metrics, probes
from burrow.broker import BrokerLink
from burrow.monitor import Monitor
from burrow.settings import Settings
from queues import topology
from queues.declare import declare

log = logging.getLogger(__name__)

Consumer = Callable[[AbstractRobustChannel], Awaitable[None]]
"""Starts consuming on the channel it is given; later issues give it a class of its own."""


class Context:
    monitor: Monitor


class WorkerProcess:
    def __init__(self, settings: Settings, consumers: Sequence[str]) -> None:
        self.settings = settings
        self.consumers = tuple(consumers)
        self.stopping = asyncio.Event()
        self.broker = BrokerLink(
            settings.amqp_url, f"worker {settings.instance_id} ({', '.join(consumers) or 'idle'})",
            settings.reconnect_interval,
            on_channel=partial(declare, topo=topology.build(settings.shards)))
        self.db = database.open_client(settings.mongo_url, settings.db_timeout)
        self.monitor = Monitor(self.broker, self.db, settings.health_interval,
                               settings.db_timeout)
        self.app: Sanic[Config, Context] = Sanic(
            f"burrow-worker-{os.getpid()}", ctx=Context(), configure_logging=False)
        self.app.config.MOTD = False
        self.app.ctx.monitor = self.monitor
        self.app.blueprint(probes.blueprint())

    def request_stop(self) -> None:
        log.info("stopping: draining consumers")
        self.stopping.set()

    async def run(self) -> None:
        """Serve until :meth:`request_stop` (SIGTERM, SIGINT), then close everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        server = await self.app.create_server(
            host=self.settings.metrics_host, port=self.settings.metrics_port,
            return_asyncio_server=True, access_log=False)
        if server is None:
            raise RuntimeError("the probe server did not start")
        await server.startup()
        self.broker.start()
        self.monitor.start()
        log.info("worker %s up; probes on http://%s:%d", self.settings.instance_id,
                 self.settings.metrics_host, self.settings.metrics_port)
        try:
            await self.stopping.wait()
        finally:
            await self.monitor.stop()
            await self.broker.close()
            await self.db.close()
            server.close()
            await server.wait_closed()
            metrics.process_exited(os.getpid())
        log.info("worker %s stopped", self.settings.instance_id)
