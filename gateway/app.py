"""The gateway's composition root: :func:`create_app` builds one Sanic app from settings.

Each Sanic worker process opens its own :class:`~burrow.runtime.Runtime` (broker link,
database client, readiness monitor) in ``before_server_start`` and closes it in
``after_server_stop``; it lives on the typed ``app.ctx``. Run it with ``python -m gateway``.
"""

from __future__ import annotations

import os

from sanic import Sanic
from sanic.config import Config

from burrow import probes
from burrow.runtime import Runtime
from burrow.settings import Settings


class Context:
    """What a gateway worker holds; ``runtime`` is opened by :func:`_open`."""

    settings: Settings
    runtime: Runtime


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
    app.ctx.runtime = Runtime.open(settings, f"gateway {settings.instance_id} pid {os.getpid()}")


async def _close(app: GatewayApp) -> None:
    await app.ctx.runtime.close()
