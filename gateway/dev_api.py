"""Development mode (``BURROW_DEV_MODE=true``): the web demo and a login that trusts anyone.

``POST /v1/dev/token`` mints a short-lived HS256 token for whatever user name it is
given, so that a developer can open the demo as alice in one tab and bob in another, or
script the CLI, without an identity provider. That is exactly what must never run in
production, hence: off by default, refused at start unless the gateway verifies HS256
tokens with ``BURROW_JWT_SECRET`` (the secret it signs with), logged loudly when on, and
the route answers 404 ``dev_mode_off`` when off, so a client learns why rather than
guessing at a typo.

The demo (``/demo/``) and the browser client (``/client/burrow.js`` and the
``/client/roomstate.js`` it imports) are static files
from ``gateway/web``: plain ES modules, no build step. ``GET /`` sends a browser there.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import ids, tokens
from burrow.runtime.settings import ConfigError, Settings, is_loopback
from gateway.http_json import Invalid, json_object, problem

log = logging.getLogger(__name__)

WEB = Path(__file__).parent / "web"
ROLES = frozenset({"admin"})


def check(settings: Settings) -> None:
    """Raise :exc:`ConfigError` when dev mode is on but the gateway cannot sign tokens,
    or listens beyond loopback without being told that this is meant."""
    if not settings.dev_mode:
        return
    if not settings.jwt_secret:
        raise ConfigError("BURROW_DEV_MODE=true needs BURROW_JWT_SECRET: dev tokens are "
                          "HS256 tokens signed with it")
    if not is_loopback(settings.host) and not settings.dev_mode_any_host:
        raise ConfigError(
            f"BURROW_DEV_MODE=true gives anyone who can reach the gateway an admin token, "
            f"and BURROW_HOST={settings.host} is not loopback: turn dev mode off, listen "
            f"on 127.0.0.1, or set BURROW_DEV_MODE_ANY_HOST=true if this is a throw-away "
            f"machine")



def token_request(data: dict[str, Any], max_ttl: int) -> tuple[str, int, tuple[str, ...]]:
    """``{"user", "ttl"?, "roles"?}`` -> (user, ttl, roles); raises :exc:`Invalid`."""
    user, ttl, roles = data.get("user"), data.get("ttl", max_ttl), data.get("roles", [])
    if not ids.is_user_id(user):
        raise Invalid(f"user must be a string of 1-{ids.MAX_USER_ID} printable characters",
                      field="user")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= max_ttl:
        raise Invalid(f"ttl must be whole seconds from 1 to {max_ttl} (BURROW_DEV_TOKEN_TTL)",
                      field="ttl")
    if not isinstance(roles, list) or not set(roles) <= ROLES:
        raise Invalid("roles must be a list of: admin", field="roles")
    return user, ttl, tuple(roles)


def blueprint(settings: Settings) -> Blueprint:
    """The dev routes; without dev mode only the refusal of ``/v1/dev/token``."""
    bp = Blueprint("dev")

    @bp.post("/v1/dev/token", stream=True)
    async def mint(request: Request) -> HTTPResponse:
        if not settings.dev_mode:
            return problem(404, "dev_mode_off", "this gateway does not run in development "
                           "mode (BURROW_DEV_MODE): get a token from your identity provider")
        try:
            user, ttl, roles = token_request(
                await json_object(request, ("user", "ttl", "roles"), 1024),
                settings.dev_token_ttl)
        except Invalid as exc:
            return exc.response()
        now = time.time()
        token = tokens.mint(settings.jwt_secret, user, ttl, roles, settings.jwt_audience,
                            settings.jwt_issuer, now=now)
        return response.json({"token": token, "user": user, "expires_at": int(now + ttl)})

    if settings.dev_mode:
        log.warning("development mode is ON: anyone can mint a token for any user at "
                    "POST /v1/dev/token; never run it like this in production")

        @bp.get("/")
        async def home(request: Request) -> HTTPResponse:
            return response.redirect("/demo/")

        bp.static("/demo/", WEB / "demo", index="index.html", name="demo")
        bp.static("/client/burrow.js", WEB / "burrow.js", name="client",
                  content_type="text/javascript; charset=utf-8")
        # burrow.js imports it (./roomstate.js), and so does the demo
        bp.static("/client/roomstate.js", WEB / "roomstate.js", name="client_roomstate",
                  content_type="text/javascript; charset=utf-8")
    return bp
