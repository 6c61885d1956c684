"""Who may moderate a room, asked by every moderator-only route (reports, moderation,
filters): one place, so that a new role or rule reaches all of them at once."""

from __future__ import annotations

from sanic import Request
from sanic.response import HTTPResponse

from burrow.core import ids
from burrow.core import moderation as rules
from gateway.auth import Claims
from gateway.http_json import problem
from gateway.node import Node


async def refuse_moderation(request: Request, room: str) -> HTTPResponse | None:
    """None if the caller may moderate *room* (its owner, its moderators, an admin:
    burrow.core.moderation.may_moderate); else 400 for a malformed id, 404 for a room
    that does not exist or that the caller cannot see (its existence is not disclosed),
    403 for a member who may not moderate it."""
    claims: Claims = request.ctx.claims
    node: Node = request.app.ctx.node
    if not ids.is_room_id(room):
        return problem(400, "bad_room", "room must match [A-Za-z0-9_-]{1,64}")
    role = await node.rooms.role(room, claims.user)
    if rules.may_moderate(role, claims.is_admin) and await node.rooms.exists(room):
        return None
    if role is None:
        return problem(404, "not_found", f"no room {room}")
    return problem(403, "forbidden", "only those who may moderate the room may do that")
