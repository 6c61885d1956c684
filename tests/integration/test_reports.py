"""Message reports (issue 17 item 3, docs/moderation.md) on the real stack: a member
reports, the report is stored once and reaches ``moderation.reports`` with the
documented body; the owner (or an admin) lists and resolves; everyone else is refused,
and hostile requests store nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import httpx
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.conftest import ROOT, eventually
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def mongo(stack: Stack) -> Iterator[Database[dict[str, Any]]]:
    """The database, once the gateway's background start-up has made the reports'
    indexes (one report per reporter and message rests on the unique one)."""
    with MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000) as client:
        db = client.get_default_database()
        eventually(lambda: "message_reporter" in db.reports.index_information())
        yield db


@pytest.fixture
async def reports_queue(stack: Stack) -> AsyncIterator[asyncio.Queue[Any]]:
    """What a backend consumer (as ``burrow-backend``) receives from moderation.reports."""
    received: asyncio.Queue[Any] = asyncio.Queue()
    connection = await aio_pika.connect(stack.vhost.url("burrow-backend"))
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue("moderation.reports", ensure=False)

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                await received.put(message)
        await queue.consume(take)
        yield received


def post(stack: Stack, path: str, user: str, body: Any, key: str | None = None,
         roles: tuple[str, ...] = ()) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {stack.token(user, roles=roles)}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    answer = httpx.post(stack.gateways[0].url(path), headers=headers, timeout=30,
                        **({"content": body} if isinstance(body, bytes) else {"json": body}))
    return answer.status_code, answer.json()


async def test_a_report_is_stored_published_listed_and_resolved(
        stack: Stack, mongo: Database[dict[str, Any]],
        reports_queue: asyncio.Queue[Any]) -> None:
    stack.room("rp", "olga", "alice", "bob")
    status, sent = post(stack, "/v1/rooms/rp/messages", "alice", {"body": "buy pills"}, "k1")
    assert status == 201, sent
    status, gone = post(stack, "/v1/rooms/rp/messages", "alice", {"body": "rude"}, "k2")
    status, _ = post(stack, f"/v1/rooms/rp/messages/{gone['id']}/delete", "alice", b"", "k3")
    assert status == 201
    path = f"/v1/rooms/rp/messages/{sent['id']}/report"
    status, report = post(stack, path, "bob", {"reason": "spam", "note": "again"})
    assert status == 201, report
    assert set(report) == {"id", "room", "message", "reason", "state", "created_at"}
    assert (report["room"], report["message"], report["reason"], report["state"]) == (
        "rp", sent["id"], "spam", "open")
    message = await asyncio.wait_for(reports_queue.get(), 30)
    assert message.message_id == report["id"] and message.content_type == "application/json"
    assert json.loads(message.body) == {
        "schema": "burrow.report/1", "id": report["id"], "room": "rp", "message": sent["id"],
        "reporter": "bob", "reason": "spam", "note": "again",
        "created_at": report["created_at"], "snapshot": {
            "sender": "alice", "seq": 1, "body": "buy pills", "edited": False,
            "deleted": False}}
    # again: the same report (200), published again with the same message id
    status, again = post(stack, path, "bob", {"reason": "abuse"})
    assert (status, again) == (200, report)
    message = await asyncio.wait_for(reports_queue.get(), 30)
    assert message.message_id == report["id"]
    assert mongo.reports.count_documents({}) == 1
    # a deleted message can be reported; its snapshot says so (for moderators only)
    status, late = post(stack, f"/v1/rooms/rp/messages/{gone['id']}/report", "bob",
                        {"reason": "abuse"})
    assert status == 201 and "snapshot" not in late, late
    await asyncio.wait_for(reports_queue.get(), 30)
    # who may list: the owner and admins; a member 403, others 404 (cannot see the room)
    assert stack.http("GET", "/v1/rooms/rp/reports", "bob")[0] == 403
    assert stack.http("GET", "/v1/rooms/rp/reports", "carol")[0] == 404
    assert stack.http("GET", "/v1/rooms/nowhere/reports", "olga")[0] == 404
    status, listed = stack.http("GET", "/v1/rooms/rp/reports", "olga")
    assert status == 200, listed
    assert [r["id"] for r in listed["reports"]] == [report["id"], late["id"]]
    assert listed["reports"][0]["snapshot"]["body"] == "buy pills"
    assert listed["reports"][1]["snapshot"]["deleted"] is True
    status, page = stack.http("GET", f"/v1/rooms/rp/reports?limit=1&after={report['id']}",
                              "olga")
    assert [r["id"] for r in page["reports"]] == [late["id"]], page
    # resolve: not a member, then the owner, idempotently; an admin sees it
    resolve = f"/v1/rooms/rp/reports/{report['id']}/resolve"
    assert post(stack, resolve, "bob", {"action": "dismissed"})[0] == 403
    status, done = post(stack, resolve, "olga", {"action": "warned", "note": "told"})
    assert status == 200 and done["state"] == "resolved", done
    assert (done["resolution"]["action"], done["resolution"]["by"]) == ("warned", "olga")
    status, same = post(stack, resolve, "root", {"action": "dismissed"}, roles=("admin",))
    assert (status, same["resolution"]["action"]) == (200, "warned"), same
    status, resolved = stack.http("GET", "/v1/rooms/rp/reports?state=resolved", "root",
                                  token=stack.token("root", roles=("admin",)))
    assert [r["id"] for r in resolved["reports"]] == [report["id"]], resolved
    status, still = stack.http("GET", "/v1/rooms/rp/reports", "olga")
    assert [r["id"] for r in still["reports"]] == [late["id"]]
    assert post(stack, "/v1/rooms/rp/reports/" + "0" * 21 + "/resolve", "olga",
                {"action": "removed"})[0] == 404


def test_hostile_reports_are_refused_and_store_nothing(
        stack: Stack, mongo: Database[dict[str, Any]]) -> None:
    stack.room("hx", "alice", "bob")
    stack.room("hy", "carol", "alice")
    status, sent = post(stack, "/v1/rooms/hx/messages", "alice", {"body": "hi"}, "k1")
    status, other = post(stack, "/v1/rooms/hy/messages", "alice", {"body": "yo"}, "k2")
    status, edit = post(stack, f"/v1/rooms/hx/messages/{sent['id']}/edit", "alice",
                        {"body": "hi!"}, "k3")
    assert status == 201, edit
    path = f"/v1/rooms/hx/messages/{sent['id']}/report"
    answer = httpx.post(stack.gateways[0].url(path), json={"reason": "spam"}, timeout=30)
    assert answer.status_code == 401
    for user, target, body, expected in [
            ("carol", sent["id"], {"reason": "spam"}, (403, "forbidden")),
            ("bob", other["id"], {"reason": "spam"}, (404, "not_found")),
            ("bob", edit["id"], {"reason": "spam"}, (404, "not_found")),
            ("bob", "no-such-message", {"reason": "spam"}, (404, "not_found")),
            ("bob", "x" * 65, {"reason": "spam"}, (400, "bad_request")),
            ("bob", sent["id"], b"{not json", (400, "bad_json")),
            ("bob", sent["id"], {"reason": "spam", "extra": 1}, (400, "bad_request")),
            ("bob", sent["id"], {"reason": "boring"}, (400, "bad_request")),
            ("bob", sent["id"], {}, (400, "bad_request")),
            ("bob", sent["id"], {"reason": "spam", "note": 5}, (400, "bad_request")),
            ("bob", sent["id"], {"reason": "spam", "note": "n" * 1001}, (400, "bad_request")),
            ("bob", sent["id"], {"reason": "spam", "note": "n" * 10240}, (413, "too_large"))]:
        status, answer_body = post(stack, f"/v1/rooms/hx/messages/{target}/report", user,
                                   body)
        assert (status, answer_body["error"]["code"]) == expected, (user, target, body)
    assert mongo.reports.count_documents({}) == 0
    # a flood: 10 at once, then 429 (nothing more stored either way: one per message)
    for _ in range(10):
        assert post(stack, path, "bob", {"reason": "spam"})[0] in (200, 201)
    status, limited = post(stack, path, "bob", {"reason": "spam"})
    assert (status, limited["error"]["code"]) == (429, "rate_limited"), limited
    assert mongo.reports.count_documents({}) == 1
    # examples/moderation_reports.py, as docs/moderation.md runs it, gets that report
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "moderation_reports.py"), "1"],
        env={**clean, "BURROW_BACKEND_URL": stack.vhost.url("burrow-backend")},
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    report_id = mongo.reports.find_one({})["_id"]  # type: ignore[index]
    assert done.stdout == (f"report {report_id}: bob reported alice's message #1 in hx "
                           "as spam: 'hi!'\n")
