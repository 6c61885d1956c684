"""A room's own pre-publish filter (docs/moderation.md, "Pre-publish hook"):

- ``GET /v1/rooms/{room}/filter``: the filter, 404 ``not_found`` when the room has none;
- ``PUT /v1/rooms/{room}/filter`` ``{"entries": [...], "action"?, "hook"?}``: set it
  (replacing any); each entry a word, a phrase or ``re:`` and a bounded pattern
  (:mod:`burrow.core.prepublish`), checked here, so a bad one is a 400 naming it and
  never reaches the sequencer; ``hook: true`` asks the moderation service for this room,
  possible only where the deployment runs one (``BURROW_MODERATION_HOOK=rooms`` or
  ``on``, else 409 ``hook_off``);
- ``DELETE /v1/rooms/{room}/filter``: remove it (204; 404 when there was none).

For those who may moderate the room (gateway/room_access.py); a member who may not gets
403, anyone else 404. The sequencers read the filters every ``BURROW_FILTER_REFRESH``
seconds, so a change applies within that time, not at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core.prepublish import ACTIONS, MAX_PATTERN_CHARS, Blocklist, FilterError
from burrow.storage import database
from burrow.storage.room_filters import MAX_ROOM_ENTRIES, RoomFilterStore
from gateway.auth import Claims
from gateway.http_json import Invalid, json_object, problem, without_body
from gateway.node import Node
from gateway.room_access import refuse_moderation
from gateway.ws import authenticate

# Every entry at its longest, each character JSON-escaped (6 bytes), and the rest.
BODY_BYTES = MAX_ROOM_ENTRIES * (6 * (MAX_PATTERN_CHARS + 3) + 4) + 256


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    at: datetime = doc["at"]
    return {"room": doc["_id"], "entries": doc["entries"], "action": doc["action"],
            "hook": doc["hook"], "by": doc["by"], "at": int(at.timestamp() * 1000)}


def blueprint() -> Blueprint:
    bp = Blueprint("room_filter", url_prefix="/v1/rooms")
    bp.on_request(authenticate)

    def store_of(request: Request) -> RoomFilterStore:
        node: Node = request.app.ctx.node
        return RoomFilterStore(database.database(node.runtime.db))

    @bp.get("/<room>/filter")
    async def get_filter(request: Request, room: str) -> HTTPResponse:
        if (refused := await refuse_moderation(request, room)) is not None:
            return refused
        doc = await store_of(request).get(room)
        if doc is None:
            return problem(404, "not_found", f"room {room} has no filter")
        return response.json(_public(doc))

    @bp.put("/<room>/filter", stream=True)
    async def put_filter(request: Request, room: str) -> HTTPResponse:
        if (refused := await refuse_moderation(request, room)) is not None:
            return refused
        try:
            data = await json_object(request, ("entries", "action", "hook"), BODY_BYTES)
        except Invalid as exc:
            return exc.response()
        entries, action, hook = (data.get("entries"), data.get("action", "reject"),
                                 data.get("hook", False))
        if not isinstance(entries, list) or len(entries) > MAX_ROOM_ENTRIES:
            return problem(400, "bad_request", f"entries must be a list of at most "
                           f"{MAX_ROOM_ENTRIES} words, phrases or re: patterns",
                           field="entries")
        try:
            Blocklist.from_entries(entries)
        except FilterError as exc:
            return problem(400, "bad_filter", str(exc), field="entries")
        if action not in ACTIONS:
            return problem(400, "bad_request", f"action must be one of {', '.join(ACTIONS)}",
                           field="action")
        if not isinstance(hook, bool):
            return problem(400, "bad_request", "hook must be true or false", field="hook")
        if hook and request.app.ctx.settings.moderation_hook == "off":
            return problem(409, "hook_off", "this deployment asks no moderation service "
                           "(BURROW_MODERATION_HOOK=off)")
        if not entries and not hook:
            return problem(400, "bad_request", "a filter has entries or the hook: to remove "
                           "it, DELETE it", field="entries")
        claims: Claims = request.ctx.claims
        doc = await store_of(request).put(room, entries, str(action), hook, claims.user)
        return response.json(_public(doc))

    @bp.delete("/<room>/filter", stream=True)
    @without_body()
    async def delete_filter(request: Request, room: str) -> HTTPResponse:
        if (refused := await refuse_moderation(request, room)) is not None:
            return refused
        if not await store_of(request).delete(room):
            return problem(404, "not_found", f"room {room} has no filter")
        return response.empty()

    return bp
