"""Attachments in an S3-compatible bucket (docs/attachments.md#s3-compatible-storage) on
the real stack and a local S3 server speaking the S3 wire API (moto's server mode, on
127.0.0.1): the upload grant, the upload straight to the bucket, its checks at
completion, the download redirect to a presigned GET, and the objects going with their
message and with the collection of never-attached uploads; and the clients taking that
flow by themselves: ChatClient.upload, ``burrow upload`` and burrow.js in Chromium.

moto does not enforce a POST policy's conditions (size, type) nor ``CopySourceIfMatch``:
what these tests show refused is refused by the gateway's own checks at completion,
which hold whatever the bucket lets through.

The tests of the processes share one stack (a sequencer and a gateway, started once for
the module on a vhost and database of the module's own, with one bucket): ``api`` gives
each test an empty bucket, no attachment records and rooms of its own.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.config import Config
from botocore.session import get_session
from moto.server import ThreadedMotoServer
from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from burrow.client import ChatClient, ChatError
from burrow.client.uploads import DIRECT, PRESIGNED
from burrow.core import tokens
from burrow.devstack import ports
from burrow.storage.attachments import Limits, Refused
from burrow.storage.s3attachments import S3AttachmentStore
from burrow.storage.s3blobs import S3Blobs, S3Config
from tests.browser import PageLog, chromium
from tests.conftest import JWT_SECRET, Vhost, child_env
from tests.integration.conftest import Raw, Stack, Start, raw_ws, starting
from tests.integration.test_attachments import TYPES
from tests.integration.test_cli import cli
from tests.unit.test_uploads import SAMPLES, SIZES

pytestmark = pytest.mark.integration
MAX = 65536
URL_TTL = 7  # BURROW_S3_URL_TTL: the presigned GETs say so in X-Amz-Expires
KEY_ID, SECRET = "test-key-id", "test-secret-access-key"


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    port = ports.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


class Bucket:
    """A fresh bucket of the local S3 server, read with botocore (not through Burrow)."""

    def __init__(self, url: str) -> None:
        self.url, self.name = url, f"files-{uuid.uuid4().hex[:12]}"
        self.client = get_session().create_client(
            "s3", region_name="us-east-1", endpoint_url=url, aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"}))
        self.client.create_bucket(Bucket=self.name)

    def objects(self) -> set[str]:
        found = self.client.list_objects_v2(Bucket=self.name).get("Contents", [])
        return {o["Key"] for o in found}

    def empty(self) -> None:
        """Delete every object (the bucket of the module's stack, before each test)."""
        while keys := self.objects():
            self.client.delete_objects(Bucket=self.name, Delete={
                "Objects": [{"Key": key} for key in keys], "Quiet": True})

    def config(self, url: str | None = None) -> S3Config:
        return S3Config(self.name, "us-east-1", url or self.url, KEY_ID, SECRET,
                        url_ttl=URL_TTL, grant_ttl=300)

    def env(self) -> dict[str, str]:
        return {"BURROW_ATTACHMENT_STORE": "s3", "BURROW_S3_ENDPOINT_URL": self.url,
                "BURROW_S3_BUCKET": self.name, "BURROW_S3_ACCESS_KEY_ID": KEY_ID,
                "BURROW_S3_SECRET_ACCESS_KEY": SECRET, "BURROW_S3_URL_TTL": str(URL_TTL),
                "BURROW_ATTACHMENT_MAX_BYTES": str(MAX)}


@pytest.fixture
def bucket(s3_url: str) -> Iterator[Bucket]:
    """A bucket of the test's own (the tests of S3AttachmentStore alone, no processes)."""
    made = Bucket(s3_url)
    yield made
    made.client.close()


@pytest.fixture(scope="module")
def stack_bucket(s3_url: str) -> Iterator[Bucket]:
    """The bucket of the module's stack (``api`` empties it before each test)."""
    made = Bucket(s3_url)
    yield made
    made.client.close()


class Api:
    """The HTTP calls of the S3 flow, as a client makes them; the test's rooms: *r* (ann's,
    with bob) and *s* (eve's)."""

    def __init__(self, stack: Stack, bucket: Bucket, r: str, s: str) -> None:
        self.stack, self.bucket, self.r, self.s = stack, bucket, r, s
        self.http = httpx.Client(base_url=stack.gateways[0].url(""), timeout=30)

    def auth(self, user: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens.mint(JWT_SECRET, user, 600)}"} if user else {}

    def begin(self, user: str | None, room: str, body: Any) -> httpx.Response:
        return self.http.post(f"/v1/rooms/{room}/attachments/uploads", json=body,
                              headers=self.auth(user))

    def complete(self, user: str | None, room: str, file_id: str) -> httpx.Response:
        return self.http.post(f"/v1/rooms/{room}/attachments/{file_id}/complete",
                              headers=self.auth(user))

    @staticmethod
    def put(grant: dict[str, Any], data: bytes, kind: str) -> httpx.Response:
        """The client's upload: the policy's form fields, then the file (last)."""
        return httpx.post(grant["upload"]["url"], data=grant["upload"]["fields"],
                          files={"file": ("f", data, kind)}, timeout=30)

    def upload(self, user: str, room: str, data: bytes, kind: str,
               name: str = "f") -> dict[str, Any]:
        grant = self.begin(user, room, {"name": name, "type": kind, "size": len(data)})
        assert grant.status_code == 201, grant.text
        assert self.put(grant.json(), data, kind).status_code in (200, 201, 204)
        done = self.complete(user, room, grant.json()["id"])
        assert done.status_code == 201, done.text
        stored: dict[str, Any] = done.json()
        return stored

    def records(self) -> list[dict[str, Any]]:
        with MongoClient(self.stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
            return list(client.get_default_database()["attachments"].find())

    def clear(self) -> None:
        """No attachment records (nor objects): what a fresh stack starts with."""
        client: MongoClient[dict[str, Any]] = MongoClient(self.stack.mongo_url,
                                                          serverSelectionTimeoutMS=5000)
        with client:
            client.get_default_database()["attachments"].delete_many({})
        self.bucket.empty()
        assert (self.records(), self.bucket.objects()) == ([], set())

    def served(self, user: str, room: str, file_id: str) -> httpx.Response:
        """The signed gateway URL's answer (not followed)."""
        link = self.http.get(f"/v1/rooms/{room}/attachments/{file_id}",
                             headers=self.auth(user))
        assert link.status_code == 200, link.text
        return self.http.get(link.json()["url"])


# module_vhost and module_mongo_url: tests/integration/conftest.py's.


@pytest.fixture(scope="module")
def module_start(tmp_path_factory: pytest.TempPathFactory, module_vhost: Vhost,
                 module_mongo_url: str) -> Iterator[Start]:
    """``start``, for the module's stack: after its vhost and database, so its processes
    stop before they go."""
    directory = tmp_path_factory.mktemp("s3-stack")
    with starting(child_env(directory), directory) as run:
        yield run


def logs(stack: Stack) -> dict[Path, str]:
    return {p.log: p.log.read_text(errors="replace") for p in (*stack.gateways,
                                                                 *stack.sequencers)}


@pytest.fixture(scope="module")
def s3_stack(module_start: Start, module_vhost: Vhost, module_mongo_url: str,
             stack_bucket: Bucket) -> Iterator[Stack]:
    """A sequencer and a gateway storing attachments in *stack_bucket*, for the module."""
    stack = Stack(module_start, module_vhost, module_mongo_url)
    stack.add_sequencer(**stack_bucket.env())
    # dev mode for /client/burrow.js (the browser test), served from the gateway's origin
    stack.add_gateway(**stack_bucket.env(), BURROW_ATTACHMENT_PENDING_MAX="20",
                      BURROW_DEV_MODE="true")
    yield stack
    for log in logs(stack).values():  # the whole of each log, between the tests too
        assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def api(s3_stack: Stack, stack_bucket: Bucket) -> Iterator[Api]:
    """The module's stack as a fresh one: an empty bucket, no attachment records, and
    rooms no other test used (their messages, and the uploads' rooms, the test's only)."""
    tag = uuid.uuid4().hex[:8]
    client = Api(s3_stack, stack_bucket, f"r-{tag}", f"s-{tag}")
    client.clear()
    s3_stack.room(client.r, "ann", "bob")
    s3_stack.room(client.s, "eve")
    before = {path: len(text) for path, text in logs(s3_stack).items()}
    yield client
    client.http.close()
    for path, text in logs(s3_stack).items():  # what the processes logged in this test
        assert "Traceback" not in text[before[path]:], text[before[path]:][-3000:]


def test_uploads_go_to_the_bucket_and_downloads_come_from_it(api: Api) -> None:
    files = {**SAMPLES, "application/pdf": b"%PDF-1.7\n%%EOF\n",
             "text/plain": "héllo".encode()}
    r = api.r
    grants = {}
    for kind, data in files.items():
        name = f"x.{kind.split('/')[1]}"
        grant = api.begin("ann", r, {"name": name, "type": kind, "size": len(data)})
        grants[kind] = grant.json()
        assert grant.status_code == 201, grant.text
        fields = grant.json()["upload"]["fields"]
        file_id = grant.json()["id"]
        assert (fields["key"], fields["Content-Type"]) == (f"incoming/{file_id}", kind)
        assert [d["state"] for d in api.records() if str(d["_id"]) == file_id] == ["uploading"]
        assert api.put(grant.json(), data, kind).status_code == 204
        done = api.complete("ann", r, file_id)
        assert done.status_code == 201, done.text
        assert done.json() == {"id": file_id, "name": name, "type": kind, "size": len(data),
                               "width": SIZES.get(kind, (None, None))[0],
                               "height": SIZES.get(kind, (None, None))[1]}
        # checked bytes under the key only Burrow writes; the upload's key is gone
        assert f"files/{file_id}" in api.bucket.objects()
        assert f"incoming/{file_id}" not in api.bucket.objects()
        again = api.complete("ann", r, file_id)  # a retried completion: the same answer
        assert (again.status_code, again.json()) == (200, done.json())
        moved = api.served("ann", r, file_id)
        assert moved.status_code == 307 and moved.headers["cache-control"] == "no-store"
        target = urlsplit(moved.headers["location"])
        assert f"{target.scheme}://{target.netloc}" == api.bucket.url
        assert target.path == f"/{api.bucket.name}/files/{file_id}"
        query = {k: v[0] for k, v in parse_qs(target.query).items()}
        assert query["X-Amz-Expires"] == str(URL_TTL)  # short-lived
        fetched = httpx.get(moved.headers["location"], timeout=30)  # no token: signed
        assert fetched.status_code == 200 and fetched.content == data
        assert fetched.headers["content-type"].split(";")[0] == kind
        disposition = fetched.headers["content-disposition"]
        assert disposition == (f"{'inline' if kind in SIZES else 'attachment'}; "
                               f"filename*=UTF-8''{name}")
        assert fetched.headers["cache-control"].startswith("private, max-age=")
    # The upload policy stays valid after completion: a second upload with it lands on
    # the upload's key, never on the checked copy that is served.
    png = grants["image/png"]
    assert api.put(png, b"<html>".ljust(len(files["image/png"])), "image/png").status_code == 204
    served = httpx.get(api.served("ann", r, png["id"]).headers["location"], timeout=30)
    assert served.content == files["image/png"]
    # the gateway's link still needs its own valid signature before any redirect
    link = api.http.get(f"/v1/rooms/{r}/attachments/{file_id}", headers=api.auth("bob"))
    assert link.status_code == 404  # pending: the uploader's only
    url = api.http.get(f"/v1/rooms/{r}/attachments/{file_id}", headers=api.auth("ann")).json()
    bad = api.http.get(url["url"].replace("sig=", "sig=A"))
    assert bad.status_code == 403 and "location" not in bad.headers


def test_hostile_uploads_are_refused_and_leave_nothing(api: Api) -> None:
    png, r, s = SAMPLES["image/png"], api.r, api.s
    ok = {"name": "a.png", "type": "image/png", "size": len(png)}
    grant = api.begin("ann", r, ok).json()
    refused = {
        "no token": (api.begin(None, r, ok), 401, None),
        "not a member": (api.begin("eve", r, ok), 403, "forbidden"),
        "a room ann is not in": (api.begin("ann", s, ok), 403, "forbidden"),
        "too large": (api.begin("ann", r, {**ok, "size": MAX + 1}), 413, "too_large"),
        "empty": (api.begin("ann", r, {**ok, "size": 0}), 400, "empty"),
        "a type not allowed": (api.begin("ann", r, {**ok, "type": "image/svg+xml"}), 415,
                               "type_not_allowed"),
        "size not a number": (api.begin("ann", r, {**ok, "size": "12"}), 400, None),
        "size a boolean": (api.begin("ann", r, {**ok, "size": True}), 400, None),
        "an unknown field": (api.begin("ann", r, {**ok, "key": "files/x"}), 400, None),
        "not an object": (api.begin("ann", r, [ok]), 400, None),
        "a name too long": (api.begin("ann", r, {**ok, "name": "n" * 2000}), 400,
                            "bad_name"),
        "completing, no token": (api.complete(None, r, grant["id"]), 401, None),
        "completing, not a member": (api.complete("eve", r, grant["id"]), 403,
                                     "forbidden"),
        "completing another's upload": (api.complete("bob", r, grant["id"]), 404,
                                        "not_found"),
        "completing in another room": (api.complete("eve", s, grant["id"]), 404,
                                       "not_found"),
        "completing an unknown id": (api.complete("ann", r, "0" * 24), 404, "not_found"),
        "completing a malformed id": (api.complete("ann", r, "../x"), 404, None),
        "completing before uploading": (api.complete("ann", r, grant["id"]), 409,
                                        "not_uploaded"),
        "the bytes through the gateway": (api.http.post(
            f"/v1/rooms/{r}/attachments", params={"name": "a"}, content=png,
            headers={**api.auth("ann"), "Content-Type": "image/png"}), 409,
            "use_presigned_upload"),
    }
    for case, (answer, status, code) in refused.items():
        assert answer.status_code == status, (case, answer.text)
        if code:
            assert answer.json()["error"]["code"] == code, (case, answer.text)
    [record] = api.records()  # only the grant's, still waiting for its bytes
    assert (str(record["_id"]), record["state"]) == (grant["id"], "uploading")
    assert api.put(grant, png, "image/png").status_code == 204  # and it still works
    assert api.complete("ann", r, grant["id"]).status_code == 201

    def checked(kind: str, declared: int, data: bytes) -> httpx.Response:
        """Declare *declared* bytes of *kind*, upload *data*, complete."""
        made = api.begin("ann", r, {"name": "f", "type": kind, "size": declared}).json()
        assert api.put(made, data, kind).status_code == 204
        answer = api.complete("ann", r, made["id"])
        # refused: the object and the record are gone
        assert f"incoming/{made['id']}" not in api.bucket.objects()
        assert f"files/{made['id']}" not in api.bucket.objects()
        assert made["id"] not in {str(d["_id"]) for d in api.records()}
        assert api.complete("ann", r, made["id"]).status_code == 404
        return answer

    gif = SAMPLES["image/gif"]
    bad = {
        "a GIF declared PNG": (checked("image/png", len(gif), gif), 415, "wrong_type"),
        "HTML declared PNG": (checked("image/png", 40, b"<html><script>x</script></html>"
                                      .ljust(40)), 415, "wrong_type"),
        "an image declared text": (checked("text/plain", len(png), png), 415, "wrong_type"),
        "text not UTF-8": (checked("text/plain", 4, b"ok\xff\xfe"), 415, "wrong_type"),
        "fewer bytes than declared": (checked("text/plain", 100, b"x" * 50), 400,
                                      "wrong_size"),
        "more bytes than declared": (checked("text/plain", 10, b"x" * 50), 400, "wrong_size"),
        "more than the limit": (checked("text/plain", 10, b"x" * (MAX + 1)), 413,
                                "too_large"),
    }
    for case, (answer, status, code) in bad.items():
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (
            case, answer.text)


async def test_deleting_a_message_deletes_its_object(api: Api) -> None:
    r = api.r
    kept = api.upload("ann", r, b"kept", "text/plain", "k.txt")["id"]
    going = api.upload("ann", r, SAMPLES["image/gif"], "image/gif", "g.gif")["id"]
    stack = api.stack
    async with raw_ws(stack.gateways[0].ws_url, stack.token("ann")) as ann:
        ack = await send(ann, r, "m1", [going])
        assert ack["type"] == "ack", ack
        assert (await send(ann, r, "m2", [kept]))["type"] == "ack"
        url = api.http.get(f"/v1/rooms/{r}/attachments/{going}", headers=api.auth("bob"))
        assert api.http.get(url.json()["url"]).status_code == 307  # attached: members'
        await ann.send({"type": "delete", "room": r, "id": ack["id"], "client_id": "d1"})
        assert (await ann.recv_until_any(("ack", "error")))["type"] == "ack"
    api.bucket.client.head_object(Bucket=api.bucket.name, Key=f"files/{kept}")
    with pytest.raises(api.bucket.client.exceptions.ClientError) as gone:
        api.bucket.client.head_object(Bucket=api.bucket.name, Key=f"files/{going}")
    assert gone.value.response["Error"]["Code"] == "404"
    assert going not in {str(d["_id"]) for d in api.records()}
    assert api.http.get(url.json()["url"]).status_code == 404  # a link handed out before


async def send(ws: Raw, room: str, client_id: str, attachments: list[str]) -> dict[str, Any]:
    await ws.send({"type": "send", "room": room, "client_id": client_id, "body": "",
                   "attachments": attachments})
    return await ws.recv_until_any(("ack", "error"))


async def test_the_collection_deletes_the_objects_of_uploads_never_attached(
        db: AsyncDatabase[dict[str, Any]], bucket: Bucket) -> None:
    files = S3AttachmentStore(db, Limits(MAX, TYPES, 8), S3Blobs(bucket.config()))
    nowhere = dataclasses.replace(bucket.config(f"http://127.0.0.1:{ports.free_port()}"),
                                  attempts=1)
    dead = S3AttachmentStore(db, Limits(MAX, TYPES, 8), S3Blobs(nowhere))
    try:
        async def uploaded(data: bytes, complete: bool = True) -> str:
            started, grant = await files.begin("r", "ann", "f.txt", "text/plain", len(data))
            async with httpx.AsyncClient(timeout=30) as http:
                sent = await http.post(grant["url"], data=grant["fields"],
                                       files={"file": ("f", data, "text/plain")})
            assert sent.status_code == 204
            if complete:
                await files.complete(started.id, "r", "ann")
            return started.id

        pending, attached = await uploaded(b"pending"), await uploaded(b"attached")
        never = await uploaded(b"never completed", complete=False)
        await files.claim([attached], "r", "ann", "m1")
        assert bucket.objects() == {f"files/{pending}", f"files/{attached}",
                                 f"incoming/{never}"}
        assert await files.collect(datetime.now(UTC) - timedelta(hours=1)) == 0  # too young
        # the bucket unreachable: the records stay, marked, for the next collection
        assert await dead.collect(datetime.now(UTC) + timedelta(seconds=1)) == 2
        states = {str(d["_id"]): d["state"] async for d in db["attachments"].find()}
        assert states == {pending: "deleting", attached: "attached", never: "deleting"}
        assert await files.collect(datetime.now(UTC) + timedelta(seconds=1)) == 2
        assert bucket.objects() == {f"files/{attached}"}
        assert [str(d["_id"]) async for d in db["attachments"].find()] == [attached]
    finally:
        await files.close()
        await dead.close()


async def test_a_completion_holds_its_upload_for_a_while(
        db: AsyncDatabase[dict[str, Any]], bucket: Bucket) -> None:
    """Two completions at once: the second is told to retry, not answered with a refusal
    that deletes the upload; a hold left by a gateway that died lapses."""
    files = S3AttachmentStore(db, Limits(MAX, TYPES, 8), S3Blobs(bucket.config()))
    try:
        started, grant = await files.begin("r", "ann", "f.txt", "text/plain", 2)
        async with httpx.AsyncClient(timeout=30) as http:
            sent = await http.post(grant["url"], data=grant["fields"],
                                   files={"file": ("f", b"hi", "text/plain")})
        assert sent.status_code == 204
        held = datetime.now(UTC) + timedelta(seconds=30)
        await db["attachments"].update_one({}, {"$set": {"checking_until": held}})
        with pytest.raises(Refused) as busy:
            await files.complete(started.id, "r", "ann")
        assert (busy.value.status, busy.value.code) == (409, "completing")
        assert bucket.objects() == {f"incoming/{started.id}"}  # nothing deleted
        lapsed = datetime.now(UTC) - timedelta(seconds=1)
        await db["attachments"].update_one({}, {"$set": {"checking_until": lapsed}})
        done, now = await files.complete(started.id, "r", "ann")
        assert (done.state, done.size, now) == ("pending", 2, True)
        assert "checking_until" not in (await db["attachments"].find_one({}) or {})
    finally:
        await files.close()


async def test_the_python_client_and_the_cli_upload_to_the_bucket(
        api: Api, tmp_path: Path) -> None:
    """ChatClient.upload learns the S3 flow (from a grant, or from the direct route's
    409 ``use_presigned_upload``) and answers as with GridFS; a message names the
    upload; ``burrow upload`` works unchanged."""
    stack, png, gif, r = api.stack, SAMPLES["image/png"], SAMPLES["image/gif"], api.r
    client = ChatClient([stack.gateways[0].ws_url], lambda: stack.token("ann"))
    try:
        first = await client.upload(r, png, name="dot.png")
        assert first == {"id": first["id"], "name": "dot.png", "type": "image/png",
                         "size": len(png), "width": SIZES["image/png"][0],
                         "height": SIZES["image/png"][1]}
        assert client.uploader.flow == PRESIGNED
        # a client that believed in the direct route is told, and follows
        client.uploader.flow = DIRECT
        (tmp_path / "g.gif").write_bytes(gif)
        second = await client.upload(r, tmp_path / "g.gif")
        assert (second["name"], second["type"], client.uploader.flow) == (
            "g.gif", "image/gif", PRESIGNED)
        for stored in (first, second):
            head = api.bucket.client.head_object(Bucket=api.bucket.name,
                                                 Key=f"files/{stored['id']}")
            assert head["ContentLength"] == stored["size"]
        assert api.bucket.objects() == {f"files/{first['id']}", f"files/{second['id']}"}
        eve = ChatClient([stack.gateways[0].ws_url], lambda: stack.token("eve"))
        with pytest.raises(ChatError) as refused:
            await eve.upload(r, png)
        assert refused.value.code == "forbidden"
        with pytest.raises(ChatError) as refused:
            await client.upload(r, b"<svg/>", name="x.svg")
        assert refused.value.code == "type_not_allowed"
        with pytest.raises(ChatError) as refused:
            await client.upload(r, tmp_path / "missing.png")
        assert refused.value.code == "cannot_read"
        await client.connect()
        await client.subscribe(r, since=0)
        await client.send(r, "look", attachments=[first["id"], second["id"]])
        message = await asyncio.wait_for(client.messages.get(), 30)
        assert [a["id"] for a in message.attachments] == [first["id"], second["id"]]
    finally:
        await client.close()
    # the command line, as a user runs it: one invocation
    (tmp_path / "notes.txt").write_text("héllo")
    done = await asyncio.to_thread(cli, stack.gateways[0].url(""), "--token",
                                   stack.token("bob"), "--json", "upload", r,
                                   str(tmp_path / "notes.txt"))
    assert done.returncode == 0, done.stderr
    uploaded = json.loads(done.stdout)
    assert (uploaded["name"], uploaded["type"], uploaded["size"]) == (
        "notes.txt", "text/plain", len("héllo".encode()))
    api.bucket.client.head_object(Bucket=api.bucket.name, Key=f"files/{uploaded['id']}")


async def test_burrow_js_uploads_to_the_bucket_from_the_browser(api: Api) -> None:
    """burrow.js's upload in Chromium: a page of the gateway's origin POSTs the form to
    the bucket (another origin). moto's server answers CORS for every origin by itself
    (flask-cors), so this shows the flow, not a bucket's CORS rules (docs/clients.md)."""
    gateway, r = api.stack.gateways[0], api.r
    picture = base64.b64encode(SAMPLES["image/png"]).decode()
    async with chromium() as browser:
        page = await (await browser.new_context()).new_page()
        log = PageLog(page, "page")
        await page.goto(gateway.url("/demo/"))
        result = await page.evaluate(f"""async () => {{
            const lib = await import("/client/burrow.js");
            const client = new lib.BurrowClient({{ url: location.origin,
                                                   token: async () => "{api.stack.token('ann')}" }});
            const bytes = Uint8Array.from(atob("{picture}"), (c) => c.charCodeAt(0));
            const file = await client.upload("{r}", new Blob([bytes], {{ type: "image/png" }}), "dot.png");
            const image = await (await fetch(await client.attachmentUrl("{r}", file.id))).blob();
            client.uploadFlow = "direct";  // told by the gateway's 409, it follows
            const again = await client.upload("{r}", new Blob(["héllo"], {{ type: "text/plain" }}), "n.txt");
            let refused = null;
            try {{ await client.upload("{r}", new Blob(["<svg/>"], {{ type: "image/svg+xml" }}), "x.svg"); }}
            catch (err) {{ refused = [err.code, err.status]; }}
            return {{ file, again, flow: client.uploadFlow, image: [image.type, image.size], refused }};
        }}""")
        assert log.errors == [], log
    file = result["file"]
    assert (file["name"], file["type"], file["size"]) == ("dot.png", "image/png",
                                                           len(SAMPLES["image/png"]))
    assert (result["flow"], result["refused"]) == ("presigned", ["type_not_allowed", 415])
    assert result["image"] == ["image/png", len(SAMPLES["image/png"])]
    assert (result["again"]["name"], result["again"]["size"]) == ("n.txt", 6)
    head = api.bucket.client.head_object(Bucket=api.bucket.name, Key=f"files/{file['id']}")
    assert head["ContentLength"] == len(SAMPLES["image/png"])
    assert api.bucket.objects() == {f"files/{file['id']}", f"files/{result['again']['id']}"}
