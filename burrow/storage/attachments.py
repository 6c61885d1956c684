"""Uploaded files in MongoDB: a record each in ``attachments`` and the bytes in GridFS
(bucket ``attachments``: ``attachments.files`` and ``attachments.chunks``, chunks of
255 KiB under a unique ``(files_id, n)`` index), which the embedded database serves as
mongod does.

A record's life: ``uploading`` while the bytes arrive, ``pending`` once they are stored
and checked, ``attached`` when a message claims it (:meth:`AttachmentStore.claim`), and
``deleting`` while it goes (its message deleted, or never attached within the grace
period: :meth:`AttachmentStore.collect`). Deleting marks the record first, then removes
the bytes, then the record, so a deletion cut short is finished by the next collection
and a claim never takes a file whose bytes are going.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bson import ObjectId
from bson.errors import InvalidId
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from burrow.core import uploads

Database = AsyncDatabase[dict[str, Any]]
BUCKET: Final = "attachments"
CHUNK_BYTES: Final = 255 * 1024
UPLOADING, PENDING, ATTACHED, DELETING = "uploading", "pending", "attached", "deleting"
SERVED: Final = (PENDING, ATTACHED)


class Refused(Exception):
    """An upload or claim the rules refuse: *status* and *code* are the HTTP answer's."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    types: frozenset[str]
    pending_max: int


@dataclass(frozen=True)
class Attachment:
    id: str
    room: str
    uploader: str
    name: str
    type: str
    size: int
    sha256: str
    width: int | None
    height: int | None
    state: str
    message: str | None
    store: str = "gridfs"  # where the bytes are: "s3" (burrow.storage.s3attachments)

    def reference(self) -> dict[str, Any]:
        """What a message carries of it, and the upload's answer."""
        return {"id": self.id, "name": self.name, "type": self.type, "size": self.size,
                "width": self.width, "height": self.height}


def object_id(text: str) -> ObjectId | None:
    """The id of ``str(ObjectId)`` form, None for anything else."""
    if len(text) != 24:
        return None
    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        return None


def _attachment(doc: dict[str, Any]) -> Attachment:
    return Attachment(str(doc["_id"]), doc["room"], doc["uploader"], doc["name"],
                      doc["type"], doc.get("size", 0), doc.get("sha256", ""),
                      doc.get("width"), doc.get("height"), doc["state"], doc.get("message"),
                      doc.get("store", "gridfs"))


class AttachmentStore:
    def __init__(self, db: Database, limits: Limits) -> None:
        self.records = db["attachments"]
        self.files = db[f"{BUCKET}.files"]
        self.chunks = db[f"{BUCKET}.chunks"]
        self.bucket = AsyncGridFSBucket(db, bucket_name=BUCKET, chunk_size_bytes=CHUNK_BYTES)
        self.limits = limits

    async def ensure_indexes(self) -> None:
        await self.records.create_index([("uploader", ASCENDING), ("state", ASCENDING)],
                                        name="uploader_state")
        await self.records.create_index([("message", ASCENDING)], name="message", sparse=True)
        await self.records.create_index([("state", ASCENDING), ("created", ASCENDING)],
                                        name="state_created")
        # GridFS's own two, as PyMongo would create them on the first upload
        await self.files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
        await self.chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)],
                                       unique=True)

    async def close(self) -> None:
        """Release what the byte store holds open (nothing, for GridFS)."""

    async def pending_count(self, user: str) -> int:
        return await self.records.count_documents(
            {"uploader": user, "state": {"$in": [UPLOADING, PENDING]}})

    async def store(self, room: str, uploader: str, name: str, declared: str,
                    body: AsyncIterator[bytes]) -> Attachment:
        """Store the bytes of *body* as a pending upload of *uploader* in *room*.

        *name* must be :func:`~burrow.core.uploads.clean_name`'s. Raises :exc:`Refused`:
        415 for a type not allowed or bytes that are not of the declared type, 413 past
        the size limit (checked as the bytes arrive), 400 empty, 429 past the pending
        quota. Nothing of a refused upload stays stored.
        """
        if declared not in self.limits.types:
            raise Refused(415, "type_not_allowed", f"{declared or 'no type'} is not an "
                          f"allowed type: {', '.join(sorted(self.limits.types))}")
        if await self.pending_count(uploader) >= self.limits.pending_max:
            raise Refused(429, "too_many_pending", f"at most {self.limits.pending_max} "
                          "uploads not yet attached to a message")
        file_id = ObjectId()
        await self.records.insert_one({
            "_id": file_id, "room": room, "uploader": uploader, "name": name,
            "type": declared, "state": UPLOADING, "created": datetime.now(UTC)})
        stream = self.bucket.open_upload_stream_with_id(file_id, name)
        try:
            size, digest, head = await self._write(stream, declared, body)
            if size == 0:
                raise Refused(400, "empty", "the file is empty")
            try:
                image = uploads.check_content(declared, head)
            except uploads.NotAnImage as exc:
                raise Refused(415, "wrong_type", str(exc)) from None
            await stream.close()
        except BaseException:
            await stream.abort()  # its chunks go
            await self.records.delete_one({"_id": file_id})
            raise
        width, height = (image.width, image.height) if image else (None, None)
        fields = {"size": size, "sha256": digest, "state": PENDING, "width": width,
                  "height": height}
        await self.records.update_one({"_id": file_id}, {"$set": fields})
        if await self.pending_count(uploader) > self.limits.pending_max:  # a race of two
            await self._purge([file_id])
            raise Refused(429, "too_many_pending", f"at most {self.limits.pending_max} "
                          "uploads not yet attached to a message")
        return Attachment(str(file_id), room, uploader, name, declared, size, digest,
                          width, height, PENDING, None)

    async def _write(self, stream: Any, declared: str,
                     body: AsyncIterator[bytes]) -> tuple[int, str, bytes]:
        size, sha, head = 0, hashlib.sha256(), bytearray()
        text = codecs.getincrementaldecoder("utf-8")() if declared == "text/plain" else None
        async for piece in body:
            size += len(piece)
            if size > self.limits.max_bytes:
                raise Refused(413, "too_large",
                              f"the file is larger than {self.limits.max_bytes} bytes")
            if len(head) < uploads.HEAD_BYTES:
                head += piece[:uploads.HEAD_BYTES - len(head)]
                if len(head) >= 16 and len(head) - len(piece) < 16:  # refuse early
                    self._check_magic(declared, bytes(head))
            if text is not None:
                self._decode(text, piece)
            sha.update(piece)
            await stream.write(piece)
        if text is not None:
            self._decode(text, b"", final=True)
        return size, sha.hexdigest(), bytes(head)

    @staticmethod
    def _check_magic(declared: str, head: bytes) -> None:
        found = uploads.sniff(head)
        if (declared in uploads.IMAGE_TYPES) != (found is not None) or (
                found is not None and found != declared):
            raise Refused(415, "wrong_type",
                          f"declared {declared} but the bytes are {found or 'not an image'}")

    @staticmethod
    def _decode(decoder: codecs.IncrementalDecoder, piece: bytes, final: bool = False) -> None:
        try:
            decoder.decode(piece, final)
        except UnicodeDecodeError:
            raise Refused(415, "wrong_type", "text/plain must be UTF-8") from None

    async def get(self, file_id: str) -> Attachment | None:
        oid = object_id(file_id)
        doc = None if oid is None else await self.records.find_one(
            {"_id": oid, "state": {"$in": list(SERVED)}})
        return None if doc is None else _attachment(doc)

    async def open(self, file_id: str) -> tuple[Attachment, AsyncIterator[bytes]] | None:
        """The file and its bytes as a stream of chunks; None if not stored (or going)."""
        found = await self.get(file_id)
        if found is None:
            return None
        try:
            stream = await self.bucket.open_download_stream(ObjectId(file_id))
        except NoFile:
            return None

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while piece := await stream.readchunk():
                    yield piece
            finally:
                await stream.close()

        return found, chunks()

    async def claim(self, file_ids: Iterable[str], room: str, sender: str,
                    message_id: str) -> list[Attachment]:
        """Attach *file_ids* to message *message_id*: all or none, and only the sender's
        own uploads in *room* that are pending or attached to this very message already
        (a retried send claims again and gets the same answer). Raises :exc:`Refused`
        (409 ``not_claimable``) naming the first that is not.

        The first claim for *message_id* wins: each record keeps the ids that claim
        named (``claim``), and a later claim for the same message (the send retried
        under its client_id after a crash between claim and store) claims those again,
        whatever *file_ids* it names, so the message lists every upload attached to it
        and the retry's other uploads stay ``pending`` for a later send."""
        wanted = list(dict.fromkeys(file_ids))
        first_claim = {"message": message_id, "state": ATTACHED, "room": room,
                       "uploader": sender}
        async for first in self.records.find(first_claim, {"claim": 1}).limit(1):
            wanted = list(first.get("claim") or [  # a record attached before ``claim``
                str(d["_id"]) async for d in self.records.find(first_claim, {"_id": 1})])
        oids = [object_id(i) for i in wanted]
        if any(oid is None for oid in oids):
            raise Refused(409, "not_claimable", "not an attachment id")
        mine = {"_id": {"$in": oids}, "room": room, "uploader": sender}
        usable = {str(d["_id"]) async for d in self.records.find(
            {**mine, "$or": [{"state": PENDING},
                             {"state": ATTACHED, "message": message_id}]}, {"_id": 1})}
        if missing := [i for i in wanted if i not in usable]:
            raise Refused(409, "not_claimable", f"{missing[0]} is not a pending upload of "
                          f"{sender} in {room}")
        await self.records.update_many({**mine, "state": PENDING}, {"$set": {
            "state": ATTACHED, "message": message_id, "attached_at": datetime.now(UTC),
            "claim": wanted}})
        claimed = {str(d["_id"]): _attachment(d) async for d in self.records.find(
            {**mine, "state": ATTACHED, "message": message_id})}
        if len(claimed) != len(wanted):  # another message took one in between: undo ours
            await self.records.update_many({**mine, "message": message_id},
                                           {"$set": {"state": PENDING},
                                            "$unset": {"message": "", "attached_at": "",
                                                       "claim": ""}})
            raise Refused(409, "not_claimable", "an upload was claimed by another message")
        return [claimed[i] for i in wanted]

    async def delete_for_message(self, message_id: str) -> int:
        """Delete the files of a message; how many there were."""
        await self.records.update_many({"message": message_id, "state": ATTACHED},
                                       {"$set": {"state": DELETING}})
        going = [d["_id"] async for d in self.records.find(
            {"message": message_id, "state": DELETING}, {"_id": 1})]
        await self._purge(going)
        return len(going)

    async def collect(self, older_than: datetime) -> int:
        """Delete the uploads never attached that were started before *older_than* (and
        finish deletions cut short); how many went."""
        stale = {"state": {"$in": [PENDING, UPLOADING]}, "created": {"$lt": older_than}}
        going = []
        async for doc in self.records.find(stale, {"_id": 1}).limit(1000):
            # one at a time and conditionally: a claim or another gateway's collection
            # may take it meanwhile
            taken = await self.records.update_one({"_id": doc["_id"], **stale},
                                                  {"$set": {"state": DELETING}})
            if taken.modified_count:
                going.append(doc["_id"])
        going += [d["_id"] async for d in self.records.find(
            {"state": DELETING}, {"_id": 1}).limit(1000)]  # twice is harmless
        await self._purge(list(dict.fromkeys(going)))
        return len(set(going))

    async def _purge(self, oids: list[ObjectId]) -> None:
        for oid in oids:
            try:
                await self.bucket.delete(oid)
            except NoFile:  # an upload cut short has chunks but no files document
                await self.chunks.delete_many({"files_id": oid})
            await self.records.delete_one({"_id": oid})
