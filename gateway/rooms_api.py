"""The HTTP API of rooms, members and history (``/v1/rooms...``), JWT-authenticated.

Errors are JSON ``{"error": {"code", "message"}}`` with a 4xx status. Who may do what:
anyone authenticated creates a room (and owns it); owners and admins (``roles: [admin]``
in the token) add and remove members; a member may remove themself (leave); only members
(and admins) list members, see their presence and read history (G6). An add is refused
when the user blocks the adder, and may be an invitation instead (``BURROW_INVITES``):
:mod:`gateway.invites_api`.
"""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import events, ids
from burrow.core.envelopes import Stored, v1_frame
from burrow.storage.rooms import OWNER
from gateway import backend_events, invites_api, moderation_api
from gateway.auth import Claims
from gateway.http_json import (
    LARGEST_BODY,
    Invalid,
    json_object,
    path_id,
    problem,
    without_body,
)
from gateway.limiting import Limits
from gateway.link import PUBLISH_FAILED
from gateway.node import Node
from gateway.ws import authenticate

MAX_HISTORY = 500
DEFAULT_HISTORY = 50
MAX_INITIAL_MEMBERS = 1000
# A room with its 1,000 first members of 128-character ids, quoted: ~132 kB.
CREATE_BYTES = LARGEST_BODY



def _history_v1(m: Stored) -> dict[str, Any]:
    entry = {"room": m.room, "seq": m.seq, "id": m.id, "sender": m.sender,
             "client_id": m.client_id, "ts": m.ts, "body": m.body}
    if m.kind is None and m.edit_count == 0 and m.deleted_at is None:
        if m.attachments:
            entry["attachments"] = list(m.attachments)
        if m.reply_to is not None:
            entry.update(reply_to=m.reply_to, thread=m.thread)
        if m.reply_count:
            entry.update(reply_count=m.reply_count, last_reply=m.last_reply)
        if m.mentions is not None:
            entry["mentions"] = m.mentions.to_json()
        return entry
    entry = v1_frame(m.fields())
    del entry["type"]
    return entry


def _query_int(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def blueprint() -> Blueprint:
    bp = Blueprint("rooms", url_prefix="/v1/rooms")
    bp.on_request(authenticate)

    def node_of(request: Request) -> Node:
        node: Node = request.app.ctx.node
        return node

    def limits_of(request: Request) -> Limits:
        limits: Limits = request.app.ctx.limits
        return limits

    async def may_read(request: Request, room: str) -> HTTPResponse | None:
        claims: Claims = request.ctx.claims
        if not ids.is_room_id(room):
            return problem(400, "bad_room", "room must match [A-Za-z0-9_-]{1,64}")
        if claims.is_admin and await node_of(request).rooms.exists(room):
            return None
        if await node_of(request).rooms.role(room, claims.user) is None:
            return problem(403, "forbidden", f"not a member of room {room}")
        return None

    @bp.post("/", stream=True)  # read after the token check, through CREATE_BYTES
    async def create_room(request: Request) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        try:
            data = await json_object(request, ("id", "name", "members"), CREATE_BYTES)
        except Invalid as exc:
            return exc.response()
        room, name, members = data.get("id"), data.get("name", ""), data.get("members", [])
        if not ids.is_room_id(room):
            return problem(400, "bad_room", "id must match [A-Za-z0-9_-]{1,64}")
        if not isinstance(name, str) or len(name) > 200:
            return problem(400, "bad_request", "name must be a string of at most 200 characters")
        if (not isinstance(members, list) or len(members) > MAX_INITIAL_MEMBERS
                or not all(ids.is_user_id(m) for m in members)):
            return problem(400, "bad_request", "members must be a list of user ids "
                           f"(at most {MAX_INITIAL_MEMBERS})")
        if not claims.is_admin and (limited := await limits_of(request).members(
                claims.user, len(set(members) - {claims.user}) + 1)):
            return limited
        admitted = await invites_api.admission(request, members)  # blocks, BURROW_INVITES
        if admitted.refused is not None:
            return admitted.refused
        if not await node_of(request).rooms.create(room, name, claims.user,
                                                   set(members) - admitted.invite):
            return problem(409, "exists", f"room {room} exists already")
        backend_events.member(node_of(request), events.MEMBER_ADDED, room,  # docs/events.md
                              {claims.user, *members} - admitted.invite, claims.user)
        created: dict[str, Any] = {"id": room, "name": name, "role": OWNER}
        if admitted.invite:  # user -> invitation id
            created["invited"] = await invites_api.invite(request, room, admitted.invite)
        return response.json(created, status=201)

    @bp.get("/")
    async def my_rooms(request: Request) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        return response.json({"rooms": await node_of(request).rooms.rooms_of(claims.user)})

    @bp.get("/<room>/members")
    async def members(request: Request, room: str) -> HTTPResponse:
        if (refused := await may_read(request, room)) is not None:
            return refused
        return response.json({"room": room,
                              "members": await node_of(request).rooms.members(room)})

    @bp.get("/<room>/presence")
    async def presence(request: Request, room: str) -> HTTPResponse:
        """Who of the members is online now: the snapshot to which presence events apply."""
        if (refused := await may_read(request, room)) is not None:
            return refused
        node = node_of(request)
        users = [m["user"] for m in await node.rooms.members(room)]
        states = await node.presence.states(users, node.settings.idle_after)
        return response.json({"room": room, "members": [
            {"user": user, "online": states[user][0], "active": states[user][1]}
            for user in users]})

    async def may_manage(request: Request, room: str, user: str) -> HTTPResponse | None:
        """Whether the caller may add or remove *user* (decoded with :func:`path_id`)."""
        claims: Claims = request.ctx.claims
        if not ids.is_room_id(room):
            return problem(400, "bad_room", "room must match [A-Za-z0-9_-]{1,64}")
        if not ids.is_user_id(user):
            return problem(400, "bad_user", "user must be a printable string of 1..128 characters")
        rooms = node_of(request).rooms
        if not await rooms.exists(room):
            return problem(404, "not_found", f"no room {room}")
        leaving = request.method == "DELETE" and user == claims.user
        if not (claims.is_admin or leaving or await rooms.role(room, claims.user) == OWNER):
            return problem(403, "forbidden", "only the room's owner or an admin may do that")
        return None

    @bp.put("/<room>/members/<user>", stream=True)
    @without_body()
    async def add_member(request: Request, room: str, user: str) -> HTTPResponse:
        user = path_id(user)
        if (refused := await may_manage(request, room, user)) is not None:
            return refused
        if (banned := await moderation_api.refuse_banned(node_of(request), room, user)):
            return banned  # until an unban (docs/moderation.md)
        claims: Claims = request.ctx.claims
        if not claims.is_admin and (limited := await limits_of(request).members(claims.user, 1)):
            return limited
        admitted = await invites_api.admission(request, [user])  # blocks, BURROW_INVITES
        if admitted.refused is not None:
            return admitted.refused
        if admitted.invite and await node_of(request).rooms.role(room, user) is None:
            made = await invites_api.invite(request, room, admitted.invite)
            return response.json({"room": room, "user": user, "invitation": made[user]},
                                 status=202)
        added = await node_of(request).rooms.add(room, user)
        if added:
            backend_events.member(node_of(request), events.MEMBER_ADDED, room, user,
                                  request.ctx.claims.user)
        return response.json({"room": room, "user": user, "added": added})

    @bp.delete("/<room>/members/<user>", stream=True)
    @without_body()
    async def remove_member(request: Request, room: str, user: str) -> HTTPResponse:
        user = path_id(user)
        if (refused := await may_manage(request, room, user)) is not None:
            return refused
        node = node_of(request)
        if (await node.rooms.role(room, user) == OWNER
                and await node.rooms.has_others(room, user)):
            # A room is never left without an owner: nobody could manage it any more.
            return problem(409, "owner_stays", f"{user} owns {room}: the owner cannot leave "
                           "or be removed while the room has other members")
        removed = await node.rooms.remove(room, user)
        # Every gateway drops the user's live streams of the room now, not at reconnect.
        # Announced whether or not this call removed it: the retry of a removal whose
        # announcement failed must still reach every gateway.
        try:
            await node.publish_member_event(room, user, "removed")
        except PUBLISH_FAILED:
            return problem(503, "unavailable", f"{user} is removed from {room}, but the "
                           "gateways could not be told yet: retry the same request")
        if not removed:
            return problem(404, "not_found", f"{user} is not a member of {room}")
        backend_events.member(node, events.MEMBER_REMOVED, room, user,
                              request.ctx.claims.user)
        return response.empty(status=204)

    @bp.get("/<room>/messages")
    async def history(request: Request, room: str) -> HTTPResponse:
        if (refused := await may_read(request, room)) is not None:
            return refused
        try:
            after = _query_int(request, "after", 0, 2**62)
            before = _query_int(request, "before", 1, 2**62)
            limit = _query_int(request, "limit", 1, MAX_HISTORY) or DEFAULT_HISTORY
        except ValueError as exc:
            return problem(400, "bad_request", str(exc))
        version = request.args.get("v", "1")
        if version not in ("1", "2"):
            return problem(400, "bad_request", "v must be 1 or 2")
        thread = request.args.get("thread")
        if thread is not None and not ids.is_client_id(thread):
            return problem(400, "bad_request", "thread must be a message id")
        if thread is not None and before is not None:
            return problem(400, "bad_request", "a thread is read forward: after, not before")
        node = node_of(request)
        found = (await node.messages.history(room, after, before, limit) if thread is None
                 else await node.messages.thread(room, thread, after, limit))
        if version == "1":  # every seq; a change event in its v1 (message) shape
            return response.json({"room": room, "messages": [
                _history_v1(m) for m in found]})
        claims: Claims = request.ctx.claims
        reactions = await node.changes.reactions_of(
            [m.id for m in found if m.kind is None and m.deleted_at is None], claims.user)
        entries = []
        for m in found:
            entry = m.fields()
            if m.kind is None:
                entry["reactions"] = reactions.get(m.id, [])
            entries.append(entry)
        return response.json({"room": room, "messages": entries})

    @bp.get("/<room>/messages/<message>/edits")
    async def edits(request: Request, room: str, message: str) -> HTTPResponse:
        """The versions of a message, oldest first (none once it is deleted)."""
        if (refused := await may_read(request, room)) is not None:
            return refused
        if not ids.is_client_id(message):
            return problem(400, "bad_request", "a message id is 1..64 printable characters")
        versions = await node_of(request).changes.versions(room, message)
        if versions is None:
            return problem(404, "not_found", f"no message {message} in room {room}")
        return response.json({"room": room, "id": message, "versions": versions})

    return bp
