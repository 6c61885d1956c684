"""Attachments (docs/attachments.md) against the embedded database and a real gateway:
uploads checked and bounded, signed download URLs, the served headers, and the store's
rules for claims, deletions and the collection of never-attached uploads."""

from __future__ import annotations

import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from burrow.core import tokens, uploads
from burrow.storage.attachments import AttachmentStore, Limits, Refused
from tests.conftest import JWT_SECRET, Vhost, eventually
from tests.integration.conftest import Running, Start
from tests.unit.test_uploads import SAMPLES, SIZES

pytestmark = pytest.mark.integration
MAX = 65536
KEY = hmac.new(JWT_SECRET.encode(), b"burrow attachment urls", hashlib.sha256).digest()
TYPES = frozenset({*SAMPLES, "application/pdf", "text/plain"})


# --- the store, on the embedded database -------------------------------------------------

async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


@pytest.fixture
def files(db: AsyncDatabase[dict[str, Any]]) -> AttachmentStore:
    return AttachmentStore(db, Limits(MAX, TYPES, 3))


async def counts(db: AsyncDatabase[dict[str, Any]]) -> tuple[int, int, int]:
    return (await db["attachments"].count_documents({}),
            await db["attachments.files"].count_documents({}),
            await db["attachments.chunks"].count_documents({}))


async def test_a_stored_file_reads_back_whole_in_255_kib_chunks(
        db: AsyncDatabase[dict[str, Any]]) -> None:
    files = AttachmentStore(db, Limits(2_000_000, TYPES, 3))
    await files.ensure_indexes()
    data = SAMPLES["image/png"] + bytes(range(256)) * 3100  # 775 KiB past the header
    stored = await files.store("r", "ann", "a.png", "image/png", chunks_of(data, 70000))
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (stored.width, stored.height) == SIZES["image/png"]
    opened = await files.open(stored.id)
    assert opened is not None
    assert b"".join([piece async for piece in opened[1]]) == data
    assert await counts(db) == (1, 1, 4)
    index = await db["attachments.chunks"].index_information()
    assert index["files_id_1_n_1"].get("unique") is True


async def test_refused_uploads_leave_nothing_stored(
        files: AttachmentStore, db: AsyncDatabase[dict[str, Any]]) -> None:
    with pytest.raises(Refused) as too_large:
        await files.store("r", "ann", "a", "text/plain", chunks_of(b"x" * (MAX + 1)))
    assert too_large.value.status == 413
    with pytest.raises(Refused) as fake:  # refused at its first chunk
        await files.store("r", "ann", "a.png", "image/png", chunks_of(b"GIF89a" * 20000))
    assert fake.value.status == 415
    with pytest.raises(Refused) as binary_text:
        await files.store("r", "ann", "a.txt", "text/plain", chunks_of(b"ok\xff\xfe"))
    assert binary_text.value.status == 415
    with pytest.raises(Refused) as empty:
        await files.store("r", "ann", "a.txt", "text/plain", chunks_of(b""))
    assert empty.value.status == 400
    assert await counts(db) == (0, 0, 0)


async def test_the_pending_quota(files: AttachmentStore) -> None:
    for _ in range(3):
        await files.store("r", "ann", "a.txt", "text/plain", chunks_of(b"hi"))
    with pytest.raises(Refused) as refused:
        await files.store("r", "ann", "a.txt", "text/plain", chunks_of(b"hi"))
    assert (refused.value.status, refused.value.code) == (429, "too_many_pending")
    await files.store("r", "bob", "a.txt", "text/plain", chunks_of(b"hi"))  # per user


async def test_claim_rules(files: AttachmentStore) -> None:
    mine = await files.store("r", "ann", "a.txt", "text/plain", chunks_of(b"a"))
    second = await files.store("r", "ann", "b.gif", "image/gif",
                               chunks_of(SAMPLES["image/gif"]))
    bobs = await files.store("r", "bob", "c.txt", "text/plain", chunks_of(b"c"))
    elsewhere = await files.store("s", "ann", "d.txt", "text/plain", chunks_of(b"d"))
    for ids in ([mine.id, bobs.id], [mine.id, elsewhere.id], [mine.id, str(ObjectId())],
                [mine.id, "not-an-id"]):
        with pytest.raises(Refused):
            await files.claim(ids, "r", "ann", "m1")
        assert (await files.get(mine.id)).state == "pending"  # type: ignore[union-attr]
    claimed = await files.claim([mine.id, second.id], "r", "ann", "m1")
    assert [a.reference() for a in claimed] == [
        {"id": mine.id, "name": "a.txt", "type": "text/plain", "size": 1,
         "width": None, "height": None},
        {"id": second.id, "name": "b.gif", "type": "image/gif",
         "size": len(SAMPLES["image/gif"]), "width": 17, "height": 5}]
    assert await files.claim([mine.id, second.id], "r", "ann", "m1") == claimed  # again
    with pytest.raises(Refused):  # attached: no other message takes it
        await files.claim([mine.id], "r", "ann", "m2")
    assert await files.pending_count("ann") == 1  # the one in room s


async def test_deleting_a_message_deletes_its_files(
        files: AttachmentStore, db: AsyncDatabase[dict[str, Any]]) -> None:
    big = AttachmentStore(db, Limits(2_000_000, TYPES, 3))
    kept = await files.store("r", "ann", "k.txt", "text/plain", chunks_of(b"keep"))
    going = await big.store("r", "ann", "g.txt", "text/plain", chunks_of(b"g" * 600_000))
    await files.claim([kept.id], "r", "ann", "m1")
    await files.claim([going.id], "r", "ann", "m2")
    assert await counts(db) == (2, 2, 4)
    assert await files.delete_for_message("m2") == 1
    assert await counts(db) == (1, 1, 1)
    assert await db["attachments.chunks"].count_documents({"files_id": ObjectId(going.id)}) == 0
    assert await files.open(going.id) is None
    assert await files.delete_for_message("m2") == 0


async def test_collection_deletes_only_uploads_never_attached(
        files: AttachmentStore, db: AsyncDatabase[dict[str, Any]]) -> None:
    pending = await files.store("r", "ann", "p.txt", "text/plain", chunks_of(b"p"))
    attached = await files.store("r", "ann", "a.txt", "text/plain", chunks_of(b"a"))
    await files.claim([attached.id], "r", "ann", "m1")
    # an upload whose gateway died mid-way: a record, chunks, no files document
    cut = ObjectId()
    await db["attachments"].insert_one({"_id": cut, "room": "r", "uploader": "ann",
                                        "name": "c", "type": "text/plain",
                                        "state": "uploading", "created": datetime.now(UTC)})
    await db["attachments.chunks"].insert_one({"files_id": cut, "n": 0, "data": b"c"})
    assert await files.collect(datetime.now(UTC) - timedelta(hours=1)) == 0  # too young
    assert await files.collect(datetime.now(UTC) + timedelta(seconds=1)) == 2
    assert await files.get(pending.id) is None
    assert await files.get(attached.id) is not None
    assert await counts(db) == (1, 1, 1)
    assert await db["attachments.chunks"].count_documents(
        {"files_id": {"$in": [cut, ObjectId(pending.id)]}}) == 0


# --- the HTTP API, on a gateway -----------------------------------------------------------

class Api:
    def __init__(self, gateway: Running, mongo_url: str) -> None:
        self.gateway, self.mongo_url = gateway, mongo_url
        self.http = httpx.Client(base_url=gateway.url(""), timeout=30)

    def auth(self, user: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens.mint(JWT_SECRET, user, 600)}"} if user else {}

    def upload(self, user: str | None, room: str, data: Any, kind: str = "text/plain",
               name: str = "f", **headers: str) -> httpx.Response:
        return self.http.post(f"/v1/rooms/{room}/attachments", params={"name": name},
                              content=data, headers={**self.auth(user), "Content-Type": kind,
                                                     **headers})

    def link(self, user: str | None, room: str, file_id: str) -> httpx.Response:
        return self.http.get(f"/v1/rooms/{room}/attachments/{file_id}",
                             headers=self.auth(user))

    def records(self) -> list[dict[str, Any]]:
        with MongoClient(self.mongo_url, serverSelectionTimeoutMS=5000) as client:
            db = client.get_default_database()
            return [*db["attachments"].find(), *db["attachments.chunks"].find({}, {"n": 1})]

    def attach(self, file_id: str) -> None:
        """What a message's send will do (next step): here straight in the database."""
        with MongoClient(self.mongo_url, serverSelectionTimeoutMS=5000) as client:
            client.get_default_database()["attachments"].update_one(
                {"_id": ObjectId(file_id)}, {"$set": {"state": "attached", "message": "m"}})


@pytest.fixture
def api(start: Start, vhost: Vhost, mongo_url: str) -> Iterator[Api]:
    gateway = start("gateway", vhost.url("burrow-gateway"), mongo_url,
                    BURROW_ATTACHMENT_MAX_BYTES=str(MAX), BURROW_ATTACHMENT_PENDING_MAX="8")
    gateway.wait("up", "up")
    client = Api(gateway, mongo_url)
    for room, owner, members in (("r", "ann", ["bob"]), ("s", "eve", [])):
        answer = client.http.post("/v1/rooms", json={"id": room, "members": members},
                                  headers=client.auth(owner))
        assert answer.status_code == 201, answer.text
    yield client
    client.http.close()
    log = gateway.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_upload_then_download_through_a_signed_url(api: Api) -> None:
    uploads_ = {**SAMPLES, "application/pdf": b"%PDF-1.7\n%%EOF\n", "text/plain": "héllo".encode()}
    for kind, data in uploads_.items():
        answer = api.upload("ann", "r", data, kind, name=f"x.{kind.split('/')[1]}")
        assert answer.status_code == 201, answer.text
        stored = answer.json()
        assert (stored["type"], stored["size"]) == (kind, len(data))
        assert (stored["width"], stored["height"]) == SIZES.get(kind, (None, None))
        [record] = [r for r in api.records() if str(r["_id"]) == stored["id"]]
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        link = api.link("ann", "r", stored["id"])
        assert link.status_code == 200 and link.headers["cache-control"] == "no-store"
        served = httpx.get(api.gateway.url(link.json()["url"]))  # no token
        assert served.status_code == 200 and served.content == data
        assert served.headers["x-content-type-options"] == "nosniff"
        assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert served.headers["content-type"].split(";")[0] == kind
        disposition = served.headers["content-disposition"]
        assert disposition.startswith("inline;" if kind in SIZES else "attachment;")
        assert disposition.endswith(f"filename*=UTF-8''x.{kind.split('/')[1]}")


def test_who_may_upload_and_ask_for_a_url(api: Api) -> None:
    stored = api.upload("ann", "r", b"mine").json()
    assert api.upload(None, "r", b"x").status_code == 401
    assert api.upload("eve", "r", b"x").status_code == 403  # not a member of r
    assert api.upload("ann", "s", b"x").status_code == 403  # a room ann is not in
    assert api.upload("ann", "no such room", b"x").status_code == 400
    assert api.link(None, "r", stored["id"]).status_code == 401
    assert api.link("eve", "r", stored["id"]).status_code == 403
    assert api.link("eve", "s", stored["id"]).status_code == 404  # her room: not its file
    assert api.link("bob", "r", stored["id"]).status_code == 404  # still ann's, pending
    api.attach(stored["id"])
    assert api.link("bob", "r", stored["id"]).status_code == 200  # attached: members'


def test_signed_urls_are_for_one_file_until_their_expiry(api: Api) -> None:
    first = api.upload("ann", "r", b"first").json()["id"]
    second = api.upload("ann", "r", b"second").json()["id"]
    url = urlsplit(api.link("ann", "r", first).json()["url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert api.http.get(url.path, params=query).content == b"first"
    past = int(time.time()) - 1
    refused = [
        (url.path, {**query, "sig": query["sig"][:-2] + ("AA" if query["sig"][-2:] != "AA"
                                                          else "BB")}),
        (url.path, {**query, "exp": str(int(query["exp"]) + 1)}),
        (f"/v1/files/{second}", query),
        (url.path, {"exp": str(past), "sig": uploads.sign(KEY, first, past)}),
        (url.path, {"exp": query["exp"]}), (url.path, {})]
    for path, params in refused:
        answer = api.http.get(path, params=params)
        assert answer.status_code == 403 and b"first" not in answer.content, (path, params)
    # a signature of ours for a file that is not stored: found to be gone
    ghost, later = str(ObjectId()), int(time.time()) + 60
    assert api.http.get(f"/v1/files/{ghost}", params={
        "exp": later, "sig": uploads.sign(KEY, ghost, later)}).status_code == 404


def test_uploads_are_bounded_and_checked(api: Api) -> None:
    assert api.upload("ann", "r", b"x" * (MAX + 1)).status_code == 413

    def chunked() -> Iterator[bytes]:
        for _ in range(MAX // 1000 + 2):
            yield b"y" * 1000
    assert api.upload("ann", "r", chunked()).status_code == 413
    assert api.upload("ann", "r", b"x", "application/zip").status_code == 415
    assert api.upload("ann", "r", b"x", "image/svg+xml").status_code == 415
    assert api.upload("ann", "r", b"<html><script>alert(1)</script></html>",
                      "image/png").status_code == 415
    assert api.upload("ann", "r", SAMPLES["image/gif"], "image/png").status_code == 415
    assert api.upload("ann", "r", b"").status_code == 400
    assert api.upload("ann", "r", b"x", name="n" * 2000).status_code == 400  # too long
    assert api.upload("ann", "r", b"x", name="n" * 10_000).status_code == 413  # head > 8 KiB
    assert api.records() == []
    for raw, clean in (("../../etc/passwd", "passwd"), ("a\r\nb\x07.txt", "ab.txt"),
                       ("\u202etxt.exe", "txt.exe")):
        answer = api.upload("ann", "r", b"x", name=raw)
        assert answer.status_code == 201 and answer.json()["name"] == clean


def test_a_lying_content_length_stores_nothing_it_did_not_announce(api: Api) -> None:
    # announced 1,000 bytes, sent 10, then gone: the upload is dropped
    with socket.create_connection(("127.0.0.1", api.gateway.port)) as sock:
        sock.sendall(b"POST /v1/rooms/r/attachments?name=a HTTP/1.1\r\nHost: x\r\n"
                     + f"Authorization: {api.auth('ann')['Authorization']}\r\n".encode()
                     + b"Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789")
        eventually(lambda: any(r.get("state") == "uploading" for r in api.records()), 30)
    eventually(lambda: api.records() == [], 30)
    # announced 5, sent 12: five are the file, the rest is not a request
    with socket.create_connection(("127.0.0.1", api.gateway.port)) as sock:
        sock.sendall(b"POST /v1/rooms/r/attachments?name=a HTTP/1.1\r\nHost: x\r\n"
                     + f"Authorization: {api.auth('ann')['Authorization']}\r\n".encode()
                     + b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello, world")
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 201")
    [record] = [r for r in api.records() if "state" in r]
    assert record["size"] == 5 and record["sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_the_pending_quota_over_http(api: Api) -> None:
    for _ in range(8):
        assert api.upload("bob", "r", b"x").status_code == 201
    answer = api.upload("bob", "r", b"x")
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "too_many_pending"
    assert api.upload("ann", "r", b"x").status_code == 201
