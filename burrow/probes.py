"""Probes and metrics over HTTP, the same in every process: ``/healthz``, ``/readyz``,
``/metrics``. The app that mounts :func:`blueprint` keeps its
:class:`~burrow.runtime.Runtime` on ``app.ctx.runtime``.
"""

from __future__ import annotations

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow import metrics


def blueprint() -> Blueprint:
    """A fresh blueprint of the three routes (one per app: Sanic binds blueprints to apps)."""
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
        body, content_type = metrics.render(request.headers.get("accept"))
        return response.raw(body, content_type=content_type)

    return bp
