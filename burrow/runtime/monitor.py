"""Periodic readiness checks of the broker and the database, exported as gauges.

One task per process asks both dependencies every ``BURROW_HEALTH_INTERVAL`` seconds and
keeps the answer, so a readiness probe costs nothing and the answer is also a metric.
"""

from __future__ import annotations

import asyncio
import logging

from pymongo import AsyncMongoClient

from burrow.core.health import Readiness
from burrow.runtime import metrics
from burrow.runtime.broker import BrokerLink
from burrow.storage import database

log = logging.getLogger(__name__)


class Monitor:
    """Call :meth:`start`; read :attr:`readiness`; :meth:`stop` at exit."""

    def __init__(self, broker: BrokerLink, db: AsyncMongoClient[dict[str, object]],
                 interval: float, db_timeout: float) -> None:
        self.broker = broker
        self.db = db
        self.interval = interval
        self.db_timeout = db_timeout
        self.readiness = Readiness({"broker": False, "database": False})
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> Readiness:
        """Ask both dependencies now, remember and export the answer, and return it."""
        checks = {"broker": self.broker.is_up,
                  "database": await database.ping(self.db, self.db_timeout)}
        for name, up in checks.items():
            if up != self.readiness.checks.get(name):
                log.info("%s is %s", name, "up" if up else "down")
            metrics.DEPENDENCY_UP.labels(name).set(1 if up else 0)
        self.readiness = Readiness(checks)
        return self.readiness

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="readiness-monitor")

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
