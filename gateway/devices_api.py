"""The HTTP API of push devices (``/v1/devices``), JWT-authenticated: a user's own only.

``POST /v1/devices`` registers a push token of the caller's (201 when new for them, 200
when they had it already; a token another user had moves to the caller), ``GET`` lists
them, ``DELETE /v1/devices/{id}`` unregisters one (404 unless it is the caller's). Tokens
are never sent back whole: a push token lets whoever holds it (and the app's credentials)
reach the phone, and the app knows its own; the list shows the last few characters so a
client can tell its devices apart.

Errors are JSON ``{"error": {"code", "message"}}``; a refused field is named in the message
and in ``error.field``. Bodies are read through a small limit
(:data:`gateway.http_json.MAX_REQUEST_BYTES`, 413 beyond it) instead of Sanic's app-wide 100 MB, without
reading more than that. The request parsers are pure functions, usable without a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.push import Platform, TokenKind
from burrow.runtime.process import Runtime
from burrow.storage import database
from burrow.storage.devices import DeviceStore, Registration
from gateway.auth import Claims
from gateway.http_json import Invalid, json_object, without_body
from gateway.ws import authenticate

APNS_TOKEN: Final = re.compile(r"[0-9A-Fa-f]{64,200}")
FCM_TOKEN: Final = re.compile(r"[\x21-\x7e]{1,4096}")  # printable ASCII, no space
APP: Final = re.compile(r"[\x21-\x7e]{0,255}")
FIELDS: Final = ("platform", "token", "token_kind", "app")
SUFFIX_CHARS: Final = 6


@dataclass(frozen=True)
class DeviceRequest:
    platform: Platform
    token: str
    token_kind: TokenKind | None  # FCM: registration_token or fid; APNs: None
    app: str


def parse_device(data: dict[str, Any]) -> DeviceRequest:
    """Check a ``POST /v1/devices`` object; raises :exc:`Invalid` naming the field."""
    platform = data.get("platform")
    if platform not in ("fcm", "apns"):
        raise Invalid('platform must be "fcm" or "apns"', field="platform")
    token = data.get("token")
    kind: TokenKind | None = None
    if platform == "apns":
        if not isinstance(token, str) or APNS_TOKEN.fullmatch(token) is None:
            raise Invalid("token must be an APNs device token: 64 to 200 hexadecimal "
                          "characters", field="token")
        if "token_kind" in data:
            raise Invalid("token_kind is for FCM only: leave it out for APNs",
                          field="token_kind")
        token = token.lower()  # hex is case-blind; one spelling keeps the token unique
    else:
        if not isinstance(token, str) or FCM_TOKEN.fullmatch(token) is None:
            raise Invalid("token must be an FCM registration token or installation id: "
                          "1 to 4096 printable ASCII characters, no spaces", field="token")
        kind = data.get("token_kind", "registration_token")
        if kind not in ("registration_token", "fid"):
            raise Invalid('token_kind must be "registration_token" or "fid"',
                          field="token_kind")
    app = data.get("app", "")
    if not isinstance(app, str) or APP.fullmatch(app) is None:
        raise Invalid("app must be a string of at most 255 printable ASCII characters, "
                      "no spaces", field="app")
    return DeviceRequest(platform, token, kind, app)


def token_suffix(token: str) -> str:
    """The last characters of *token* shown in lists: 6, and never over a quarter of it."""
    shown = min(SUFFIX_CHARS, len(token) // 4)
    return token[len(token) - shown:]


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def listed(registration: Registration) -> dict[str, Any]:
    device = registration.device
    return {"id": device.id, "platform": device.platform,
            "token_kind": device.token_kind if device.platform == "fcm" else None,
            "app": device.app, "token_suffix": token_suffix(device.token),
            "created_at": epoch_ms(registration.created_at),
            "updated_at": epoch_ms(registration.updated_at)}


def blueprint() -> Blueprint:
    bp = Blueprint("devices", url_prefix="/v1/devices")
    bp.on_request(authenticate)

    def store(request: Request) -> DeviceStore:
        runtime: Runtime = request.app.ctx.runtime
        return DeviceStore(database.database(runtime.db))

    @bp.post("/", stream=True)
    async def register(request: Request) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        try:
            wanted = parse_device(await json_object(request, FIELDS))
        except Invalid as refused:
            return refused.response()
        device_id, new = await store(request).register(
            claims.user, wanted.platform, wanted.token, wanted.token_kind, wanted.app)
        return response.json({"id": device_id, "platform": wanted.platform,
                              "token_kind": wanted.token_kind, "app": wanted.app},
                             status=201 if new else 200)

    @bp.get("/")
    async def my_devices(request: Request) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        found = await store(request).registrations(claims.user)
        return response.json({"devices": [listed(r) for r in found]})

    @bp.delete("/<device_id>", stream=True)
    @without_body()
    async def unregister(request: Request, device_id: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        if not await store(request).remove(claims.user, device_id):
            return Invalid(f"you have no device {device_id}", code="not_found",
                           status=404).response()
        return response.empty(status=204)

    return bp
