"""Files attached to messages (docs/attachments.md): upload, a signed URL, the download.

- ``POST /v1/rooms/{room}/attachments?name=...``: members only; the body is the file's
  raw bytes, its ``Content-Type`` the file's type. Read as it arrives, after the token
  and membership checks, through ``BURROW_ATTACHMENT_MAX_BYTES`` (413 while it is still
  coming) straight into GridFS: a gateway holds one chunk of an upload, not the file.
- ``GET /v1/rooms/{room}/attachments/{id}``: members only (a pending upload: its
  uploader only): a URL to the bytes, signed, valid ``BURROW_ATTACHMENT_URL_TTL`` s.
- ``GET /v1/files/{id}?exp=&sig=``: no token (an ``<img src>`` has none): the bytes for
  whoever holds a valid, unexpired signature of that id.

Every gateway worker deletes, once a minute, the uploads no message attached within
``BURROW_ATTACHMENT_PENDING_TTL`` (:func:`collect_forever`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from sanic import Blueprint, Request, response
from sanic.exceptions import PayloadTooLarge
from sanic.response import HTTPResponse

from burrow.core import ids, uploads
from burrow.runtime.settings import ConfigError, Settings
from burrow.storage.attachments import AttachmentStore, Limits, Refused
from burrow.storage.s3attachments import S3AttachmentStore, attachment_store
from burrow.storage.s3blobs import Unavailable
from gateway.auth import Claims
from gateway.http_json import problem
from gateway.node import Node
from gateway.ws import authenticate

log = logging.getLogger(__name__)
COLLECT_EVERY: Final = 60.0  # seconds between two collections of a gateway worker
CSP: Final = "default-src 'none'; sandbox"


def store(settings: Settings, db: AsyncDatabase[dict[str, Any]]) -> AttachmentStore:
    """GridFS, or S3 with ``BURROW_ATTACHMENT_STORE=s3`` (gateway/attachments_s3.py)."""
    return attachment_store(db, Limits(settings.attachment_max_bytes,
                                       settings.attachment_types,
                                       settings.attachment_pending_max), settings.s3_config())


async def collect_forever(attachments: AttachmentStore, ttl: float) -> None:
    """Delete never-attached uploads older than *ttl* seconds, every :data:`COLLECT_EVERY`.

    In the gateway rather than a job of its own: it is one indexed query a minute when
    there is nothing to collect, and needs nothing a gateway has not got; several
    workers collecting at once each take a file only by moving it out of ``pending``
    first, so none is deleted twice and none that a message claims meanwhile.
    """
    while True:
        await asyncio.sleep(COLLECT_EVERY)
        try:
            gone = await attachments.collect(datetime.now(UTC) - timedelta(seconds=ttl))
        except PyMongoError as exc:
            log.warning("unattached uploads not collected, the database failed: %s", exc)
            continue
        if gone:
            log.info("collected %d uploads never attached to a message", gone)


def _attachments(request: Request) -> AttachmentStore:
    found: AttachmentStore = request.app.ctx.attachments
    return found


async def _may_read(request: Request, room: str) -> HTTPResponse | None:
    """rooms_api's check: a member of the room, or an admin (of a room that exists)."""
    claims: Claims = request.ctx.claims
    node: Node = request.app.ctx.node
    if not ids.is_room_id(room):
        return problem(400, "bad_room", "room must match [A-Za-z0-9_-]{1,64}")
    if claims.is_admin and await node.rooms.exists(room):
        return None
    if await node.rooms.role(room, claims.user) is None:
        return problem(403, "forbidden", f"not a member of room {room}")
    return None


async def _body(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives, through *limit* bytes."""
    if request.stream is None:
        return
    stream: Any = request.stream  # Sanic's Http: typed as a Stream without __aiter__
    stream.request_max_size = limit
    try:
        async for piece in stream:
            yield piece
    except PayloadTooLarge:
        raise Refused(413, "too_large", f"the file is larger than {limit} bytes") from None


def _key(request: Request) -> bytes | None:
    settings: Settings = request.app.ctx.settings
    try:
        return settings.attachment_key()
    except ConfigError:
        return None


def blueprint() -> Blueprint:
    bp = Blueprint("attachments", url_prefix="/v1/rooms")
    bp.on_request(authenticate)

    @bp.post("/<room>/attachments", stream=True)  # read after the token check
    async def upload(request: Request, room: str) -> HTTPResponse:
        if (refused := await _may_read(request, room)) is not None:
            return refused
        if isinstance(_attachments(request), S3AttachmentStore):  # the bytes go to S3
            return problem(409, "use_presigned_upload", "files are stored in S3: POST "
                           f"/v1/rooms/{room}/attachments/uploads for an upload policy")
        claims: Claims = request.ctx.claims
        settings: Settings = request.app.ctx.settings
        try:
            name = uploads.clean_name(request.args.get("name", ""))
        except ValueError as exc:
            return problem(400, "bad_name", str(exc))
        declared = uploads.media_type(request.headers.get("content-type"))
        limit = settings.attachment_max_bytes
        announced = request.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > limit:
            return problem(413, "too_large", f"the file is larger than {limit} bytes")
        try:
            stored = await _attachments(request).store(room, claims.user, name, declared,
                                                       _body(request, limit))
        except Refused as exc:
            return problem(exc.status, exc.code, exc.message)
        return response.json(stored.reference(), status=201)

    @bp.get("/<room>/attachments/<file_id>")
    async def url(request: Request, room: str, file_id: str) -> HTTPResponse:
        if (refused := await _may_read(request, room)) is not None:
            return refused
        claims: Claims = request.ctx.claims
        found = await _attachments(request).get(file_id)
        if found is None or found.room != room or (
                found.state != "attached" and found.uploader != claims.user):
            return problem(404, "not_found", f"no file {file_id} in room {room}")
        if (key := _key(request)) is None:
            return problem(503, "not_configured", "BURROW_ATTACHMENT_SECRET is not set")
        settings: Settings = request.app.ctx.settings
        expires = int(time.time()) + settings.attachment_url_ttl
        query = urllib.parse.urlencode({"exp": expires,
                                        "sig": uploads.sign(key, found.id, expires)})
        return response.json({**found.reference(), "url": f"/v1/files/{found.id}?{query}",
                              "expires_at": expires},
                             headers={"Cache-Control": "no-store"})

    return bp


def files_blueprint() -> Blueprint:
    bp = Blueprint("files", url_prefix="/v1/files")

    @bp.get("/<file_id>")
    async def download(request: Request, file_id: str) -> HTTPResponse | None:
        key = _key(request)
        if key is None:
            return problem(503, "not_configured", "BURROW_ATTACHMENT_SECRET is not set")
        expires, signature = request.args.get("exp", ""), request.args.get("sig", "")
        if not uploads.verify(key, file_id, expires, signature, time.time()):
            return problem(403, "bad_link", "the link is not valid or has expired: ask "
                           "for a new one")
        files = _attachments(request)
        if isinstance(files, S3AttachmentStore) and (
                found := await files.get(file_id)) is not None and found.store == "s3":
            try:  # S3 serves it, with these headers (docs/attachments.md)
                to = await files.download_url(found, int(expires) - int(time.time()))
            except Unavailable as exc:
                return problem(503, "storage_unavailable", f"the file store failed: {exc}")
            return response.empty(status=307, headers={"Location": to,
                                                       "Cache-Control": "no-store"})
        opened = await files.open(file_id)
        if opened is None:
            return problem(404, "not_found", "the file is gone")
        found, chunks = opened
        quoted = urllib.parse.quote(found.name, safe="")
        inline = found.type in uploads.IMAGE_TYPES
        kind = f"{found.type}; charset=utf-8" if found.type == "text/plain" else found.type
        answer = await request.respond(headers={
            "Content-Length": str(found.size),
            "Content-Disposition": f"{'inline' if inline else 'attachment'}; "
                                   f"filename*=UTF-8''{quoted}",
            "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP,
            "Cache-Control": f"private, max-age={max(0, int(expires) - int(time.time()))}",
        }, content_type=kind)
        async for piece in chunks:
            await answer.send(piece)
        await answer.eof()
        return None

    return bp
