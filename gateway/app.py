"""The gateway's composition root: :func:`create_app` builds one Sanic app from settings.

Each Sanic worker process opens its own :class:`~burrow.runtime.process.Runtime` (broker link,
database client, readiness monitor) in ``before_server_start`` and closes it in
``after_server_stop``; it lives on the typed ``app.ctx``. Run it with ``python -m gateway``.
"""

from __future__ import annotations

import asyncio
import logging
import os

from sanic import Request, Sanic
from sanic.config import Config
from sanic.response import BaseHTTPResponse, HTTPResponse

from burrow.runtime import logs, probes
from burrow.runtime.background import Background
from burrow.runtime.process import Runtime, ignore_stop_signals
from burrow.runtime.settings import Settings
from burrow.storage import database
from burrow.storage.attachments import AttachmentStore
from burrow.storage.blocks import BlockStore
from burrow.storage.devices import DeviceStore
from burrow.storage.invites import InviteStore
from burrow.storage.moderation import ModerationStore
from burrow.storage.reports import ReportStore
from burrow.storage.tickets import TicketStore
from gateway import (
    attachments_api,
    attachments_s3,
    blocks_api,
    cors,
    dev_api,
    devices_api,
    filter_api,
    http_events,
    http_json,
    http_send,
    invites_api,
    moderation_api,
    openapi,
    poll,
    protocol,
    reports_api,
    rooms_api,
    settings_api,
    sse,
    tickets_api,
    tls,
    unsubscribe_api,
    verify_api,
    ws,
)
from gateway.auth import Verifier
from gateway.caps import ConnectionCaps
from gateway.connection import Connection
from gateway.limiting import Limits
from gateway.node import Node

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10  # seconds for a request's head to arrive (slowloris)


class Context:
    """What a gateway worker holds; everything but ``settings`` is opened by :func:`_open`."""

    settings: Settings
    verifier: Verifier
    background: Background  # not app.add_task: see burrow.runtime.background
    runtime: Runtime
    node: Node
    limits: Limits
    caps: ConnectionCaps
    connections: set[Connection]
    tickets: TicketStore
    attachments: AttachmentStore


GatewayApp = Sanic[Config, Context]


def create_app(settings: Settings) -> GatewayApp:
    """Build the app; raises :exc:`~burrow.runtime.settings.ConfigError` for a bad JWT setup.

    Runs in every Sanic worker (spawned processes inherit no logging setup), hence the
    logs here too.
    """
    logs.setup(settings.log_level, settings.log_format, "gateway")
    app: GatewayApp = Sanic("burrow-gateway", ctx=Context(), configure_logging=False)
    app.config.ACCESS_LOG = False
    app.config.WEBSOCKET_MAX_SIZE = settings.max_frame_bytes
    # Bounds for anyone, before the token is looked at (docs/security.md): no request
    # body above the largest route's limit, and the head of a request (the WebSocket
    # handshake too) within 10 s, unless the operator set Sanic's own variables.
    app.config.REQUEST_MAX_SIZE = http_json.LARGEST_BODY
    if "SANIC_REQUEST_TIMEOUT" not in os.environ:
        app.config.REQUEST_TIMEOUT = REQUEST_TIMEOUT
    app.ctx.settings = settings
    app.ctx.verifier = Verifier.from_settings(settings)
    dev_api.check(settings)
    app.blueprint(probes.blueprint(settings.metrics_from))
    app.blueprint(openapi.blueprint())
    app.blueprint(ws.blueprint())
    app.blueprint(tickets_api.blueprint())
    app.blueprint(rooms_api.blueprint())
    app.blueprint(reports_api.blueprint())
    app.blueprint(filter_api.blueprint())
    app.blueprint(moderation_api.blueprint())
    app.blueprint(devices_api.blueprint())
    app.blueprint(settings_api.blueprint())
    app.blueprint(blocks_api.blueprint())
    app.blueprint(invites_api.blueprint())
    app.blueprint(unsubscribe_api.blueprint())
    app.blueprint(verify_api.blueprint())
    app.blueprint(sse.blueprint())
    app.blueprint(poll.blueprint())
    app.blueprint(http_send.blueprint())
    app.blueprint(http_events.blueprint())
    app.blueprint(attachments_api.blueprint())
    app.blueprint(attachments_api.files_blueprint())
    app.blueprint(attachments_s3.blueprint())  # BURROW_ATTACHMENT_STORE=s3's uploads
    app.blueprint(dev_api.blueprint(settings))
    cors.install(app, settings.cors_origins)
    app.on_request(_limit_ip)  # app-wide and first: before the JWT is even looked at
    app.on_response(_security_headers)
    app.on_response(tls.strict_transport)  # HSTS, over https only
    app.before_server_start(_open)
    # Registered after the WebSocket routes: Sanic runs stop listeners in reverse order,
    # so this one closes clients with 1001 before Sanic cancels their handlers.
    app.before_server_stop(_drain)
    app.after_server_stop(_close)
    return app


async def _open(app: GatewayApp) -> None:
    settings = app.ctx.settings
    app.ctx.background = background = Background()
    app.ctx.runtime = Runtime.open(settings, f"gateway {settings.instance_id} pid {os.getpid()}")
    app.ctx.node = Node(settings, app.ctx.runtime)
    app.ctx.limits = Limits(settings)
    app.ctx.node.sends.limits = app.ctx.limits  # slow mode counts in the gateway's limiter
    app.ctx.caps = ConnectionCaps(settings.max_connections_user, settings.max_connections_ip)
    app.ctx.connections = set()
    app.ctx.tickets = TicketStore(database.database(app.ctx.runtime.db))
    app.ctx.attachments = attachments_api.store(settings, database.database(app.ctx.runtime.db))
    app.ctx.node.start()
    node = app.ctx.node
    stores: list[database.Indexed] = [
        node.messages, node.rooms, node.presence, DeviceStore(database.database(node.runtime.db)),
        app.ctx.tickets, app.ctx.attachments, ReportStore(database.database(node.runtime.db)),
        BlockStore(database.database(node.runtime.db)),
        InviteStore(database.database(node.runtime.db)),
        ModerationStore(database.database(node.runtime.db))]
    background.start(database.ensure_indexes(stores, settings.reconnect_interval, "gateway"),
                     name="ensure-indexes")
    background.start(attachments_api.collect_forever(app.ctx.attachments,
                                                     settings.attachment_pending_ttl),
                     name="collect-attachments")


async def _drain(app: GatewayApp) -> None:
    """SIGTERM: let in-flight sends get their acks, flush, then close clients with 1001."""
    ignore_stop_signals()  # the first stop listener to run: see its docstring
    node, connections = app.ctx.node, list(app.ctx.connections)
    timeout = app.ctx.settings.send_timeout
    try:
        async with asyncio.timeout(timeout):
            await node.pending_acks()
    except TimeoutError:
        log.warning("stopping with sends still unacked; their clients retry them")
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(c.flush() for c in connections))
    except TimeoutError:
        log.warning("stopping with frames still queued for slow clients; they resume")
    for conn in connections:
        conn.close(protocol.GOING_AWAY, "gateway going away: reconnect and resume")
    await asyncio.gather(*(c.closed.wait() for c in connections))


# On every answer: no MIME sniffing of a JSON body into HTML, no page of Burrow's (the
# demo, the unsubscribe form) inside another site's frame, no URL in a Referer.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'", "Referrer-Policy": "no-referrer"}


async def _security_headers(request: Request, answer: BaseHTTPResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        answer.headers.setdefault(name, value)


async def _limit_ip(request: Request) -> HTTPResponse | None:
    limits: Limits = request.app.ctx.limits
    return await limits.request(request)


async def _close(app: GatewayApp) -> None:
    await app.ctx.background.stop()  # first: they use the database closed below
    await app.ctx.limits.close()
    await app.ctx.attachments.close()  # S3's HTTP client
    await app.ctx.node.stop()
    await app.ctx.runtime.close()
