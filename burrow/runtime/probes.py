"""Probes and metrics over HTTP, the same in every process: ``/healthz``, ``/readyz``,
``/metrics``. The app that mounts :func:`blueprint` keeps its
:class:`~burrow.runtime.process.Runtime` on ``app.ctx.runtime``.
"""

from __future__ import annotations

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.runtime import metrics
from burrow.runtime.settings import Networks, allowed


def blueprint(metrics_from: Networks = None) -> Blueprint:
    """A fresh blueprint of the three routes (one per app: Sanic binds blueprints to apps).

    *metrics_from*: the client networks that may read ``/metrics`` (None: all). The
    gateway serves it on the clients' port, where the numbers (connections, rates, queue
    depths) are nobody else's business; a worker's metrics port is its own.
    """
    bp = Blueprint("probes")

    @bp.get("/healthz")
    async def healthz(request: Request) -> HTTPResponse:
        """200 whenever the process answers: liveness, not readiness."""
        return response.json({"ok": True})

    @bp.get("/readyz")
    async def readyz(request: Request) -> HTTPResponse:
        """200 once this process's broker link and database both answer, 503 until then."""
        readiness = request.app.ctx.runtime.monitor.readiness
        return response.json(readiness.body(), status=readiness.status)

    @bp.get("/metrics")
    async def metrics_endpoint(request: Request) -> HTTPResponse:
        if not allowed(str(request.remote_addr or request.ip), metrics_from):
            return response.json({"error": {"code": "forbidden", "message":
                                  "metrics are for the operator's networks "
                                  "(BURROW_METRICS_FROM)"}}, status=403)
        body, content_type = metrics.render(request.headers.get("accept"))
        return response.raw(body, content_type=content_type)

    return bp
