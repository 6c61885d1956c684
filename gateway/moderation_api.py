"""Room moderation over HTTP (issue 17 item 1, docs/moderation.md), JWT-authenticated:

- ``POST /v1/rooms/{room}/moderation`` ``{"action", "user"?, "seconds"?, "reason"?}``
  with an ``Idempotency-Key``: promote, demote, remove, mute, unmute, ban, unban,
  slow_mode, lock, unlock, transfer. Who may do what to whom: burrow.core.moderation.
- ``GET /v1/rooms/{room}/moderation/audit?limit=&before=`` and
  ``GET /v1/rooms/{room}/bans``: for those who may moderate the room.
- ``GET /v1/rooms/{room}``: the room as a member sees it (owner, my role, slow mode,
  lock, my mute), so a client can show its state.

Each action, in this order: write the state (idempotent, marked with the audit id),
write the audit record (id from room + actor + key), tell every gateway (member event),
sequence the room event (kind ``moderation``), then mark the record with its seq and
answer 200. A failure after the state write answers 503/504 and the same request again
redoes what is missing: the state write if the record is not there yet, then the member
events and the room event until the record has its seq; a completed request is
answered again from its record and redoes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import ids
from burrow.core import moderation as rules
from burrow.storage import database
from burrow.storage.moderation import ModerationStore, audit_id, is_audit_id
from burrow.storage.rooms import MEMBER, MODERATOR, OWNER
from gateway import backend_events
from gateway.auth import Claims
from gateway.http_json import Invalid, json_object, problem
from gateway.link import PUBLISH_FAILED
from gateway.moderation_events import NotSequenced, ms, publish_member_events, sequence
from gateway.node import Node
from gateway.room_access import refuse_moderation
from gateway.ws import authenticate

MAX_AUDIT, DEFAULT_AUDIT = 200, 50
STATUS = {"unavailable": 503, "timeout": 504, "forbidden": 403}


class Conflict(Exception):
    """A write found the room changed under it (two transfers at once): 409."""


def _record_view(doc: dict[str, Any]) -> dict[str, Any]:
    """An audit record as the API shows it (times in ms)."""
    view = {"id": doc["_id"], "room": doc["room"], "action": doc["action"],
            "user": doc.get("user"), "by": doc["by"], "reason": doc.get("reason", ""),
            "at": ms(doc["at"]), "seq": doc.get("seq")}
    if doc.get("seconds") is not None:
        view["seconds"] = doc["seconds"]
    if doc.get("until") is not None:
        view["until"] = ms(doc["until"])
    return view


def _answer(doc: dict[str, Any]) -> HTTPResponse:
    view = _record_view(doc)
    body = {"action": view["action"], "user": view["user"], "seq": view["seq"],
            "audit": view["id"], "room": view["room"], "reason": view["reason"]}
    body.update({k: view[k] for k in ("seconds", "until") if k in view})
    return response.json(body)


async def _apply(node: Node, store: ModerationStore, act: rules.Action, room: str,
                 actor: str, mod_id: str, until: datetime | None,
                 previous_owner: str | None) -> None:
    """Write the state of *act* (each write idempotent, marked with *mod_id*)."""
    rooms, user = node.rooms, act.user or ""
    match act.action:
        case rules.PROMOTE | rules.DEMOTE:
            await rooms.set_role(room, user, MODERATOR if act.action == rules.PROMOTE
                                 else MEMBER, mod_id)
        case rules.REMOVE:
            await rooms.remove(room, user)
        case rules.BAN:
            await store.ban(room, user, actor, act.reason, mod_id)
            await rooms.remove(room, user)
        case rules.UNBAN:
            await store.unban(room, user)
        case rules.MUTE | rules.UNMUTE:
            await rooms.mute(room, user, until, mod_id)
        case rules.SLOW_MODE:
            await rooms.configure(room, mod_id, slow_mode_s=act.seconds or 0)
        case rules.LOCK | rules.UNLOCK:
            await rooms.configure(room, mod_id, locked=act.action == rules.LOCK)
        case rules.TRANSFER:
            # The old owner steps down first, on condition of still being the owner:
            # of two transfers at once only one matches; the other is refused here.
            if previous_owner is not None and previous_owner != user and \
                    not await rooms.set_role(room, previous_owner, MODERATOR, mod_id,
                                             only_from=OWNER):
                raise Conflict(f"{previous_owner} no longer owns {room}")
            await rooms.set_role(room, user, OWNER, mod_id)


async def refuse_banned(node: Node, room: str, user: str) -> HTTPResponse | None:
    """The 403 ``banned`` that refuses adding *user* to *room* while banned, else None."""
    if await ModerationStore(database.database(node.runtime.db)).banned(room, user) is None:
        return None
    return problem(403, "banned", f"{user} is banned from {room}: unban them first")


def blueprint() -> Blueprint:
    bp = Blueprint("moderation", url_prefix="/v1/rooms")
    bp.on_request(authenticate)

    def node_of(request: Request) -> Node:
        node: Node = request.app.ctx.node
        return node

    def store_of(request: Request) -> ModerationStore:
        return ModerationStore(database.database(node_of(request).runtime.db))

    @bp.post("/<room>/moderation", stream=True)
    async def moderate(request: Request, room: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        node, store = node_of(request), store_of(request)
        if not ids.is_room_id(room):
            return problem(400, "bad_room", "room must match [A-Za-z0-9_-]{1,64}")
        key = request.headers.get("idempotency-key")
        if not ids.is_client_id(key):
            return problem(400, "bad_request", "the Idempotency-Key header is required: "
                           "1..64 printable ASCII characters, the same for every retry",
                           field="Idempotency-Key")
        try:
            act = rules.parse(await json_object(request, rules.FIELDS, rules.BODY_BYTES))
        except Invalid as exc:
            return exc.response()
        except rules.BadRequest as exc:
            return problem(400, "bad_request", str(exc), field=exc.field)
        room_doc = await node.rooms.room(room)
        actor_role = await node.rooms.role(room, claims.user)
        if room_doc is None or (actor_role is None and not claims.is_admin):
            return problem(404, "not_found", f"no room {room}")  # not disclosed
        mod_id = audit_id(room, claims.user, str(key))
        record = await store.get(mod_id)
        if record is not None and (record["action"], record.get("user")) != (
                act.action, act.user):
            return problem(409, "key_reused", "this Idempotency-Key was used for another "
                           "action: use a new key for a new action")
        if record is None:
            try:
                record = await _decide_and_write(node, store, act, room, claims, actor_role,
                                                 room_doc, mod_id)
            except rules.Refusal as exc:
                return problem(exc.status, exc.code, exc.message)
            except Conflict as exc:
                return problem(409, "conflict", f"{exc}: read the room again")
        return await _finish(request, node, store, record, str(key))

    async def _decide_and_write(node: Node, store: ModerationStore, act: rules.Action,
                                room: str, claims: Claims, actor_role: str | None,
                                room_doc: dict[str, Any], mod_id: str) -> dict[str, Any]:
        """Check *act* (unless an earlier attempt of this request wrote its state
        already), write its state, and record it; returns the audit record."""
        rooms, now = node.rooms, datetime.now(UTC)
        target = None if act.user is None else await rooms.membership(room, act.user)
        ban = None if act.user is None else await store.banned(room, act.user)
        previous_owner = await rooms.owner(room) if act.action == rules.TRANSFER else None
        started = (any(doc is not None and doc.get("mod_id") == mod_id
                       for doc in (target, ban, room_doc))
                   or await rooms.carries(room, mod_id))
        if not started:
            muted = target is not None and target.get("muted_until") is not None and \
                target["muted_until"].replace(tzinfo=UTC) > now
            rules.check(act, rules.State(
                actor_role, claims.is_admin, None if target is None else target["role"],
                ban is not None, muted, bool(room_doc.get("locked"))))
        until = None
        if act.action == rules.MUTE:
            until = (target["muted_until"].replace(tzinfo=UTC)
                     if started and target is not None and target.get("muted_until")
                     else now + timedelta(seconds=act.seconds or 0))
        await _apply(node, store, act, room, claims.user, mod_id, until, previous_owner)
        doc: dict[str, Any] = {"_id": mod_id, "room": room, "action": act.action,
                               "user": act.user, "by": claims.user, "reason": act.reason,
                               "seconds": act.seconds, "at": now}
        if until is not None:
            doc["until"] = until
        if act.action == rules.TRANSFER and previous_owner not in (None, act.user):
            doc["from"] = previous_owner
        return await store.record(doc)

    async def _finish(request: Request, node: Node, store: ModerationStore,
                      record: dict[str, Any], key: str) -> HTTPResponse:
        """Tell the gateways, sequence the room event, answer (a completed record is
        answered as it is: nothing is published again)."""
        if record.get("seq") is not None:
            return _answer(record)
        try:
            await publish_member_events(node, record, await node.rooms.room(record["room"]))
        except PUBLISH_FAILED:
            return problem(503, "unavailable", "the action is taken, but the gateways "
                           "could not be told yet: retry the same request")
        backend_events.moderation(node, record)  # member.banned/muted/removed (docs/events.md)
        try:
            seq = await sequence(node, record, key, request.app.ctx.settings.client_buffer)
        except NotSequenced as exc:
            status = STATUS.get(exc.code, 409)
            return problem(status, exc.code, f"the action is taken, but its room event is "
                           f"not stored yet ({exc.message}): retry the same request")
        await store.sequenced(record["_id"], seq)
        return _answer({**record, "seq": seq})

    @bp.get("/<room>/moderation/audit")
    async def audit(request: Request, room: str) -> HTTPResponse:
        if (refused := await refuse_moderation(request, room)) is not None:
            return refused
        raw_limit = request.args.get("limit", str(DEFAULT_AUDIT))
        if (not (raw_limit.isascii() and raw_limit.isdigit()) or len(raw_limit) > 4
                or not 1 <= int(raw_limit) <= MAX_AUDIT):
            return problem(400, "bad_request", f"limit must be an integer from 1 to "
                           f"{MAX_AUDIT}", field="limit")
        store, before, cursor = store_of(request), request.args.get("before"), None
        if before is not None:
            cursor = await store.get(before) if is_audit_id(before) else None
            if cursor is None or cursor["room"] != room:
                return problem(400, "bad_request", "before must be the id of an audit "
                               "record of the room", field="before")
        found = await store.history(room, cursor, int(raw_limit))
        return response.json({"room": room, "records": [_record_view(d) for d in found],
                              "next": found[-1]["_id"] if found else None})

    @bp.get("/<room>/bans")
    async def bans(request: Request, room: str) -> HTTPResponse:
        if (refused := await refuse_moderation(request, room)) is not None:
            return refused
        found = await store_of(request).bans_of(room)
        return response.json({"room": room, "bans": [
            {"user": d["user"], "by": d["by"], "reason": d.get("reason", ""),
             "at": ms(d["at"].replace(tzinfo=UTC))} for d in found]})

    @bp.get("/<room>")
    async def room_info(request: Request, room: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        node = node_of(request)
        if not ids.is_room_id(room):
            return problem(400, "bad_room", "room must match [A-Za-z0-9_-]{1,64}")
        membership = await node.rooms.membership(room, claims.user)
        doc = await node.rooms.room(room)
        if doc is None or (membership is None and not claims.is_admin):
            return problem(404, "not_found", f"no room {room}")
        muted = None if membership is None else membership.get("muted_until")
        muted_ms = None if muted is None else ms(muted.replace(tzinfo=UTC))
        return response.json({
            "id": room, "name": doc.get("name", ""), "owner": await node.rooms.owner(room),
            "role": None if membership is None else membership["role"],
            "slow_mode_s": int(doc.get("slow_mode_s", 0)), "locked": bool(doc.get("locked")),
            "muted_until": muted_ms if muted_ms is not None and muted_ms > ms(
                datetime.now(UTC)) else None})

    return bp
