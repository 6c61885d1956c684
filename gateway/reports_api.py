"""Message reports (issue 17 item 3, docs/moderation.md), JWT-authenticated:

- ``POST /v1/rooms/{room}/messages/{id}/report`` ``{"reason", "note"?}``: a member
  reports a message of the room; stored once per (reporter, message), then published to
  ``moderation.reports`` with a confirm. 201 for a new report, 200 with the same report
  for a repeat (published again, same AMQP ``message_id``: a report whose publish failed
  with 503 reaches the queue when the client retries).
- ``GET /v1/rooms/{room}/reports?state=open|resolved&limit=&after=`` and
  ``POST /v1/rooms/{room}/reports/{id}/resolve`` ``{"action", "note"?}``: for those who
  may moderate the room (gateway/room_access.py); resolving again changes nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection
from datetime import datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import events, ids
from burrow.storage import database
from burrow.storage.reports import ACTIONS, MAX_NOTE, OPEN, REASONS, RESOLVED, ReportStore
from burrow.storage.reports import is_report_id as _is_report_id
from gateway.auth import Claims
from gateway.http_json import Invalid, json_object, problem
from gateway.limiting import Limits
from gateway.link import PUBLISH_FAILED
from gateway.node import Node
from gateway.room_access import refuse_moderation
from gateway.ws import authenticate
from queues import topology

SCHEMA = "burrow.report/1"
MAX_LIST, DEFAULT_LIST = 200, 50
BODY_BYTES = 6 * MAX_NOTE + 128  # a note of 1,000 characters, each JSON-escaped

# A channel of its own per gateway worker (as verification mails have): should the
# exchange be missing, the broker closes the channel it was used on, and that must not
# be the one every send goes through.
_channels: weakref.WeakKeyDictionary[Node, AbstractChannel] = weakref.WeakKeyDictionary()



def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    """What the reporter gets back: no snapshot (a deleted body is not served again)."""
    return {"id": doc["_id"], "room": doc["room"], "message": doc["message"],
            "reason": doc["reason"], "state": doc["state"],
            "created_at": _ms(doc["created_at"])}


def _for_moderators(doc: dict[str, Any]) -> dict[str, Any]:
    entry = {**_public(doc), "reporter": doc["reporter"], "note": doc["note"],
             "snapshot": doc["snapshot"]}
    if "resolution" in doc:
        resolution = doc["resolution"]
        entry["resolution"] = {**resolution, "at": _ms(resolution["at"])}
    return entry


def queue_body(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``moderation.reports`` message body (docs/queues.md): stable, versioned."""
    return {"schema": SCHEMA, "id": doc["_id"], "room": doc["room"],
            "message": doc["message"], "reporter": doc["reporter"], "reason": doc["reason"],
            "note": doc["note"], "created_at": _ms(doc["created_at"]),
            "snapshot": doc["snapshot"]}


async def publish(node: Node, doc: dict[str, Any]) -> None:
    """Publish the report, confirmed and routed, or raise one of :data:`PUBLISH_FAILED`."""
    await node.link.ready()
    channel = _channels.get(node)
    if channel is None or channel.is_closed:
        connection = await node.runtime.broker.opened()
        channel = _channels[node] = await connection.channel(on_return_raises=True)
    exchange = await channel.get_exchange(topology.REPORT, ensure=False)
    await exchange.publish(
        aio_pika.Message(orjson.dumps(queue_body(doc)), content_type="application/json",
                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                         message_id=doc["_id"], type=SCHEMA),
        topology.MODERATION_REPORTS, timeout=node.settings.send_timeout)


def _note(data: dict[str, Any]) -> str:
    note = data.get("note", "")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise Invalid(f"note must be a string of at most {MAX_NOTE} characters",
                      field="note")
    return note


def _choice(data: dict[str, Any], name: str, allowed: Collection[str]) -> str:
    """*name* of the body, which must be one of *allowed*."""
    value = data.get(name)
    if value not in allowed:
        raise Invalid(f"{name} must be one of {', '.join(allowed)}", field=name)
    return str(value)


def blueprint() -> Blueprint:
    bp = Blueprint("reports", url_prefix="/v1/rooms")
    bp.on_request(authenticate)

    def node_of(request: Request) -> Node:
        node: Node = request.app.ctx.node
        return node

    def store_of(request: Request) -> ReportStore:
        return ReportStore(database.database(node_of(request).runtime.db))

    @bp.post("/<room>/messages/<message>/report", stream=True)
    async def report(request: Request, room: str, message: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        node = node_of(request)
        if not ids.is_room_id(room):
            return problem(400, "bad_room", "room must match [A-Za-z0-9_-]{1,64}")
        if not ids.is_client_id(message):
            return problem(400, "bad_request", "a message id is 1..64 printable characters")
        try:
            data = await json_object(request, ("reason", "note"), BODY_BYTES)
            reason, note = _choice(data, "reason", REASONS), _note(data)
        except Invalid as exc:
            return exc.response()
        if not (await node.rooms.role(room, claims.user) is not None
                or (claims.is_admin and await node.rooms.exists(room))):
            return problem(403, "forbidden", f"not a member of room {room}")
        target = (await node.messages.parents([message])).get(message)
        if target is None or target.room != room or target.kind is not None:
            return problem(404, "not_found", f"no message {message} in room {room}")
        limits: Limits = request.app.ctx.limits
        if (limited := await limits.reports(claims.user)) is not None:
            return limited
        snapshot = {"sender": target.sender, "seq": target.seq, "body": target.body,
                    "edited": target.edit_count > 0, "deleted": target.deleted_at is not None}
        doc, new = await store_of(request).file(room, message, claims.user, str(reason),
                                                note, snapshot)
        try:
            await publish(node, doc)
        except PUBLISH_FAILED:
            return problem(503, "unavailable", "the report is stored, but not yet passed on "
                           "to the moderators' queue: retry the same request")
        # For backend services (docs/events.md): each time, with the same id, as the queue.
        node.backend_events.publish_soon([events.report(events.REPORT_FILED, doc,
                                                        _ms(doc["created_at"]))])
        return response.json(_public(doc), status=201 if new else 200)

    @bp.get("/<room>/reports")
    async def list_reports(request: Request, room: str) -> HTTPResponse:
        if (refused := await refuse_moderation(request, room)) is not None:
            return refused
        state = request.args.get("state", OPEN)
        if state not in (OPEN, RESOLVED):
            return problem(400, "bad_request", "state must be open or resolved")
        raw_limit = request.args.get("limit", str(DEFAULT_LIST))
        # ASCII and short: "²" is a digit to isdigit() but not to int()
        if (not (raw_limit.isascii() and raw_limit.isdigit()) or len(raw_limit) > 4
                or not 1 <= int(raw_limit) <= MAX_LIST):
            return problem(400, "bad_request", f"limit must be an integer from 1 to {MAX_LIST}")
        after = request.args.get("after")
        if after is not None and not _is_report_id(after):
            return problem(400, "bad_request", "after must be a report id")
        found = await store_of(request).list(room, state, after, int(raw_limit))
        return response.json({"room": room, "state": state,
                              "reports": [_for_moderators(d) for d in found],
                              "next": found[-1]["_id"] if found else None})

    @bp.post("/<room>/reports/<report>/resolve", stream=True)
    async def resolve(request: Request, room: str, report: str) -> HTTPResponse:
        if (refused := await refuse_moderation(request, room)) is not None:
            return refused
        if not _is_report_id(report):
            return problem(400, "bad_request", "a report id is 21 lowercase hex digits")
        try:
            data = await json_object(request, ("action", "note"))
            action, note = _choice(data, "action", ACTIONS), _note(data)
        except Invalid as exc:
            return exc.response()
        claims: Claims = request.ctx.claims
        doc = await store_of(request).resolve(room, report, str(action), note, claims.user)
        if doc is None:
            return problem(404, "not_found", f"no report {report} in room {room}")
        node_of(request).backend_events.publish_soon([events.report(
            events.REPORT_RESOLVED, doc, _ms(doc["resolution"]["at"]))])
        return response.json(_for_moderators(doc))

    return bp
