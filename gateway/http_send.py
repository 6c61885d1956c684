"""``POST /v1/rooms/{room}/messages``: send over plain HTTP (with SSE or long-polling).

The body is ``{"body": "..."}`` and the ``Idempotency-Key`` header is the client_id: the
same key in the same room is stored once however often the request is repeated (the
sequencer's dedup, as for WebSocket sends), so a client that got no answer simply
repeats the request.

Changes go the same way (docs/protocol.md, changes): ``POST .../messages/{id}/edit``
``{"body"}``, ``POST .../messages/{id}/delete`` or ``DELETE .../messages/{id}``, and
``POST .../messages/{id}/reactions`` ``{"emoji", "remove"}``, each with its
``Idempotency-Key``; 201 with the change event's seq, or the sequencer's refusal
(403 ``forbidden`` / ``edit_window``, 404 ``not_found``, 409 ``too_many_reactions``).
A message may name ``"attachments": [id, ...]`` (docs/attachments.md): 400
``bad_attachments`` for a malformed list, 409 ``not_claimable`` for uploads it may not
attach. A reply names ``"reply_to": id`` (docs/protocol.md, replies): 404
``not_found`` when that is no message of the room. A message may carry
``"mentions": {"users": [...], "room": true}`` (docs/protocol.md, mentions): 400
``bad_request`` (field ``mentions``) for a malformed value, 409 ``bad_mention`` for a
user who is not a member, 409 ``room_too_large`` for @room in a large room. A
message or edit the pre-publish moderation refuses is 422 ``rejected`` with the reason
(docs/moderation.md, "Pre-publish hook"). The answer waits until the message is
stored: 201 with its seq, or an error a client may retry with the same key (503
``unavailable`` or ``moderation_unavailable``, 504 ``timeout``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import ids
from burrow.core.envelopes import MAX_ATTACHMENTS, attachment_ids, reply_to_id
from burrow.core.lifecycle import MAX_EMOJI_BYTES, valid_emoji
from burrow.core.mentions import MAX_MENTIONS
from burrow.core.mentions import parse as parse_mentions
from gateway import protocol, streams
from gateway.http_json import Invalid, json_object, without_body
from gateway.limiting import Limits
from gateway.link import Unavailable
from gateway.node import Node
from gateway.protocol import ProtocolError
from gateway.sends import Refused
from gateway.ws import authenticate

STATUS = {"forbidden": 403, "edit_window": 403, "not_found": 404,
          "too_many_reactions": 409, "not_claimable": 409, "bad_mention": 409,
          "room_too_large": 409, "too_large": 413, "unavailable": 503, "timeout": 504,
          "muted": 403, "locked": 403, "slow_mode": 429,  # these three: moderation.md
          "rejected": 422, "moderation_unavailable": 503}  # pre-publish moderation
RETRYABLE = frozenset({"unavailable", "timeout", "moderation_unavailable"})


def refused(code: str, message: str, retry_after_ms: int | None = None,
            **extra: str) -> HTTPResponse:
    """The error answer; with *retry_after_ms* (a mute, slow mode) in the body and as
    ``Retry-After`` (whole seconds, rounded up)."""
    status = STATUS.get(code, 400)
    headers = {"Retry-After": "1"} if code in RETRYABLE else None
    body: dict[str, object] = {"code": code, "message": message, **extra}
    if retry_after_ms is not None:
        body["retry_after_ms"] = retry_after_ms
        headers = {"Retry-After": str(max(1, -(-retry_after_ms // 1000)))}
    return response.json({"error": body}, status=status, headers=headers)


def blueprint() -> Blueprint:
    bp = Blueprint("http_send", url_prefix="/v1")
    bp.on_request(authenticate)

    @bp.post("/rooms/<room>/messages", stream=True)
    async def send(request: Request, room: str) -> HTTPResponse:
        settings = request.app.ctx.settings
        if not ids.is_room_id(room):
            return refused("bad_room", "room ids match [A-Za-z0-9_-]{1,64}")
        client_id = _idempotency_key(request)
        if isinstance(client_id, HTTPResponse):
            return client_id
        try:
            # JSON may escape a character into 6 bytes; the body's own limit is checked
            # on the decoded text below
            data = await json_object(request, ("body", "attachments", "reply_to", "mentions"),
                                     6 * settings.max_body_bytes + 160 + 30 * MAX_ATTACHMENTS
                                     + 32 + (6 * 128 + 3) * MAX_MENTIONS)
        except Invalid as exc:
            return exc.response()
        body = _body(data, settings.max_body_bytes)
        if isinstance(body, HTTPResponse):
            return body
        try:
            attached = attachment_ids(data.get("attachments"))
        except ValueError as exc:
            return refused("bad_attachments", str(exc), field="attachments")
        try:
            reply_to = reply_to_id(data.get("reply_to"))
        except ValueError as exc:
            return refused("bad_request", str(exc), field="reply_to")
        try:
            mentioned = parse_mentions(data.get("mentions"))
        except ValueError as exc:
            return refused("bad_request", str(exc), field="mentions")
        return await send_and_wait(request, protocol.SendFrame(
            room, client_id, body, attachments=attached, reply_to=reply_to,
            mentions=mentioned))

    @bp.post("/rooms/<room>/messages/<message>/edit", stream=True)
    async def edit(request: Request, room: str, message: str) -> HTTPResponse:
        settings = request.app.ctx.settings
        checked = _change_key(room, message, request)
        if isinstance(checked, HTTPResponse):
            return checked
        try:
            data = await json_object(request, ("body",), 6 * settings.max_body_bytes + 64)
        except Invalid as exc:
            return exc.response()
        body = _body(data, settings.max_body_bytes)
        if isinstance(body, HTTPResponse):
            return body
        return await send_and_wait(request, protocol.SendFrame(room, checked, body, "edit",
                                                               message))

    async def delete(request: Request, room: str, target: str) -> HTTPResponse:
        checked = _change_key(room, target, request)
        if isinstance(checked, HTTPResponse):
            return checked
        return await send_and_wait(request, protocol.SendFrame(room, checked, "", "delete",
                                                               target))

    @bp.post("/rooms/<room>/messages/<message>/delete", stream=True)
    @without_body()
    async def delete_post(request: Request, room: str, message: str) -> HTTPResponse:
        return await delete(request, room, message)

    @bp.delete("/rooms/<room>/messages/<message>", stream=True)
    @without_body()
    async def delete_message(request: Request, room: str, message: str) -> HTTPResponse:
        return await delete(request, room, message)

    @bp.post("/rooms/<room>/messages/<message>/reactions", stream=True)
    async def react(request: Request, room: str, message: str) -> HTTPResponse:
        checked = _change_key(room, message, request)
        if isinstance(checked, HTTPResponse):
            return checked
        try:
            data = await json_object(request, ("emoji", "remove"), 1024)
        except Invalid as exc:
            return exc.response()
        emoji, remove = data.get("emoji"), data.get("remove", False)
        if not valid_emoji(emoji):
            return refused("bad_request", f"emoji must be 1..{MAX_EMOJI_BYTES} bytes of "
                           "text without control characters", field="emoji")
        if not isinstance(remove, bool):
            return refused("bad_request", "remove must be true or false", field="remove")
        return await send_and_wait(request, protocol.SendFrame(room, checked, "", "reaction",
                                                               message, emoji, remove))

    return bp


def _body(data: dict[str, Any], limit: int) -> str | HTTPResponse:
    """The ``body`` of a send or an edit, or the 400/413 that refuses it."""
    body = data.get("body")
    if not isinstance(body, str):
        return refused("bad_request", "body must be a string", field="body")
    if len(body.encode()) > limit:
        return refused("too_large", f"body is larger than {limit} bytes (UTF-8)",
                       field="body")
    return body


def _change_key(room: str, target: str, request: Request) -> str | HTTPResponse:
    """The Idempotency-Key of a change request, or the refusal of its path or key."""
    if not ids.is_room_id(room):
        return refused("bad_room", "room ids match [A-Za-z0-9_-]{1,64}")
    if not ids.is_client_id(target):
        return refused("bad_request", "a message id is 1..64 printable ASCII characters")
    return _idempotency_key(request)


def _idempotency_key(request: Request) -> str | HTTPResponse:
    """The request's Idempotency-Key (its client_id), or the 400 that asks for one."""
    client_id = request.headers.get("idempotency-key")
    if not ids.is_client_id(client_id):
        return refused("bad_request", "the Idempotency-Key header is required: 1..64 "
                       "printable ASCII characters, the same for every retry",
                       field="Idempotency-Key")
    return str(client_id)


async def send_and_wait(request: Request, frame: protocol.SendFrame) -> HTTPResponse:
    """Send *frame* (a message or a change) as the request's user; 201 once stored."""
    node: Node = request.app.ctx.node
    settings = request.app.ctx.settings
    limits: Limits = request.app.ctx.limits
    limited = await limits.http_send(request.ctx.claims.user)
    if limited is not None:
        return limited  # not stored; the same key may be retried later
    collector = streams.Collector()
    conn = streams.connection(request, request.ctx.claims, collector)
    try:
        await node.send(conn, frame)
        async with asyncio.timeout(settings.send_timeout + 1):
            while True:  # the ack or the error of this send (nothing else comes here)
                answer = orjson.loads(await collector.frames.get())
                if answer.get("type") in ("ack", "error"):
                    break
    except ProtocolError as exc:
        return refused(exc.code, exc.message,
                       exc.retry_after_ms if isinstance(exc, Refused) else None)
    except Unavailable as exc:
        return refused("unavailable", f"{exc}; retry with the same Idempotency-Key")
    except TimeoutError:
        return refused("timeout", "not stored in time; retry with the same "
                       "Idempotency-Key")
    finally:
        conn.stop_writing()
        await asyncio.shield(node.drop_soon(conn))
    if answer["type"] == "error":
        return refused(answer["code"], answer["message"])
    return response.json({key: answer[key] for key in ("room", "seq", "id", "client_id")},
                         status=201)
