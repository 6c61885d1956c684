"""The caller's blocks (``/v1/me/blocks``), JWT-authenticated (docs/devices-and-settings.md,
blocks; docs/moderation.md, "Users protect themselves").

- ``GET /v1/me/blocks``: ``{"blocks": [{"user", "at"}]}``, by user id (at most 1,000).
- ``PUT /v1/me/blocks/{user}``: block *user* (200 ``{"user", "blocked": true}``, the
  same for a repeat); 400 for an invalid id or oneself, 409 ``too_many_blocks`` beyond
  :data:`burrow.core.blocks.MAX_BLOCKS`.
- ``DELETE /v1/me/blocks/{user}``: 204; 404 if the caller did not block them.

Any valid user id may be blocked, known to this server or not: whether a user exists is
not this API's to tell. What a block does (no pushes, no digest lines, no adding the
blocker to rooms) is enforced by the notifier, the digester and the rooms API; hiding
the blocked user's messages in a live stream is the client's, from this list.
"""

from __future__ import annotations

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import ids
from burrow.core.blocks import MAX_BLOCKS
from burrow.storage import database
from burrow.storage.blocks import BlockStore, TooManyBlocks
from gateway.auth import Claims
from gateway.http_json import path_id, problem, without_body
from gateway.node import Node
from gateway.ws import authenticate


def store_of(request: Request) -> BlockStore:
    node: Node = request.app.ctx.node
    return BlockStore(database.database(node.runtime.db))



def _refuse(claims: Claims, user: str) -> HTTPResponse | None:
    if not ids.is_user_id(user):
        return problem(400, "bad_user", "user must be a printable string of 1..128 characters")
    if user == claims.user:
        return problem(400, "bad_user", "you cannot block yourself")
    return None


def blueprint() -> Blueprint:
    bp = Blueprint("blocks", url_prefix="/v1/me/blocks")
    bp.on_request(authenticate)

    @bp.get("/")
    async def my_blocks(request: Request) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        return response.json({"blocks": await store_of(request).listed(claims.user)})

    @bp.put("/<user>", stream=True)
    @without_body()
    async def block(request: Request, user: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        user = path_id(user)
        if (refused := _refuse(claims, user)) is not None:
            return refused
        try:
            await store_of(request).block(claims.user, user)
        except TooManyBlocks:
            return problem(409, "too_many_blocks", f"you block {MAX_BLOCKS} users already: "
                           "unblock one first")
        return response.json({"user": user, "blocked": True})

    @bp.delete("/<user>", stream=True)
    @without_body()
    async def unblock(request: Request, user: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        user = path_id(user)
        if (refused := _refuse(claims, user)) is not None:
            return refused
        if not await store_of(request).unblock(claims.user, user):
            return problem(404, "not_found", f"you do not block {user}")
        return response.empty(status=204)

    return bp
