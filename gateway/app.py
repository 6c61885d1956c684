"""The gateway's composition root: :func:`create_app` builds one Sanic app from settings.

Each Sanic worker process opens its own broker link, database client and readiness
monitor in ``before_server_start`` and closes them in ``after_server_stop``; they live on
the typed ``app.ctx``. Run it with ``python -m gateway``.
"""

from __future__ import annotations

import os

from pymongo import AsyncMongoClient
from sanic import Sanic
from sanic.config import Config

from burrow import database, metrics, probes
from burrow.broker import BrokerLink
from burrow.monitor import Monitor
from burrow.settings import Settings


class Context:
    """What a gateway worker holds; set up by :func:`_open`, torn down by :func:`_close`."""

    settings: Settings
    broker: BrokerLink
    db: AsyncMongoClient[dict[str, object]]
    monitor: Monitor


GatewayApp = Sanic[Config, Context]


def create_app(settings: Settings) -> GatewayApp:
    app: GatewayApp = Sanic("burrow-gateway", ctx=Context(), configure_logging=False)
    app.config.ACCESS_LOG = False
    app.ctx.settings = settings
    app.blueprint(probes.blueprint())
    app.before_server_start(_open)
    app.after_server_stop(_close)
    return app


async def _open(app: GatewayApp) -> None:
    settings = app.ctx.settings
    name = f"gateway {settings.instance_id} pid {os.getpid()}"
    app.ctx.broker = BrokerLink(settings.amqp_url, name, settings.reconnect_interval)
    app.ctx.db = database.open_client(settings.mongo_url, settings.db_timeout)
    app.ctx.monitor = Monitor(app.ctx.broker, app.ctx.db, settings.health_interval,
                              settings.db_timeout)
    app.ctx.broker.start()
    app.ctx.monitor.start()


async def _close(app: GatewayApp) -> None:
    await app.ctx.monitor.stop()
    await app.ctx.broker.close()
    await app.ctx.db.close()
    metrics.process_exited(os.getpid())
