"""The caller's notification settings (``/v1/me/settings``), JWT-authenticated.

``GET`` answers ``{email, push, digest, previews}`` (defaults for a user who never set
any); ``PUT`` changes the fields it is given and leaves the others, then answers the whole
settings. Values are checked strictly: booleans are JSON ``true``/``false`` (not ``0``,
``1`` or strings), ``digest`` is ``hourly``, ``daily`` or ``off``, ``email`` a plausible
address or ``null``; an unknown key is refused. Errors as in :mod:`gateway.devices_api`.
"""

from __future__ import annotations

import re
from typing import Any, Final

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow import database
from burrow.runtime import Runtime
from burrow.user_store import DIGESTS, UserStore
from gateway.auth import Claims
from gateway.http_json import Invalid, json_object
from gateway.ws import authenticate

FIELDS: Final = ("email", "push", "digest", "previews")
MAX_EMAIL: Final = 254  # RFC 5321's path limit, less the angle brackets
MAX_LOCAL_PART: Final = 64
# A plausible address, not RFC 5322's full grammar: dot-atoms on both sides and a domain
# of at least two DNS labels (IDNs in their xn-- form). No spaces, quotes, commas or angle
# brackets, so an address can go into a To: header as it is.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL: Final = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@{_LABEL}(?:\.{_LABEL})+")


def parse_changes(data: dict[str, Any]) -> dict[str, Any]:
    """Check a ``PUT /v1/me/settings`` object (keys already known); raises :exc:`Invalid`."""
    if "email" in data and data["email"] is not None:
        email = data["email"]
        match = EMAIL.fullmatch(email) if isinstance(email, str) else None
        if (match is None or len(email) > MAX_EMAIL
                or len(match.group("local")) > MAX_LOCAL_PART):
            raise Invalid(f"email must be an e-mail address of at most {MAX_EMAIL} "
                          "characters, or null", field="email")
    if "push" in data and not isinstance(data["push"], bool):
        raise Invalid("push must be true or false", field="push")
    if "digest" in data and data["digest"] not in DIGESTS:
        raise Invalid(f"digest must be one of {', '.join(DIGESTS)}", field="digest")
    if "previews" in data and not isinstance(data["previews"], bool):
        raise Invalid("previews must be true or false", field="previews")
    return dict(data)


def blueprint() -> Blueprint:
    bp = Blueprint("settings", url_prefix="/v1/me")
    bp.on_request(authenticate)

    def store(request: Request) -> UserStore:
        runtime: Runtime = request.app.ctx.runtime
        return UserStore(database.database(runtime.db))

    @bp.get("/settings")
    async def my_settings(request: Request) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        return response.json((await store(request).settings(claims.user)).as_dict())

    @bp.put("/settings", stream=True)
    async def change_settings(request: Request) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        try:
            changes = parse_changes(await json_object(request, FIELDS))
        except Invalid as refused:
            return refused.response()
        return response.json((await store(request).update(claims.user, changes)).as_dict())

    return bp
