"""One-click unsubscribe from digest emails (``/v1/unsubscribe?token=...``), no login.

The link in every digest carries a signed token (:mod:`burrow.mail.unsubscribe`). ``GET``
only shows a confirmation page with a button: mail scanners and link previews fetch
links, and must not unsubscribe anybody. ``POST`` unsubscribes; it is also what mail
clients send for RFC 8058 one-click (``List-Unsubscribe-Post``).
"""

from __future__ import annotations

import html
import logging

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.mail.unsubscribe import BadToken, read_token
from burrow.runtime.settings import ConfigError
from burrow.storage import database
from burrow.storage.users import UserStore
from gateway.http_json import FORM_FIELDS, without_body

log = logging.getLogger(__name__)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>{text}</p>{form}</body></html>
"""
FORM = ('<form method="post" action="/v1/unsubscribe?token={token}">'
        '<button type="submit">Unsubscribe from digest emails</button></form>')


def _page(status: int, title: str, text: str, form: str = "") -> HTTPResponse:
    return response.html(PAGE.format(title=html.escape(title), text=html.escape(text),
                                     form=form), status=status)


def _user(request: Request) -> tuple[str | None, HTTPResponse | None]:
    try:
        secret = request.app.ctx.settings.unsubscribe_key()
    except ConfigError:
        return None, _page(503, "Not available", "Unsubscribe links are not configured here.")
    token = request.args.get("token", "")
    try:
        return read_token(secret, token), None
    except BadToken as exc:
        return None, _page(400, "Invalid link", f"This unsubscribe link is not valid ({exc}).")


def blueprint() -> Blueprint:
    bp = Blueprint("unsubscribe", url_prefix="/v1")

    @bp.get("/unsubscribe")
    async def confirm(request: Request) -> HTTPResponse:
        user, problem = _user(request)
        if problem is not None:
            return problem
        token = html.escape(request.args.get("token", ""), quote=True)
        return _page(200, "Unsubscribe", f"Stop digest emails for {user}?",
                     FORM.format(token=token))

    @bp.post("/unsubscribe", stream=True)
    @without_body(FORM_FIELDS)  # the token is in the query; the form's fields are dropped
    async def unsubscribe(request: Request) -> HTTPResponse:
        user, problem = _user(request)
        if problem is not None:
            return problem
        assert user is not None
        users = UserStore(database.database(request.app.ctx.runtime.db))
        await users.unsubscribe_digest(user)
        log.info("user %s unsubscribed from digests", user)
        return _page(200, "Unsubscribed", "You will not get digest emails any more. "
                     "You can turn them on again in your settings.")

    return bp
