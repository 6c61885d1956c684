"""``POST /v1/ws-ticket``: a one-time ticket for ``/v1/ws`` or ``/v1/sse``, so that a
browser never puts its JWT in a URL (:mod:`burrow.storage.tickets` says how tickets are kept).

The token comes in the ``Authorization`` header only (this path is not one of those that
take ``?access_token=``, and a ticket cannot buy another ticket). The route takes no
body: it reads the body after the token check through a limit of 0 bytes, so a body is
refused (413) unread (:func:`gateway.http_json.without_body`). It is limited like every ``/v1`` request, per
client address (``BURROW_RATE_IP``): a ticket costs what the handshake it is for costs.
The answer is ``Cache-Control: no-store``: it is a credential.
"""

from __future__ import annotations

import logging

from pymongo.errors import PyMongoError
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.runtime import metrics
from burrow.storage.tickets import TicketStore
from gateway.auth import Claims
from gateway.http_json import problem, without_body
from gateway.ws import authenticate

log = logging.getLogger(__name__)


def blueprint() -> Blueprint:
    bp = Blueprint("tickets", url_prefix="/v1")
    bp.on_request(authenticate)

    @bp.post("/ws-ticket", stream=True)
    @without_body()
    async def issue(request: Request) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        tickets: TicketStore = request.app.ctx.tickets
        try:
            ticket, valid_for = await tickets.issue(
                claims.user, claims.roles, claims.expires_at,
                request.app.ctx.settings.ws_ticket_ttl)
        except PyMongoError as exc:
            log.warning("ticket not issued, the database failed: %s", exc)
            return problem(503, "unavailable", "the database is not reachable; retry")
        if not ticket:  # accepted within the clock-skew leeway, but expiring
            metrics.GATEWAY_AUTH_FAILURES.labels("expired").inc()
            return response.json(
                {"error": {"code": "unauthorized", "reason": "expired",
                           "message": "token expires before a ticket could be used"}},
                status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return response.json({"ticket": ticket, "expires_in": int(valid_for)},
                             headers={"Cache-Control": "no-store"})

    return bp
