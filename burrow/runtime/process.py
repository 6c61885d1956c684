"""A process's links to the outside world, opened and closed as one.

Gateway workers and queue workers need the same three things: the broker link, the
database client and the readiness monitor over both. :meth:`Runtime.open` starts them
(inside the running event loop) and :meth:`Runtime.close` stops them in reverse order.
"""

from __future__ import annotations

import os
import signal
import threading
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
        broker = BrokerLink(settings.amqp_urls, name, settings.reconnect_interval, on_channel)
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


def ignore_stop_signals() -> None:
    """From now on ignore SIGINT and SIGTERM: the process is stopping already.

    Call it first thing in a Sanic worker's first stop listener. Sanic removes its signal
    handlers before it runs the stop listeners, and a worker usually gets two signals: the
    SIGTERM sent to the process group, and the SIGINT by which Sanic's main process stops
    its workers. When the second lands after that removal (a SIGTERM within milliseconds
    of "Worker ready"), it raises KeyboardInterrupt inside a listener, Sanic runs that
    listener again from the start over a half-closed state, and the rerun can wait
    forever (seen: 1 stop in 20, killed after 20 s). SIGKILL still ends the process.
    Nothing outside the main thread (where signal handlers live) is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
