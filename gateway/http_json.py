"""JSON request bodies of the HTTP API: read through a small limit, refused clearly.

Sanic would buffer up to 100 MB before any middleware runs, so before the token is
checked. Here a route that takes a body is a ``stream=True`` one and reads it in its
handler, after the token check, through a limit of its own (an oversized upload is
answered 413 while it is still coming); a route without a body reads it through a
limit of 0 (:func:`without_body`); and the app-wide ``REQUEST_MAX_SIZE`` is :data:`LARGEST_BODY`, which bounds what any
request, anonymous or not, can make the gateway read.
Every refusal is ``{"error": {"code", "message", "field"?}}`` with a 4xx status.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import unquote

import orjson
from sanic import Request, response
from sanic.exceptions import PayloadTooLarge
from sanic.response import HTTPResponse

MAX_REQUEST_BYTES: Final = 16384
LARGEST_BODY: Final = 262144
"""What any request may carry (Sanic's ``REQUEST_MAX_SIZE``): the largest route limit,
``POST /v1/rooms`` with 1,000 members."""
"""Default limit: a device registration is under 9 kB even with a 4096-character token."""
FORM_FIELDS: Final = 1024
"""What an HTML form of Burrow's posts and the route drops (its token is in the query):
the confirm button of a page, or RFC 8058's ``List-Unsubscribe=One-Click``."""


class Invalid(Exception):
    """A request this API refuses; :meth:`response` is the answer."""

    def __init__(self, message: str, field: str | None = None, code: str = "bad_request",
                 status: int = 400) -> None:
        super().__init__(message)
        self.message, self.field, self.code, self.status = message, field, code, status

    def response(self) -> HTTPResponse:
        error: dict[str, str] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return response.json({"error": error}, status=self.status)


async def json_object(request: Request, allowed: tuple[str, ...],
                      limit: int = MAX_REQUEST_BYTES) -> dict[str, Any]:
    """Read the body (at most *limit* bytes) as a JSON object of *allowed* keys.

    Raises :exc:`Invalid`: 413 when too large, 400 when not JSON, not an object, or with
    a key not in *allowed*. The route must be a ``stream=True`` one: only then is the
    body still unread here, so the limit holds before anything is buffered.
    """
    await read_body(request, limit)
    shape = "{" + ", ".join(allowed) + "}"
    try:
        data: Any = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise Invalid(f"the body is not valid JSON: expected an object {shape}",
                      code="bad_json") from None
    if not isinstance(data, dict):
        raise Invalid(f"the body must be a JSON object {shape}")
    for key in data:
        if key not in allowed:
            raise Invalid(f"unknown field {key!r}: allowed are {', '.join(allowed)}",
                          field=str(key))
    return data


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a ``stream=True`` route, read through *limit* bytes; :exc:`Invalid`
    413 beyond it (answered while the upload is still coming)."""
    if request.stream is not None:
        request.stream.request_max_size = limit
    try:
        await request.receive_body()
    except PayloadTooLarge:
        if limit == 0:
            raise Invalid(f"{request.method} {request.path} takes no body",
                          code="too_large", status=413) from None
        raise Invalid(f"the body is larger than {limit} bytes", code="too_large",
                      status=413) from None
    return request.body


Handler = Callable[..., Awaitable[HTTPResponse]]


def without_body(limit: int = 0) -> Callable[[Handler], Handler]:
    """For a ``stream=True`` route that takes no body, or ignores one (an HTML form's
    fields, up to *limit* bytes): read and drop it before the handler runs, 413 beyond.

    Not Sanic's ``ignore_body``: with it Sanic logs an ERROR ("body not consumed") for
    every successful request that has a body or even a ``Content-Length: 0`` header,
    which a browser's ``fetch`` POST and every form post send.
    """
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            try:
                await read_body(request, limit)
            except Invalid as exc:
                return exc.response()
            return await handler(request, *args, **kwargs)
        return run
    return wrap


def path_id(raw: str) -> str:
    """An id from the path with its percent-escapes decoded: clients escape ``a@b`` as
    ``a%40b`` (encodeURIComponent, urllib's quote) and Sanic hands the raw segment over.
    Sanic's ``unquote=True`` is not used: it replaces undecodable bytes with U+FFFD (a
    different id, silently) and whether it applies depends on route registration order.
    Undecodable input gives "", which every id check refuses."""
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return ""


def problem(status: int, code: str, message: str, **extra: str) -> HTTPResponse:
    """The API's error answer: ``{"error": {"code", "message", **extra}}`` with *status*."""
    return response.json({"error": {"code": code, "message": message, **extra}},
                         status=status)
