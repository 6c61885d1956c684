"""A process's links to the outside world, opened and closed as one.

Gateway workers and queue workers need the same three things: the broker link, the
database client and the readiness monitor over both. :meth:`Runtime.open` starts them
(inside the running event loop) and :meth:`Runtime.close` stops them in reverse order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pymongo import AsyncMongoClient

from burrow.runtime import metrics
from burrow.runtime.broker import BrokerLink, OnChannel
from burrow.runtime.monitor import Monitor
from burrow.runtime.settings import Settings
from burrow.storage import database


@dataclass(frozen=True)
class Runtime:
    broker: BrokerLink
    db: AsyncMongoClient[dict[str, object]]
    monitor: Monitor

    @classmethod
    def open(cls, settings: Settings, name: str, on_channel: OnChannel | None = None) -> Runtime:
        """Start connecting in the background; *name* is shown in the management UI."""
        broker = BrokerLink(settings.amqp_url, name, settings.reconnect_interval, on_channel)
        db = database.open_client(settings.mongo_url, settings.db_timeout)
        monitor = Monitor(broker, db, settings.health_interval, settings.db_timeout)
        broker.start()
        monitor.start()
        return cls(broker, db, monitor)

    async def close(self) -> None:
        await self.monitor.stop()
        await self.broker.close()
        await self.db.close()
        metrics.process_exited(os.getpid())
