"""Attachments whose bytes are in an S3-compatible bucket (``BURROW_ATTACHMENT_STORE=s3``).

The records, their states, the quota, claims, deletion and collection are
:class:`~burrow.storage.attachments.AttachmentStore`'s, in MongoDB, as with GridFS; only
the bytes move, and they never pass through a gateway (docs/attachments.md#s3-compatible-storage):

1. :meth:`S3AttachmentStore.begin`: the checks a GridFS upload gets before its bytes
   (type allowed, size limit, quota), an ``uploading`` record (``store: "s3"``), and a
   presigned POST policy for the key ``incoming/{id}`` that lets S3 itself refuse any
   other size or type.
2. The client POSTs the file to the bucket.
3. :meth:`S3AttachmentStore.complete`: ``HEAD`` (the size must be the declared one), a
   read of the first 256 KiB (all of a ``text/plain`` file: it must be UTF-8) for the
   same checks :mod:`burrow.core.uploads` makes of a GridFS upload, both pinned to the
   ETag the ``HEAD`` saw; then a server-side copy, pinned the same way, to
   ``files/{id}``, which only Burrow writes: the upload policy stays valid for its
   lifetime, and a second POST with it replaces ``incoming/{id}``, never the checked
   bytes. A refused upload's object and record are deleted.
4. Downloads: a presigned GET of ``files/{id}`` (:meth:`S3AttachmentStore.download_url`).

Deleting (a message's files, the collection) deletes both keys, then the record; when
the bucket cannot be reached the record stays ``deleting`` and the next collection tries
again.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bson import ObjectId
from pymongo import ReturnDocument

from burrow.core import uploads
from burrow.storage.attachments import (
    ATTACHED,
    PENDING,
    UPLOADING,
    Attachment,
    AttachmentStore,
    Database,
    Limits,
    Refused,
    _attachment,
    object_id,
)
from burrow.storage.s3blobs import Changed, S3Blobs, S3Config, Unavailable

log = logging.getLogger(__name__)
S3: Final = "s3"
INCOMING, FILES = "incoming/", "files/"
CHECKING: Final = timedelta(seconds=60)  # a completion's hold on its upload


def attachment_store(db: Database, limits: Limits, s3: S3Config | None) -> AttachmentStore:
    """The store of the configured kind: GridFS when *s3* is None."""
    return AttachmentStore(db, limits) if s3 is None else S3AttachmentStore(db, limits,
                                                                            S3Blobs(s3))


def served_as(found: Attachment) -> tuple[str, str]:
    """The ``Content-Type`` and ``Content-Disposition`` a file is served with: those of
    the GridFS download (gateway/attachments_api.py), inline only for the raster images."""
    kind = f"{found.type}; charset=utf-8" if found.type == "text/plain" else found.type
    how = "inline" if found.type in uploads.IMAGE_TYPES else "attachment"
    return kind, f"{how}; filename*=UTF-8''{urllib.parse.quote(found.name, safe='')}"


class S3AttachmentStore(AttachmentStore):
    def __init__(self, db: Database, limits: Limits, blobs: S3Blobs) -> None:
        super().__init__(db, limits)
        self.blobs = blobs

    async def close(self) -> None:
        await self.blobs.close()

    async def begin(self, room: str, uploader: str, name: str, declared: str,
                    size: int) -> tuple[Attachment, dict[str, Any]]:
        """An ``uploading`` record and the policy to upload its bytes to the bucket.

        Raises :exc:`Refused` as a GridFS upload would before its bytes: 415 a type not
        allowed, 400 empty, 413 over the size limit, 429 past the pending quota."""
        if declared not in self.limits.types:
            raise Refused(415, "type_not_allowed", f"{declared or 'no type'} is not an "
                          f"allowed type: {', '.join(sorted(self.limits.types))}")
        if size <= 0:
            raise Refused(400, "empty", "the file is empty")
        if size > self.limits.max_bytes:
            raise Refused(413, "too_large",
                          f"the file is larger than {self.limits.max_bytes} bytes")
        quota = Refused(429, "too_many_pending", f"at most {self.limits.pending_max} "
                        "uploads not yet attached to a message")
        if await self.pending_count(uploader) >= self.limits.pending_max:
            raise quota
        file_id = ObjectId()
        await self.records.insert_one({
            "_id": file_id, "room": room, "uploader": uploader, "name": name,
            "type": declared, "size": size, "state": UPLOADING, "store": S3,
            "created": datetime.now(UTC)})
        try:
            if await self.pending_count(uploader) > self.limits.pending_max:  # a race of two
                raise quota
            grant = await self.blobs.upload_grant(INCOMING + str(file_id), declared, size)
        except BaseException:
            await self.records.delete_one({"_id": file_id})
            raise
        return Attachment(str(file_id), room, uploader, name, declared, size, "", None,
                          None, UPLOADING, None, S3), grant

    async def complete(self, file_id: str, room: str, user: str) -> tuple[Attachment, bool]:
        """Check the bytes uploaded for *file_id* and make it ``pending``; the upload and
        whether this call completed it (False: it was complete already, the same answer).

        Only the uploader's own upload in *room*; anything else is 404. 409 ``not_uploaded``
        while the bucket has no object for it (the record stays: the client may still
        upload). Bytes that fail a check are refused as a GridFS upload is (400 ``wrong_size``
        for a size other than the declared one, 413, 415 ``wrong_type``) and deleted with
        the record."""
        oid = object_id(file_id)
        mine = {"_id": oid, "room": room, "uploader": user, "store": S3}
        now = datetime.now(UTC)
        taken = None if oid is None else await self.records.find_one_and_update(
            {**mine, "state": UPLOADING, "checking_until": {"$not": {"$gt": now}}},
            {"$set": {"checking_until": now + CHECKING}}, return_document=ReturnDocument.AFTER)
        if taken is None:
            return await self._completed(mine, file_id), False
        try:
            fields = await self._check(file_id, taken["type"], int(taken["size"]))
        except _NotUploaded:
            await self._release(mine)
            raise
        except Refused:
            await self._drop(oid, file_id)
            raise
        except BaseException:  # the bucket unreachable: the client may try again
            await self._release(mine)
            raise
        done = await self.records.find_one_and_update(
            {**mine, "state": UPLOADING},
            {"$set": {**fields, "state": PENDING}, "$unset": {"checking_until": ""}},
            return_document=ReturnDocument.AFTER)
        if done is None:  # collected meanwhile (it was older than the pending TTL)
            raise Refused(404, "not_found", f"no upload {file_id} in room {room}")
        return _attachment(done), True

    async def _release(self, mine: dict[str, Any]) -> None:
        await self.records.update_one({**mine, "state": UPLOADING},
                                      {"$unset": {"checking_until": ""}})

    async def _completed(self, mine: dict[str, Any], file_id: str) -> Attachment:
        """The answer to a completion that did not take the upload."""
        doc = None if mine["_id"] is None else await self.records.find_one(mine)
        if doc is not None and doc["state"] in (PENDING, ATTACHED):
            return _attachment(doc)  # completed already: a retry gets the same answer
        if doc is not None and doc["state"] == UPLOADING:
            raise Refused(409, "completing", "this upload is being completed: try again")
        raise Refused(404, "not_found", f"no upload {file_id} in room {mine['room']}")

    async def _check(self, file_id: str, declared: str, size: int) -> dict[str, Any]:
        """The stored fields of a checked upload, the bytes copied to their final key."""
        incoming = INCOMING + file_id
        head = await self.blobs.head(incoming)
        if head is None:
            raise _NotUploaded(409, "not_uploaded", "nothing was uploaded for this file yet")
        if head.size > self.limits.max_bytes:
            raise Refused(413, "too_large",
                          f"the file is larger than {self.limits.max_bytes} bytes")
        if head.size != size:
            raise Refused(400, "wrong_size", f"{head.size} bytes were uploaded, "
                          f"{size} declared")
        whole = declared == "text/plain"  # UTF-8 all through: read it all
        start = bytearray()
        text = codecs.getincrementaldecoder("utf-8")() if whole else None
        try:
            async with contextlib.aclosing(self.blobs.read(
                    incoming, head.etag, None if whole else uploads.HEAD_BYTES)) as pieces:
                async for piece in pieces:
                    if len(start) < uploads.HEAD_BYTES:
                        start += piece[:uploads.HEAD_BYTES - len(start)]
                    if text is not None:
                        self._decode(text, piece)
            if text is not None:
                self._decode(text, b"", final=True)
            try:
                image = uploads.check_content(declared, bytes(start))
            except uploads.NotAnImage as exc:
                raise Refused(415, "wrong_type", str(exc)) from None
            await self.blobs.copy(incoming, FILES + file_id, head.etag)
        except Changed:
            raise Refused(409, "upload_changed", "the file was replaced while it was "
                          "checked: upload it again") from None
        await self.blobs.delete(incoming)
        width, height = (image.width, image.height) if image else (None, None)
        return {"size": head.size, "etag": head.etag.strip('"'), "width": width,
                "height": height}

    async def _drop(self, oid: ObjectId | None, file_id: str) -> None:
        """A refused upload: its objects, then its record (still ``uploading``: a
        collection may have taken it meanwhile, and then deletes it itself)."""
        with contextlib.suppress(Unavailable):  # the collection deletes the keys later
            await self.blobs.delete(INCOMING + file_id, FILES + file_id)
        await self.records.delete_one({"_id": oid, "state": UPLOADING})

    async def download_url(self, found: Attachment, max_age: int) -> str:
        """A presigned GET of *found*'s bytes with the GridFS download's headers."""
        kind, disposition = served_as(found)
        return await self.blobs.download_url(FILES + found.id, kind, disposition,
                                             f"private, max-age={max(0, max_age)}")

    async def _purge(self, oids: list[ObjectId]) -> None:
        """Bytes first, then the record; a record whose bytes could not be deleted stays
        (``deleting``: the next collection tries again)."""
        mine = {d["_id"] async for d in self.records.find(
            {"_id": {"$in": oids}, "store": S3}, {"_id": 1})}
        if others := [oid for oid in oids if oid not in mine]:  # stored before the switch
            await super()._purge(others)
        for oid in oids:
            if oid not in mine:
                continue
            try:
                await self.blobs.delete(FILES + str(oid), INCOMING + str(oid))
            except Unavailable as exc:
                log.warning("file %s not deleted yet, %s; the collection retries", oid, exc)
                continue
            await self.records.delete_one({"_id": oid})


class _NotUploaded(Refused):
    """409 ``not_uploaded``: kept apart so that the record is not dropped for it."""
