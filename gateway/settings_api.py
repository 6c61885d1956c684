"""The caller's notification settings (``/v1/me/settings``), JWT-authenticated.

``GET`` answers ``{email, email_verified, push, digest, previews, snooze_until,
quiet_hours}`` (defaults for a user who never set any); ``PUT`` changes the fields it is
given and leaves the others, then answers the whole settings. Values are checked strictly: booleans are JSON
``true``/``false`` (not ``0``, ``1`` or strings), ``digest`` is ``hourly``, ``daily`` or
``off``, ``email`` a plausible address or ``null``; an unknown key (``email_verified``
too: only the link mailed to the address sets it) is refused. Errors as in
:mod:`gateway.devices_api`.

Setting ``email`` follows :func:`burrow.mail.verification.plan`: a new address is stored
unverified and a verification mail is queued (``email.verify``), subject to the per-user
and per-address limits (429, nothing changed); the same address again re-sends only after
the cool-down. The change is stored before the mail is queued, so the digester finds the
address the job names; a job the broker did not take undoes the cool-down (503).

``/v1/me/rooms/{room}/notifications`` is the caller's rule for one room of theirs
(``level``, ``snooze_until``: :mod:`burrow.core.notify_rules`), stored on their
membership; a room they are not in is 403 whether it exists or not.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import ids
from burrow.core.notify_rules import LEVELS, QuietHours
from burrow.mail import verification
from burrow.runtime.process import Runtime
from burrow.storage import database
from burrow.storage.room_rules import RoomRuleStore
from burrow.storage.users import DIGESTS, UserStore, stamp
from gateway.auth import Claims
from gateway.http_json import Invalid, json_object
from gateway.limiting import Limits
from gateway.link import PUBLISH_FAILED
from gateway.node import Node
from gateway.ws import authenticate

log = logging.getLogger(__name__)

FIELDS: Final = ("email", "push", "digest", "previews", "snooze_until", "quiet_hours")
ROOM_FIELDS: Final = ("level", "snooze_until")
MAX_SNOOZE: Final = timedelta(days=366)  # a snooze further away is a mistake (or a probe)
MAX_EMAIL: Final = 254  # RFC 5321's path limit, less the angle brackets
MAX_LOCAL_PART: Final = 64
EMAIL_ATTEMPTS: Final = 3  # concurrent changes of one user's address, re-read this often
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
    if "snooze_until" in data:
        check_snooze(data["snooze_until"], datetime.now(UTC))
    if "quiet_hours" in data:
        try:
            quiet = QuietHours.from_json(data["quiet_hours"])
        except ValueError as exc:
            raise Invalid(f"{exc}: quiet_hours is {{\"start\": \"HH:MM\", \"end\": "
                          "\"HH:MM\", \"tz\": an IANA zone}} or null",
                          field="quiet_hours") from None
        data["quiet_hours"] = None if quiet is None else quiet.to_json()
    return dict(data)


def check_snooze(value: Any, now: datetime) -> None:
    """``snooze_until``: null, or a time in ms since the epoch after *now* and at most
    :data:`MAX_SNOOZE` ahead; raises :exc:`Invalid`."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid("snooze_until must be a time in milliseconds since the epoch, or null",
                      field="snooze_until")
    now_ms = int(now.timestamp() * 1000)
    if not now_ms < value <= now_ms + int(MAX_SNOOZE.total_seconds() * 1000):
        raise Invalid(f"snooze_until must be in the future and at most {MAX_SNOOZE.days} "
                      "days ahead (null: no snooze)", field="snooze_until")


def parse_room_changes(data: dict[str, Any]) -> dict[str, Any]:
    """Check a ``PUT /v1/me/rooms/{room}/notifications`` object (keys already known)."""
    if "level" in data and data["level"] not in LEVELS:
        raise Invalid(f"level must be one of {', '.join(LEVELS)}", field="level")
    if "snooze_until" in data:
        check_snooze(data["snooze_until"], datetime.now(UTC))
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
        if "email" not in changes:
            return response.json((await store(request).update(claims.user, changes)).as_dict())
        try:
            return await change_email(request, claims.user, changes)
        except Invalid as refused:
            return refused.response()

    def rules(request: Request) -> RoomRuleStore:
        runtime: Runtime = request.app.ctx.runtime
        return RoomRuleStore(database.database(runtime.db))

    def not_member(room: str) -> HTTPResponse:
        # The same answer whether the room exists or not: nothing about rooms one is
        # not in leaks through this route.
        return Invalid(f"not a member of room {room}", code="forbidden",
                       status=403).response()

    @bp.get("/rooms/<room>/notifications")
    async def room_notifications(request: Request, room: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        if not ids.is_room_id(room):
            return Invalid("room must match [A-Za-z0-9_-]{1,64}", field="room").response()
        rule = await rules(request).get(room, claims.user)
        return not_member(room) if rule is None else response.json(rule.as_dict(room))

    @bp.put("/rooms/<room>/notifications", stream=True)
    async def change_room_notifications(request: Request, room: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        try:
            changes = parse_room_changes(await json_object(request, ROOM_FIELDS))
        except Invalid as refused:
            return refused.response()
        if not ids.is_room_id(room):  # after the body is read: none is left unconsumed
            return Invalid("room must match [A-Za-z0-9_-]{1,64}", field="room").response()
        rule = await rules(request).set(room, claims.user, changes)
        return not_member(room) if rule is None else response.json(rule.as_dict(room))

    return bp


async def change_email(request: Request, user: str, changes: dict[str, Any]) -> HTTPResponse:
    """Store *changes* with the address's new verification state and queue the mail the
    plan asks for: the settings after it, or 429 (nothing changed). Raises
    :exc:`Invalid` for 409 (nothing changed) and 503 (stored, no mail queued)."""
    runtime: Runtime = request.app.ctx.runtime
    users = UserStore(database.database(runtime.db))
    limits: Limits = request.app.ctx.limits
    address: str | None = changes.pop("email")
    for _ in range(EMAIL_ATTEMPTS):
        current = await users.email_state(user)
        now = stamp()
        plan = verification.plan(current, address, now)
        if plan.send:
            assert address is not None
            refused = await limits.verification(user, address)
            if refused is not None:
                return refused
        stored = await users.change_email(user, current.email, plan.state, changes)
        if stored is None:
            continue  # changed meanwhile by another request: decide again on what is there
        if plan.send:
            assert address is not None
            await _queue_mail(request.app.ctx.node, users, user, address, now)
        return response.json(stored.as_dict())
    raise Invalid("the email address was changed by another request meanwhile; retry",
                  field="email", code="conflict", status=409)


async def _queue_mail(node: Node, users: UserStore, user: str, address: str,
                      asked: datetime) -> None:
    job = verification.VerifyJob(f"verify-{uuid.uuid4().hex}", user, address)
    try:
        await node.request_verification(job.body(), job.id)
    except PUBLISH_FAILED as exc:
        log.warning("verification mail for %s not queued: %s", user, exc)
        # No cool-down for a mail that was never queued: a retry sends one.
        await users.forget_verification_sent(user, address, asked)
        raise Invalid("the address is saved, but its verification email could not be "
                      "queued; set it again to retry", field="email", code="unavailable",
                      status=503) from None
