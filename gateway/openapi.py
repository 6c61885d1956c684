"""``GET /v1/openapi.json``: the gateway's HTTP API as an OpenAPI 3.1 description.

Written by hand next to the routes, and held to them by a test
(``tests/unit/test_openapi.py``: every route is described with its methods, and nothing
else is); the HTTP fuzzer (``tests/integration/test_http_fuzz.py``) generates its
requests from it. docs/protocol.md is the prose; this is what tools read. The WebSocket
(``GET /v1/ws``) is described as its handshake only: the frames are in docs/protocol.md.
"""

from __future__ import annotations

from typing import Any, Final

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core.envelopes import MAX_ATTACHMENTS
from burrow.core.mentions import MAX_MENTIONS

ROOM: Final = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
USER: Final = {"type": "string", "minLength": 1, "maxLength": 128}
TICKET: Final = {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"}
MENTIONS: Final = {"type": "object", "additionalProperties": False, "properties": {
    "users": {"type": "array", "maxItems": MAX_MENTIONS, "uniqueItems": True, "items": USER},
    "room": {"type": "boolean"}}}
ERROR: Final = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "field": {"type": "string"}, "retry_after_ms": {"type": "integer"}}}}}


def _answer(description: str, schema: dict[str, Any] | None = None,
            kind: str = "application/json") -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {kind: {"schema": schema}}
    return answer


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "malformed request", 401: "no valid token", 403: "not allowed",
            404: "not found", 409: "conflict", 413: "body too large",
            415: "type not allowed, or the bytes are not of the type named",
            429: "rate limited (Retry-After)", 503: "broker or database unreachable: retry"}
    return {str(s): _answer(text[s], ERROR) for s in statuses}


def _json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": properties, "required": required,
        "additionalProperties": False}}}}


def _query(name: str, schema: dict[str, Any], required: bool = False,
           description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


AUTH: Final[list[dict[str, list[str]]]] = [{"bearer": []}]
ROOM_PATH: Final = _path("room", ROOM)
OK_EMPTY: Final = {"204": _answer("done")}
ANY_JSON: Final = {"type": "object"}
MESSAGE_PATH: Final = _path("message", {"type": "string", "minLength": 1, "maxLength": 64})
IDEMPOTENCY_KEY: Final = {"name": "Idempotency-Key", "in": "header", "required": True,
                          "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
SETTINGS: Final = {"type": "object", "required": [
    "email", "email_verified", "push", "digest", "previews"], "properties": {
    "email": {"type": ["string", "null"]}, "email_verified": {"type": "boolean"},
    "push": {"type": "boolean"}, "digest": {"enum": ["off", "hourly", "daily"]},
    "previews": {"type": "boolean"}, "snooze_until": {"type": ["integer", "null"]},
    "quiet_hours": {"type": ["object", "null"]}}}
SNOOZE: Final = {"type": ["integer", "null"], "description": "ms since the epoch, in the "
                 "future and at most 366 days ahead; null: none"}
QUIET_HOURS: Final = {"type": ["object", "null"], "additionalProperties": False,
                      "required": ["start", "end", "tz"], "properties": {
                          "start": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
                          "end": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
                          "tz": {"type": "string", "maxLength": 64,
                                 "description": "an IANA time zone"}}}
ROOM_RULE: Final = {"type": "object", "required": ["room", "level", "snooze_until"],
                    "properties": {"room": ROOM, "level": {"enum": ["all", "mentions", "nothing"]},
                                   "snooze_until": {"type": ["integer", "null"]}}}
FILE_ID: Final = {"type": "string", "pattern": "^[0-9a-f]{24}$"}
ATTACHMENT: Final = {"type": "object", "properties": {
    "id": FILE_ID, "name": {"type": "string"}, "type": {"type": "string"},
    "size": {"type": "integer"}, "width": {"type": ["integer", "null"]},
    "height": {"type": ["integer", "null"]}}}
LINK_PAGES: Final = {
    "200": _answer("page, or confirmed", {"type": "string"}, "text/html"),
    "400": _answer("not a valid link", {"type": "string"}, "text/html"),
    "410": _answer("expired, or for an address no longer set", {"type": "string"},
                   "text/html"),
    "503": _answer("not configured", {"type": "string"}, "text/html")}


CHANGE_ERRORS: Final = _errors(400, 401, 403, 404, 409, 413, 429, 503)
INVITATION_ID: Final = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
REPORT_ID: Final = {"type": "string", "pattern": "^[0-9a-f]{21}$"}
REPORT: Final = {"type": "object", "required": [
    "id", "room", "message", "reason", "state", "created_at"], "properties": {
    "id": REPORT_ID, "room": ROOM, "message": {"type": "string"},
    "reason": {"enum": ["spam", "abuse", "harassment", "other"]},
    "state": {"enum": ["open", "resolved"]}, "created_at": {"type": "integer"}}}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict: callers may change theirs)."""
    member_ops = {
        "put": {"summary": "Add a member (owner or admin; 403 if they block the adder)",
                "security": AUTH,
                "responses": {"200": _answer("added (or was a member)", ANY_JSON),
                              "202": _answer("invited instead (BURROW_INVITES): "
                                             "{room, user, invitation}", ANY_JSON),
                              **_errors(400, 401, 403, 404, 429)}},
        "delete": {"summary": "Remove a member (owner, admin, or the member leaving)",
                   "security": AUTH,
                   "responses": {**OK_EMPTY, **_errors(400, 401, 403, 404, 409, 503)}},
        "parameters": [ROOM_PATH, _path("user", USER)],
    }
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "responses": {
            "200": _answer("the process answers", ANY_JSON)}}},
        "/readyz": {"get": {"summary": "Readiness (broker and database)", "responses": {
            "200": _answer("ready", ANY_JSON), "503": _answer("not ready", ANY_JSON)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (BURROW_METRICS_FROM only)",
                             "responses": {"200": _answer("metrics", {"type": "string"},
                                                          "text/plain"),
                                           "403": _answer("not an operator network",
                                                          ERROR)}}},
        "/v1/openapi.json": {"get": {"summary": "This description", "responses": {
            "200": _answer("OpenAPI 3.1", ANY_JSON)}}},
        "/v1/ws": {"get": {
            "summary": "WebSocket (frames: docs/protocol.md)", "security": AUTH,
            "parameters": [_query("ticket", TICKET, description="a one-time ticket "
                                  "(POST /v1/ws-ticket), for browsers"),
                           _query("access_token", {"type": "string"},
                                  description="the token, for browsers (prefer a ticket)")],
            "responses": {"101": _answer("upgraded"), **_errors(401, 429, 503)}}},
        "/v1/ws-ticket": {"post": {
            "summary": "A one-time ticket for /v1/ws or /v1/sse (header token only)",
            "security": AUTH,
            "responses": {"200": _answer("the ticket and its seconds (no-store)", {
                "type": "object", "required": ["ticket", "expires_in"],
                "properties": {"ticket": TICKET,
                               "expires_in": {"type": "integer", "minimum": 1}}}),
                          **_errors(401, 429, 503)}}},
        "/v1/sse": {"get": {
            "summary": "Server-sent events of some rooms", "security": AUTH,
            "parameters": [_query("rooms", {"type": "string"}, True, "room ids, commas"),
                           _query("since", {"type": "string"}, description="room:seq,..."),
                           _query("ticket", TICKET),
                           _query("access_token", {"type": "string"})],
            "responses": {"200": _answer("the stream", {"type": "string"},
                                         "text/event-stream"),
                          **_errors(400, 401, 403, 429, 503)}}},
        "/v1/poll": {"get": {
            "summary": "Long-poll some rooms", "security": AUTH,
            "parameters": [_query("rooms", {"type": "string"}, True),
                           _query("cursor", {"type": "string"}),
                           _query("timeout", {"type": "integer", "minimum": 0,
                                              "maximum": 60})],
            "responses": {"200": _answer("events and the next cursor", ANY_JSON),
                          **_errors(400, 401, 403, 429, 503)}}},
        "/v1/rooms": {
            "get": {"summary": "My rooms", "security": AUTH,
                    "responses": {"200": _answer("rooms", ANY_JSON), **_errors(401, 429)}},
            "post": {"summary": "Create a room", "security": AUTH,
                     "requestBody": _json_body({"id": ROOM, "name": {
                         "type": "string", "maxLength": 200}, "members": {
                         "type": "array", "items": USER, "maxItems": 1000}}, ["id"]),
                     "responses": {"201": _answer("created (invited: user -> invitation "
                                                  "id, with BURROW_INVITES)", ANY_JSON),
                                   **_errors(400, 401, 403, 409, 413, 429)}}},
        "/v1/rooms/{room}/messages": {
            "parameters": [ROOM_PATH],
            "get": {"summary": "History", "security": AUTH, "parameters": [
                _query("after", {"type": "integer", "minimum": 0}),
                _query("before", {"type": "integer", "minimum": 1}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                _query("v", {"enum": ["1", "2"]}),
                _query("thread", {"type": "string", "minLength": 1, "maxLength": 64})],
                "responses": {"200": _answer("messages", ANY_JSON),
                              **_errors(400, 401, 403, 429, 503)}},
            "post": {"summary": "Send a message (Idempotency-Key)", "security": AUTH,
                     "parameters": [{"name": "Idempotency-Key", "in": "header",
                                     "required": True, "schema": {
                                         "type": "string", "minLength": 1, "maxLength": 64}}],
                     "requestBody": _json_body({"body": {"type": "string"}, "attachments": {
                         "type": "array", "maxItems": MAX_ATTACHMENTS, "uniqueItems": True,
                         "items": {"type": "string", "pattern": "^[0-9a-f]{24}$"}},
                         "reply_to": {"type": "string", "minLength": 1, "maxLength": 64},
                         "mentions": MENTIONS},
                         ["body"]),
                     "responses": {"201": _answer("stored, with its seq", ANY_JSON),
                                   **_errors(400, 401, 403, 404, 409, 413, 429, 503)}}},
        "/v1/rooms/{room}/messages/{message}": {
            "parameters": [ROOM_PATH, MESSAGE_PATH],
            "delete": {"summary": "Delete a message (Idempotency-Key)", "security": AUTH,
                       "parameters": [IDEMPOTENCY_KEY],
                       "responses": {"201": _answer("stored, with its seq", ANY_JSON),
                                     **CHANGE_ERRORS}}},
        "/v1/rooms/{room}/messages/{message}/delete": {
            "parameters": [ROOM_PATH, MESSAGE_PATH],
            "post": {"summary": "Delete a message (Idempotency-Key)", "security": AUTH,
                     "parameters": [IDEMPOTENCY_KEY],
                     "responses": {"201": _answer("stored, with its seq", ANY_JSON),
                                   **CHANGE_ERRORS}}},
        "/v1/rooms/{room}/messages/{message}/edit": {
            "parameters": [ROOM_PATH, MESSAGE_PATH],
            "post": {"summary": "Edit a message (Idempotency-Key)", "security": AUTH,
                     "parameters": [IDEMPOTENCY_KEY],
                     "requestBody": _json_body({"body": {"type": "string"}}, ["body"]),
                     "responses": {"201": _answer("stored, with its seq", ANY_JSON),
                                   **CHANGE_ERRORS}}},
        "/v1/rooms/{room}/messages/{message}/reactions": {
            "parameters": [ROOM_PATH, MESSAGE_PATH],
            "post": {"summary": "React, or take a reaction back (Idempotency-Key)",
                     "security": AUTH, "parameters": [IDEMPOTENCY_KEY],
                     "requestBody": _json_body({"emoji": {"type": "string"},
                                                "remove": {"type": "boolean"}}, ["emoji"]),
                     "responses": {"201": _answer("stored, with its seq", ANY_JSON),
                                   **CHANGE_ERRORS}}},
        "/v1/rooms/{room}/messages/{message}/edits": {
            "parameters": [ROOM_PATH, MESSAGE_PATH],
            "get": {"summary": "A message's versions, oldest first", "security": AUTH,
                    "responses": {"200": _answer("versions", ANY_JSON),
                                  **_errors(400, 401, 403, 404, 429)}}},
        "/v1/rooms/{room}/messages/{message}/report": {
            "parameters": [ROOM_PATH, MESSAGE_PATH],
            "post": {"summary": "Report a message (members; docs/moderation.md)",
                     "security": AUTH,
                     "requestBody": _json_body({
                         "reason": {"enum": ["spam", "abuse", "harassment", "other"]},
                         "note": {"type": "string", "maxLength": 1000}}, ["reason"]),
                     "responses": {"201": _answer("reported", REPORT),
                                   "200": _answer("reported before: the same report", REPORT),
                                   **_errors(400, 401, 403, 404, 413, 429, 503)}}},
        "/v1/rooms/{room}/filter": {
            "parameters": [ROOM_PATH],
            "get": {"summary": "The room's pre-publish filter (moderators; "
                               "docs/moderation.md)", "security": AUTH,
                    "responses": {"200": _answer("the filter", ANY_JSON),
                                  **_errors(400, 401, 403, 404, 429)}},
            "put": {"summary": "Set the room's pre-publish filter (moderators)",
                    "security": AUTH,
                    "requestBody": _json_body({
                        "entries": {"type": "array", "maxItems": 500,
                                    "items": {"type": "string"}},
                        "action": {"enum": ["reject", "replace"]},
                        "hook": {"type": "boolean"}}, ["entries"]),
                    "responses": {"200": _answer("the filter as stored", ANY_JSON),
                                  **_errors(400, 401, 403, 404, 409, 413, 429)}},
            "delete": {"summary": "Remove the room's pre-publish filter (moderators)",
                       "security": AUTH,
                       "responses": {**OK_EMPTY, **_errors(400, 401, 403, 404, 429)}}},
        "/v1/rooms/{room}": {"parameters": [ROOM_PATH], "get": {
            "summary": "The room as I see it: name, owner, my role, slow mode, lock, my mute "
                       "(members and admins; docs/moderation.md)", "security": AUTH,
            "responses": {"200": _answer("the room", ANY_JSON),
                          **_errors(400, 401, 404, 429)}}},
        "/v1/rooms/{room}/moderation": {"parameters": [ROOM_PATH], "post": {
            "summary": "Take a moderation action (owner, moderators, admins; "
                       "docs/moderation.md): answered once it is a room event",
            "security": AUTH, "parameters": [IDEMPOTENCY_KEY],
            "requestBody": _json_body({
                "action": {"enum": ["promote", "demote", "remove", "mute", "unmute", "ban",
                                    "unban", "slow_mode", "lock", "unlock", "transfer"]},
                "user": USER,
                "seconds": {"type": "integer", "minimum": 0, "maximum": 30 * 86400,
                            "description": "mute: 1..2592000; slow_mode: 0 (off)..3600"},
                "reason": {"type": "string", "maxLength": 500}}, ["action"]),
            "responses": {"200": _answer("taken: {action, user, seq, audit, room, reason, "
                                         "seconds?, until?}", ANY_JSON),
                          **_errors(400, 401, 403, 404, 409, 413, 429, 503),
                          "504": _answer("the room event was not stored in time: retry "
                                         "with the same Idempotency-Key", ERROR)}}},
        "/v1/rooms/{room}/moderation/audit": {"parameters": [ROOM_PATH], "get": {
            "summary": "The room's moderation audit, newest first (owner, moderators, "
                       "admins)", "security": AUTH,
            "parameters": [_query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                           _query("before", {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                                  description="the last record id seen (next)")],
            "responses": {"200": _answer("records {id, action, user, by, reason, at, seq, "
                                         "seconds?, until?} and next", ANY_JSON),
                          **_errors(400, 401, 403, 404, 429)}}},
        "/v1/rooms/{room}/bans": {"parameters": [ROOM_PATH], "get": {
            "summary": "The room's bans (owner, moderators, admins)", "security": AUTH,
            "responses": {"200": _answer("bans {user, by, reason, at}", ANY_JSON),
                          **_errors(400, 401, 403, 404, 429)}}},
        "/v1/rooms/{room}/reports": {"parameters": [ROOM_PATH], "get": {
            "summary": "The room's reports (owner, moderators, admins), in filing order",
            "security": AUTH,
            "parameters": [_query("state", {"enum": ["open", "resolved"]},
                                  description="open (default) or resolved"),
                           _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                           _query("after", REPORT_ID, description="the last id seen")],
            "responses": {"200": _answer("reports, with snapshots", ANY_JSON),
                          **_errors(400, 401, 403, 404, 429)}}},
        "/v1/rooms/{room}/reports/{report}/resolve": {
            "parameters": [ROOM_PATH, _path("report", REPORT_ID)],
            "post": {"summary": "Resolve a report (owner, moderators, admins; idempotent)",
                     "security": AUTH,
                     "requestBody": _json_body({
                         "action": {"enum": ["dismissed", "removed", "warned"]},
                         "note": {"type": "string", "maxLength": 1000}}, ["action"]),
                     "responses": {"200": _answer("resolved (the first resolution stands)",
                                                  ANY_JSON),
                                   **_errors(400, 401, 403, 404, 413, 429)}}},
        "/v1/rooms/{room}/members": {"parameters": [ROOM_PATH], "get": {
            "summary": "Members", "security": AUTH,
            "responses": {"200": _answer("members", ANY_JSON),
                          **_errors(400, 401, 403, 429)}}},
        "/v1/rooms/{room}/members/{user}": member_ops,
        "/v1/rooms/{room}/presence": {"parameters": [ROOM_PATH], "get": {
            "summary": "Who is online", "security": AUTH,
            "responses": {"200": _answer("members' presence", ANY_JSON),
                          **_errors(400, 401, 403, 429)}}},
        "/v1/rooms/{room}/typing": {"parameters": [ROOM_PATH], "post": {
            "summary": "I am typing", "security": AUTH,
            "responses": {**OK_EMPTY, **_errors(400, 401, 403, 429, 503)}}},
        "/v1/rooms/{room}/read": {"parameters": [ROOM_PATH], "put": {
            "summary": "My read pointer", "security": AUTH,
            "requestBody": _json_body({"seq": {"type": "integer", "minimum": 0}}, ["seq"]),
            "responses": {**OK_EMPTY, **_errors(400, 401, 403, 413, 429, 503)}}},
        "/v1/rooms/{room}/attachments": {"parameters": [ROOM_PATH], "post": {
            "summary": "Upload a file (the raw bytes; Content-Type is its type)",
            "security": AUTH,
            "parameters": [_query("name", {"type": "string", "maxLength": 1000},
                                  description="the file's name")],
            "requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}},
                "text/plain": {"schema": {"type": "string"}}}},
            "responses": {"201": _answer("stored, pending until a message attaches it",
                                         ATTACHMENT),
                          **_errors(400, 401, 403, 409, 413, 415, 429, 503)}}},
        "/v1/rooms/{room}/attachments/uploads": {"parameters": [ROOM_PATH], "post": {
            "summary": "With BURROW_ATTACHMENT_STORE=s3: a presigned POST policy to upload "
                       "a file straight to the bucket", "security": AUTH,
            "requestBody": _json_body({"name": {"type": "string", "maxLength": 1000},
                                       "type": {"type": "string"},
                                       "size": {"type": "integer", "minimum": 0}},
                                      ["name", "type", "size"]),
            "responses": {"201": _answer("an uploading record and its upload policy", {
                **ATTACHMENT, "required": ["id", "upload", "expires_at"]}),
                          **_errors(400, 401, 403, 409, 413, 415, 429, 503)}}},
        "/v1/rooms/{room}/attachments/{file_id}/complete": {
            "parameters": [ROOM_PATH, _path("file_id", FILE_ID)],
            "post": {"summary": "With BURROW_ATTACHMENT_STORE=s3: check the uploaded bytes; "
                                "pending until a message attaches it", "security": AUTH,
                     "responses": {"200": _answer("completed already", ATTACHMENT),
                                   "201": _answer("checked and stored", ATTACHMENT),
                                   **_errors(400, 401, 403, 404, 409, 413, 415, 429, 503)}}},
        "/v1/rooms/{room}/attachments/{file_id}": {
            "parameters": [ROOM_PATH, _path("file_id", FILE_ID)],
            "get": {"summary": "A signed, short-lived URL of the file", "security": AUTH,
                    "responses": {"200": _answer("the file and its URL", {
                        **ATTACHMENT, "required": ["id", "url", "expires_at"]}),
                                  **_errors(400, 401, 403, 404, 429, 503)}}},
        "/v1/files/{file_id}": {
            "parameters": [_path("file_id", FILE_ID),
                           _query("exp", {"type": "integer"}, True, "expiry (Unix time)"),
                           _query("sig", {"type": "string"}, True, "the URL's signature")],
            "get": {"summary": "The bytes of a file, for a signed URL (no token)",
                    "responses": {"200": _answer("the file", {"type": "string",
                                                              "format": "binary"},
                                                 "application/octet-stream"),
                                  "307": _answer("with BURROW_ATTACHMENT_STORE=s3: to a "
                                                 "presigned GET of the bucket"),
                                  **_errors(403, 404, 429, 503)}}},
        "/v1/devices": {
            "get": {"summary": "My devices", "security": AUTH,
                    "responses": {"200": _answer("devices", ANY_JSON), **_errors(401, 429)}},
            "post": {"summary": "Register a phone", "security": AUTH,
                     "requestBody": _json_body({
                         "platform": {"enum": ["fcm", "apns"]},
                         "token": {"type": "string", "minLength": 1, "maxLength": 4096},
                         "token_kind": {"enum": ["registration_token", "fid"]},
                         "app": {"type": "string", "maxLength": 200}}, ["platform", "token"]),
                     "responses": {"200": _answer("registered", ANY_JSON),
                                   "201": _answer("registered", ANY_JSON),
                                   **_errors(400, 401, 413, 429, 503)}}},
        "/v1/devices/{device_id}": {
            "parameters": [_path("device_id", {"type": "string", "maxLength": 64})],
            "delete": {"summary": "Remove a device", "security": AUTH,
                       "responses": {**OK_EMPTY, **_errors(400, 401, 404, 429, 503)}}},
        "/v1/me/settings": {
            "get": {"summary": "My notification settings", "security": AUTH,
                    "responses": {"200": _answer("settings", SETTINGS), **_errors(401, 429)}},
            "put": {"summary": "Change them (a new email is unverified until the mailed "
                               "link is followed)", "security": AUTH,
                    "requestBody": _json_body({
                        "email": {"type": ["string", "null"], "maxLength": 254},
                        "push": {"type": "boolean"},
                        "digest": {"enum": ["off", "hourly", "daily"]},
                        "previews": {"type": "boolean"}, "snooze_until": SNOOZE,
                        "quiet_hours": QUIET_HOURS}, []),
                    "responses": {"200": _answer("the settings now", SETTINGS),
                                  **_errors(400, 401, 409, 413, 429, 503)}}},
        "/v1/me/rooms/{room}/notifications": {"parameters": [ROOM_PATH], "get": {
            "summary": "My notification rule for a room of mine", "security": AUTH,
            "responses": {"200": _answer("the rule", ROOM_RULE),
                          **_errors(400, 401, 403, 429)}},
            "put": {"summary": "Change it (level, snooze_until; partial)", "security": AUTH,
                    "requestBody": _json_body({
                        "level": {"enum": ["all", "mentions", "nothing"]},
                        "snooze_until": SNOOZE}, []),
                    "responses": {"200": _answer("the rule now", ROOM_RULE),
                                  **_errors(400, 401, 403, 413, 429)}}},
        "/v1/me/blocks": {"get": {
            "summary": "Whom I block (docs/devices-and-settings.md, blocks)", "security": AUTH,
            "responses": {"200": _answer("blocks {user, at}, by user id", ANY_JSON),
                          **_errors(401, 429)}}},
        "/v1/me/blocks/{user}": {
            "parameters": [_path("user", USER)],
            "put": {"summary": "Block a user: no pushes or digest lines of theirs, they "
                               "cannot add me to rooms (at most 1,000)", "security": AUTH,
                    "responses": {"200": _answer("blocked (or was)", ANY_JSON),
                                  **_errors(400, 401, 409, 413, 429)}},
            "delete": {"summary": "Unblock a user", "security": AUTH,
                       "responses": {**OK_EMPTY, **_errors(400, 401, 404, 413, 429)}}},
        "/v1/me/invitations": {"get": {
            "summary": "My pending invitations to rooms (BURROW_INVITES)", "security": AUTH,
            "responses": {"200": _answer("invitations {id, room, name, by, at, expires_at}",
                                         ANY_JSON), **_errors(401, 429)}}},
        "/v1/me/invitations/{invitation}/accept": {
            "parameters": [_path("invitation", INVITATION_ID)],
            "post": {"summary": "Accept: become a member (again: the same, added false)",
                     "security": AUTH,
                     "responses": {"200": _answer("{room, user, added}", ANY_JSON),
                                   **_errors(400, 401, 404, 413, 429)}}},
        "/v1/me/invitations/{invitation}/decline": {
            "parameters": [_path("invitation", INVITATION_ID)],
            "post": {"summary": "Decline: the invitation is gone", "security": AUTH,
                     "responses": {**OK_EMPTY, **_errors(400, 401, 404, 413, 429)}}},
        "/v1/settings/email/verify": {
            "parameters": [_query("token", {"type": "string"}, True,
                                  "from the verification mail")],
            "get": {"summary": "The page of an email verification link (changes nothing)",
                    "responses": LINK_PAGES},
            "post": {"summary": "Confirm the address the link was mailed to",
                     "responses": LINK_PAGES}},
        "/v1/unsubscribe": {
            "parameters": [_query("token", {"type": "string"}, True)],
            "get": {"summary": "The unsubscribe page of a digest e-mail", "responses": {
                "200": _answer("page", {"type": "string"}, "text/html"),
                "400": _answer("invalid link", {"type": "string"}, "text/html"),
                "503": _answer("not configured", {"type": "string"}, "text/html")}},
            "post": {"summary": "Unsubscribe from digests", "responses": {
                "200": _answer("page", {"type": "string"}, "text/html"),
                "400": _answer("invalid link", {"type": "string"}, "text/html"),
                "503": _answer("not configured", {"type": "string"}, "text/html")}}},
        "/v1/dev/token": {"post": {
            "summary": "Development mode only: a token for anyone",
            "requestBody": _json_body({"user": USER, "ttl": {"type": "integer", "minimum": 1},
                                       "roles": {"type": "array", "items": {
                                           "enum": ["admin"]}}}, ["user"]),
            "responses": {"200": _answer("a token", ANY_JSON),
                          **_errors(400, 404, 413, 429)}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Burrow gateway", "version": "1",
                 "description": "The HTTP API of a Burrow gateway; the WebSocket protocol "
                                "is in docs/protocol.md."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "bearerFormat": "JWT"}}},
        "paths": paths,
    }


def blueprint() -> Blueprint:
    bp = Blueprint("openapi")
    body = document()

    @bp.get("/v1/openapi.json")
    async def openapi(request: Request) -> HTTPResponse:
        return response.json(body)

    return bp
