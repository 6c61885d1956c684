"""Uploads straight to an S3-compatible bucket (``BURROW_ATTACHMENT_STORE=s3``;
docs/attachments.md#s3-compatible-storage): the bytes never pass through a gateway.

- ``POST /v1/rooms/{room}/attachments/uploads`` ``{"name", "type", "size"}``: members
  only; the checks a GridFS upload gets before its bytes, then ``201 {"id", ...,
  "upload": {"url", "fields"}, "expires_at"}``: a presigned POST policy for exactly that
  many bytes of exactly that type.
- ``POST /v1/rooms/{room}/attachments/{id}/complete``: the uploader, once the bucket has
  the bytes: checked (size, type, image header) and made ``pending``: ``201`` with the
  upload's fields, as ``POST .../attachments`` answers with GridFS (``200``, the same,
  for an upload completed already); refused and deleted when a check fails.

Downloads keep their signed gateway URL, which answers a redirect to a presigned GET
(gateway/attachments_api.py).
"""

from __future__ import annotations

import time

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.core import uploads
from burrow.storage.attachments import Refused
from burrow.storage.s3attachments import S3AttachmentStore
from burrow.storage.s3blobs import Unavailable
from gateway.attachments_api import _attachments, _may_read
from gateway.auth import Claims
from gateway.http_json import Invalid, json_object, problem, without_body
from gateway.ws import authenticate


def _s3(request: Request, room: str) -> S3AttachmentStore | HTTPResponse:
    files = _attachments(request)
    if isinstance(files, S3AttachmentStore):
        return files
    return problem(409, "use_direct_upload", "files are stored by the gateway: POST the "
                   f"bytes to /v1/rooms/{room}/attachments?name=NAME")


def _unavailable(exc: Unavailable) -> HTTPResponse:
    return problem(503, "storage_unavailable", f"the file store failed: {exc}")


def blueprint() -> Blueprint:
    bp = Blueprint("attachments_s3", url_prefix="/v1/rooms")
    bp.on_request(authenticate)

    @bp.post("/<room>/attachments/uploads", stream=True)  # read after the token check
    async def begin(request: Request, room: str) -> HTTPResponse:
        if (refused := await _may_read(request, room)) is not None:
            return refused
        files = _s3(request, room)
        if isinstance(files, HTTPResponse):
            return files
        try:
            data = await json_object(request, ("name", "type", "size"))
        except Invalid as exc:
            return exc.response()
        name, kind, size = data.get("name", ""), data.get("type"), data.get("size")
        if not isinstance(name, str):
            return problem(400, "bad_name", "name must be a string", field="name")
        if not isinstance(kind, str):
            return problem(400, "bad_request", "type must be the file's content type",
                           field="type")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return problem(400, "bad_request", "size must be the file's length in bytes",
                           field="size")
        try:
            name = uploads.clean_name(name)
        except ValueError as exc:
            return problem(400, "bad_name", str(exc), field="name")
        claims: Claims = request.ctx.claims
        try:
            started, grant = await files.begin(room, claims.user, name,
                                               uploads.media_type(kind), size)
        except Refused as exc:
            return problem(exc.status, exc.code, exc.message)
        except Unavailable as exc:
            return _unavailable(exc)
        expires = int(time.time()) + files.blobs.config.grant_ttl
        return response.json({**started.reference(), "expires_at": expires,
                              "upload": {"method": "POST", "url": grant["url"],
                                         "fields": grant["fields"]}},
                             status=201, headers={"Cache-Control": "no-store"})

    @bp.post("/<room>/attachments/<file_id>/complete", stream=True)
    @without_body()
    async def complete(request: Request, room: str, file_id: str) -> HTTPResponse:
        if (refused := await _may_read(request, room)) is not None:
            return refused
        files = _s3(request, room)
        if isinstance(files, HTTPResponse):
            return files
        claims: Claims = request.ctx.claims
        try:
            done, now = await files.complete(file_id, room, claims.user)
        except Refused as exc:
            return problem(exc.status, exc.code, exc.message)
        except Unavailable as exc:
            return _unavailable(exc)
        return response.json(done.reference(), status=201 if now else 200)

    return bp
