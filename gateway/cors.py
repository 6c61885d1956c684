"""CORS, so that a web app on another origin can use the HTTP API and SSE (burrow.js).

Off unless ``BURROW_CORS_ORIGINS`` names origins. Tokens travel in the
``Authorization`` header, never in cookies, so a page from an allowed origin can do only
what its user's token allows, and ``*`` is as safe as a list: the list only narrows
which sites can embed Burrow. No ``Access-Control-Allow-Credentials``: Burrow reads no
cookies. WebSockets are not subject to CORS (the browser sends ``Origin`` and the token
decides). Preflights (``OPTIONS``) are answered for every route; an origin that is not
allowed gets no CORS headers, and the browser then keeps the answer from the page.
"""

from __future__ import annotations

from typing import Any

from sanic import Request, Sanic, response
from sanic.exceptions import MethodNotAllowed
from sanic.response import BaseHTTPResponse, HTTPResponse

ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
ALLOW_METHODS = "GET, POST, PUT, DELETE"
EXPOSE_HEADERS = "Retry-After, WWW-Authenticate"
MAX_AGE = "600"  # seconds a browser may reuse a preflight answer


def allowed(origins: frozenset[str], origin: str | None) -> str | None:
    """The value of ``Access-Control-Allow-Origin`` for *origin*, or None."""
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin.rstrip("/") in origins else None


def install(app: Sanic[Any, Any], origins: frozenset[str]) -> None:
    """Add the preflight route and the response headers; nothing without *origins*."""
    if not origins:
        return

    async def preflight(request: Request) -> HTTPResponse:
        allow = allowed(origins, request.headers.get("origin"))
        if allow is None:
            return response.empty(status=204)
        return response.empty(status=204, headers={
            "Access-Control-Allow-Origin": allow, "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin"})

    async def headers(request: Request, answer: BaseHTTPResponse) -> None:
        allow = allowed(origins, request.headers.get("origin"))
        if allow is not None:
            answer.headers["Access-Control-Allow-Origin"] = allow
            answer.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            answer.headers["Vary"] = "Origin"

    async def method_not_allowed(request: Request, exc: Exception) -> BaseHTTPResponse:
        # Routes declare no OPTIONS, so a preflight arrives as Sanic's 405 (a catch-all
        # OPTIONS route loses to the path's own route): answer it here.
        if request.method == "OPTIONS":
            return await preflight(request)
        return app.error_handler.default(request, exc)

    app.exception(MethodNotAllowed)(method_not_allowed)
    app.on_response(headers)
