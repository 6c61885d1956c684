"""Invitations (``BURROW_INVITES``) and the checks of an add, JWT-authenticated
(docs/moderation.md, "Users protect themselves").

- ``GET /v1/me/invitations``: ``{"invitations": [{id, room, name, by, at, expires_at}]}``,
  the caller's pending ones, newest first: who invited them to which room.
- ``POST /v1/me/invitations/{id}/accept``: become a member (200 ``{"room", "user",
  "added"}``; accepting again answers the same with ``added: false`` and adds nobody,
  so an accept replayed after a removal does not bring the member back).
- ``POST /v1/me/invitations/{id}/decline``: 204, the invitation is gone.

An id that is not the caller's (someone else's, expired, declined, never made) is 404
alike; accepting while banned from the room is 403 ``banned`` (the invitation stays). :func:`admission` is what the rooms API asks before an add (``PUT
.../members/{user}``, ``POST /v1/rooms`` with members): refused if one of the users
blocks the adder, else who becomes a member and who gets an invitation (:func:`invite`,
once the room exists).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import admission as rules
from burrow.core import events
from burrow.storage import database
from burrow.storage.blocks import BlockStore
from burrow.storage.invites import ACCEPTED, InviteStore, is_invite_id
from gateway import backend_events, moderation_api
from gateway.auth import Claims
from gateway.http_json import problem, without_body
from gateway.node import Node
from gateway.ws import authenticate


def store_of(request: Request) -> InviteStore:
    node: Node = request.app.ctx.node
    return InviteStore(database.database(node.runtime.db))


@dataclass
class Admission:
    """What an add does: ``refused`` (the answer), or ``invite``: those of the users who
    get an invitation (:func:`invite`) rather than a membership."""

    refused: HTTPResponse | None = None
    invite: set[str] = field(default_factory=set)


def refusal(user: str) -> HTTPResponse:
    """The answer to adding (or inviting) a user who blocks the adder. It says no more
    than that this adder may not add this user: not "blocked", and the same whether the
    add would have made a member or an invitation (docs/moderation.md)."""
    return problem(403, "forbidden", f"you may not add {user} to rooms")


async def admission(request: Request, users: Collection[str]) -> Admission:
    """Check an add of *users* by the caller (already allowed to add to the room):
    refused if one of them blocks the caller, else who gets an invitation, as
    ``BURROW_INVITES`` says. Writes nothing."""
    claims: Claims = request.ctx.claims
    node: Node = request.app.ctx.node
    db = database.database(node.runtime.db)
    others = sorted(set(users) - {claims.user})
    if not others:
        return Admission()
    blockers = await BlockStore(db).blocks_any(others, by=claims.user)
    if blockers:
        return Admission(refused=refusal(blockers[0]))
    mode = node.settings.invites
    strangers: Collection[str] = ()
    if rules.asks_strangers(mode, claims.is_admin):
        strangers = await InviteStore(db).strangers(claims.user, others)
    return Admission(invite=rules.invited(mode, adder=claims.user, users=others,
                                          is_admin=claims.is_admin, strangers=strangers))


async def invite(request: Request, room: str, users: Collection[str]) -> dict[str, str]:
    """Invite *users* to *room* (which exists) from the caller: user -> invitation id."""
    claims: Claims = request.ctx.claims
    store = store_of(request)
    return {user: await store.invite(room, user, claims.user) for user in sorted(users)}


def blueprint() -> Blueprint:
    bp = Blueprint("invitations", url_prefix="/v1/me/invitations")
    bp.on_request(authenticate)

    def not_found(invitation: str) -> HTTPResponse:
        return problem(404, "not_found", f"you have no invitation {invitation}")

    @bp.get("/")
    async def my_invitations(request: Request) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        return response.json({"invitations": await store_of(request).pending(claims.user)})

    @bp.post("/<invitation>/accept", stream=True)
    @without_body()
    async def accept(request: Request, invitation: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        node: Node = request.app.ctx.node
        if not is_invite_id(invitation):
            return problem(400, "bad_request", "an invitation id is 32 lowercase hex digits")
        store = store_of(request)
        doc = await store.get(invitation, claims.user)
        if doc is None:
            return not_found(invitation)
        room = str(doc["room"])
        if doc.get("state") == ACCEPTED:
            return response.json({"room": room, "user": claims.user, "added": False})
        if not await node.rooms.exists(room):
            return not_found(invitation)
        if (banned := await moderation_api.refuse_banned(node, room, claims.user)):
            return banned  # banned since the invitation: it waits for an unban
        # Added before it is marked accepted: a crash in between leaves it pending, and
        # the retry adds (a no-op) and marks it.
        added = await node.rooms.add(room, claims.user)
        if added:  # for backend services (docs/events.md), keyed by the invitation
            backend_events.member(node, events.MEMBER_ADDED, room, claims.user,
                                  str(doc.get("by") or claims.user), key=invitation)
        await store.mark_accepted(invitation)
        return response.json({"room": room, "user": claims.user, "added": added})

    @bp.post("/<invitation>/decline", stream=True)
    @without_body()
    async def decline(request: Request, invitation: str) -> HTTPResponse:
        claims: Claims = request.ctx.claims
        if not is_invite_id(invitation):
            return problem(400, "bad_request", "an invitation id is 32 lowercase hex digits")
        if not await store_of(request).decline(invitation, claims.user):
            return not_found(invitation)
        return response.empty(status=204)

    return bp
