"""The ``burrow`` command against the real stack, run as a process (``python -m burrow.client.cli``).

Send and tail round trip (lines from stdin, one message each, in order), resume from a
seq, history, rooms and members, devices, dev tokens (local and from a gateway in dev
mode); an upload sent with a message, edited, reacted to and deleted, as tail and
history show them; replies, a thread, and a file downloaded (never over a file); and
every failure a script must tell apart: a bad or missing token (3), a room one is not in
(4), nothing there (5), already there (6), no gateway (7), usage (2), the server's
refusals of uploads and changes (1, 4, 5).
"""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import jwt
import pytest

from burrow.client.cli import output
from burrow.devstack import ports
from tests.conftest import JWT_SECRET
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
T = 60  # seconds a command may take on a busy machine


def cli(url: str, *args: str, stdin: str = "",
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``burrow --url URL ARGS...`` to its end (bounded)."""
    return subprocess.run([sys.executable, "-m", "burrow.client.cli", "--url", url, *args],
                          input=stdin, capture_output=True, text=True, timeout=T, check=False,
                          cwd=cwd)


def burrow(stack: Stack, *args: str, user: str | None = None, stdin: str = "",
           gateway: int = 0, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as *user* (a test token) against a gateway of the stack."""
    who = ["--token", stack.token(user)] if user else []
    return cli(stack.gateways[gateway].url(""), *who, *args, stdin=stdin, cwd=cwd)


def lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


async def test_send_and_tail_round_trip_resume_and_history(stack: Stack) -> None:
    stack.room("lobby", "alice", "bob")
    gateway = stack.gateways[0].url("")
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "burrow.client.cli", "--url", gateway, "--token", stack.token("bob"),
        "--json", "tail", "lobby", "--since", "0", "--count", "4",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    sent = burrow(stack, "--json", "send", "lobby", user="alice",
                  stdin="one\ntwo\n\n  \nthree: with spaces \n")
    acks = [json.loads(line) for line in lines(sent)]
    assert [(a["room"], a["seq"]) for a in acks] == [("lobby", 1), ("lobby", 2), ("lobby", 3)]
    assert lines(burrow(stack, "send", "lobby", "hello", "world", user="alice")) == [
        "lobby #4 sent"]
    out, err = await asyncio.wait_for(tail.communicate(), T)
    assert tail.returncode == 0, err
    got = [json.loads(line) for line in out.decode().splitlines()]
    assert [(m["seq"], m["sender"], m["body"]) for m in got] == [
        (1, "alice", "one"), (2, "alice", "two"), (3, "alice", "three: with spaces "),
        (4, "alice", "hello world")]
    assert [m["id"] for m in got] == [a["id"] for a in acks] + [got[3]["id"]]

    # resume from a seq: exactly what follows it
    resumed = lines(burrow(stack, "tail", "lobby", "--since", "2", "--count", "2", user="bob"))
    assert [line.split("] ", 1)[1] for line in resumed] == [
        "lobby #3 alice: three: with spaces ", "lobby #4 alice: hello world"]
    history = lines(burrow(stack, "--json", "history", "lobby", "--after", "1", "--before", "4",
                           user="bob"))
    assert [json.loads(line)["seq"] for line in history] == [2, 3]

    # tail goes on across a gateway restart (kill -9, back on the same port)
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "burrow.client.cli", "--url", gateway, "--token", stack.token("bob"),
        "tail", "lobby", "--since", "4", "--count", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines(burrow(stack, "send", "lobby", "before the restart", user="alice"))
    assert tail.stdout is not None
    first = await asyncio.wait_for(tail.stdout.readline(), T)
    assert first.decode().endswith("lobby #5 alice: before the restart\n")
    old = stack.gateways[0]
    old.app.signal(signal.SIGKILL)
    await asyncio.to_thread(stack.add_gateway, port=old.port)
    lines(burrow(stack, "send", "lobby", "after the restart", user="alice", gateway=1))
    out, err = await asyncio.wait_for(tail.communicate(), T)
    assert tail.returncode == 0, err
    assert out.decode().endswith("lobby #6 alice: after the restart\n")


def failed(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    message = done.stderr.strip()
    assert message.startswith("burrow: error: ") and "Traceback" not in message, message
    for word in words:
        assert word in message, message


async def test_refusals_exit_with_their_codes_and_clear_messages(shared_stack: Stack) -> None:
    shared_stack.room("club1", "alice")
    url = shared_stack.gateways[0].url("")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return cli(url, *args, stdin=stdin)

    expired = shared_stack.token("alice", ttl=-60)
    for args in (("send", "club1", "hi"), ("tail", "club1"), ("rooms",)):
        failed(run("--token", "not-a-jwt", *args), output.UNAUTHORIZED, "unauthorized")
        failed(run("--token", expired, *args), output.UNAUTHORIZED, "unauthorized")
    failed(run("rooms"), output.UNAUTHORIZED, "no token")
    carol = shared_stack.token("carol")
    failed(run("--token", carol, "tail", "club1", "--since", "0"), output.FORBIDDEN,
           "not a member of room club1")
    failed(run("--token", carol, "send", "club1", stdin="let me in\n"), output.FORBIDDEN,
           "not a member of room club1")
    failed(run("--token", carol, "history", "club1"), output.FORBIDDEN, "not a member")
    failed(run("--token", carol, "add", "club1", "dave"), output.FORBIDDEN, "owner")
    alice = shared_stack.token("alice")
    failed(run("--token", alice, "create", "club1"), output.CONFLICT, "exists")
    failed(run("--token", alice, "remove", "club1", "zed"), output.NOT_FOUND, "zed")
    failed(run("--token", alice, "send", "bad room!", "x"), output.REFUSED, "bad_room")
    failed(run("--token", alice, "send", "club1", "x" * 20000), output.REFUSED, "too_large")
    failed(run("--token", alice, "history", "club1", "--limit", "9999"), output.REFUSED,
           "limit")
    nobody = f"http://127.0.0.1:{ports.free_port()}"
    for args in (("rooms",), ("tail", "club1")):
        failed(cli(nobody, "--token", alice, *args), output.UNAVAILABLE,
               "cannot reach the gateway")
    usage = run("--token", alice, "tail")
    assert usage.returncode == output.USAGE and "required" in usage.stderr
    failed(run("--url", "ftp://x", "--token", alice, "rooms"), output.USAGE, "http://")
    # nothing of it was stored
    assert lines(burrow(shared_stack, "--json", "history", "club1", user="alice")) == []


async def test_dev_tokens_rooms_members_and_devices(shared_stack: Stack) -> None:
    local = lines(burrow(shared_stack, "token", "zoe", "--secret", JWT_SECRET, "--ttl", "60",
                         "--admin"))
    claims = jwt.decode(local[0], JWT_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["exp"] - claims["iat"], claims["roles"]) == (
        "zoe", 60, ["admin"])
    failed(burrow(shared_stack, "token", "zoe"), output.NOT_FOUND, "not in dev mode")
    shared_stack.add_gateway(BURROW_DEV_MODE="true")
    minted = lines(burrow(shared_stack, "token", "zoe", gateway=1))[0]
    assert jwt.decode(minted, JWT_SECRET, algorithms=["HS256"])["sub"] == "zoe"

    def as_user(user: str, *args: str) -> list[str]:
        return lines(cli(shared_stack.gateways[1].url(""), "--user", user, *args))

    def objects(found: list[str]) -> list[Any]:
        return [json.loads(line) for line in found]

    assert objects(as_user("zoe", "--json", "create", "den2", "--name", "Den", "--member",
                           "yan")) == [{"id": "den2", "name": "Den", "role": "owner"}]
    assert objects(as_user("zoe", "--json", "add", "den2", "xi", "wu")) == [
        {"room": "den2", "user": "xi", "added": True}, {"room": "den2", "user": "wu",
                                                       "added": True}]
    assert as_user("zoe", "members", "den2")[0].split() == ["user", "role", "read_seq"]
    members = objects(as_user("zoe", "--json", "members", "den2"))
    assert sorted(m["user"] for m in members) == ["wu", "xi", "yan", "zoe"]
    assert objects(as_user("zoe", "--json", "remove", "den2", "wu")) == [
        {"room": "den2", "user": "wu", "removed": True}]
    assert [r["id"] for r in objects(as_user("yan", "--json", "rooms"))] == ["den2"]

    device = objects(as_user("yan", "--json", "device", "register", "--platform", "fcm",
                             "--token", "fcm-token-0123456789", "--app", "demo"))[0]
    assert (device["platform"], device["app"]) == ("fcm", "demo")
    listed = objects(as_user("yan", "--json", "device", "list"))
    assert [(d["id"], d["token_suffix"]) for d in listed] == [(device["id"], "56789")]
    as_user("yan", "device", "remove", device["id"])
    assert as_user("yan", "--json", "device", "list") == []


def png(width: int, height: int) -> bytes:
    """A valid PNG (8-bit greyscale, all black), CRCs and all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    rows = b"".join(b"\x00" * (width + 1) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def after_clock(found: list[str]) -> list[str]:
    return [line.rstrip("\n").split("] ", 1)[1] for line in found]


async def test_upload_attach_edit_react_delete_in_tail_and_history(shared_stack: Stack,
                                                                   tmp_path: Path) -> None:
    shared_stack.room("pics", "alice", "bob")
    gateway = shared_stack.gateways[0].url("")
    live = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "burrow.client.cli", "--url", gateway, "--token", shared_stack.token("bob"),
        "tail", "pics", "--since", "0", "--count", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    image = tmp_path / "dot.png"
    image.write_bytes(png(3, 2))
    [uploaded] = [json.loads(line) for line in lines(burrow(
        shared_stack, "--json", "upload", "pics", str(image), user="alice"))]
    assert {k: uploaded[k] for k in ("name", "type", "size", "width", "height")} == {
        "name": "dot.png", "type": "image/png", "size": len(png(3, 2)), "width": 3,
        "height": 2}  # the type guessed from the name
    file_id = uploaded["id"]
    [ack] = [json.loads(line) for line in lines(burrow(
        shared_stack, "--json", "send", "pics", "look", "--attach", file_id, user="alice"))]
    message = ack["id"]
    # the tail has the message (live or replayed) before it changes: shown as sent
    assert live.stdout is not None
    first = (await asyncio.wait_for(live.stdout.readline(), T)).decode()
    assert lines(burrow(shared_stack, "edit", "pics", message, user="alice",
                        stdin="look at this\n")) == ["pics #2 edited"]
    assert lines(burrow(shared_stack, "react", "pics", message, "👍", user="bob")) == [
        "pics #3 reacted"]
    assert lines(burrow(shared_stack, "react", "pics", message, "🎉", user="bob")) == [
        "pics #4 reacted"]
    assert lines(burrow(shared_stack, "delete", "pics", message, user="alice")) == [
        "pics #5 deleted"]

    out, err = await asyncio.wait_for(live.communicate(), T)
    assert live.returncode == 0, err
    size = f"{len(png(3, 2))} B"
    assert after_clock([first, *out.decode().splitlines()]) == [
        f"pics #1 alice: look [dot.png image/png {size} 3x2 id {file_id}]",
        "pics #2 alice edited #1: look at this",
        "pics #3 bob reacted 👍 to #1",
        "pics #4 bob reacted 🎉 to #1",
        "pics #5 alice deleted #1"]
    # replayed afterwards, in the current state: a tombstone, and the edit's text gone
    # with it (docs/protocol.md: a delete removes the text)
    now = ["pics #1 alice: (deleted)", "pics #2 alice edited #1: ",
           "pics #3 bob reacted 👍 to #1", "pics #4 bob reacted 🎉 to #1",
           "pics #5 alice deleted #1"]
    assert after_clock(lines(burrow(shared_stack, "tail", "pics", "--since", "0", "--count", "5",
                                    user="bob"))) == now
    assert after_clock(lines(burrow(shared_stack, "history", "pics", user="bob"))) == now
    history = [json.loads(line) for line in lines(burrow(shared_stack, "--json", "history", "pics",
                                                         user="bob"))]
    assert [(m["type"], m["seq"]) for m in history] == [
        ("message", 1), ("edit", 2), ("reaction", 3), ("reaction", 4), ("delete", 5)]
    # the file went with the message
    assert shared_stack.http("GET", f"/v1/rooms/pics/attachments/{file_id}", "bob")[0] == 404


async def test_upload_and_change_refusals_are_one_line_with_their_codes(
        shared_stack: Stack, tmp_path: Path) -> None:
    shared_stack.room("club4", "alice", "bob")
    small = shared_stack.add_gateway(BURROW_ATTACHMENT_MAX_BYTES="100").url("")
    alice, bob = shared_stack.token("alice"), shared_stack.token("bob")
    [ack] = [json.loads(line) for line in lines(burrow(shared_stack, "--json", "send", "club4",
                                                       "mine", user="alice"))]
    big = tmp_path / "big.png"
    big.write_bytes(png(200, 200))
    assert big.stat().st_size > 100
    failed(cli(small, "--token", alice, "upload", "club4", str(big)), output.REFUSED,
           "too_large")
    # refused at its Content-Length while the client still sends: the 413, not a reset
    big.write_bytes(png(200, 200) + bytes(8_000_000))
    failed(cli(small, "--token", alice, "upload", "club4", str(big)), output.REFUSED,
           "too_large")
    failed(burrow(shared_stack, "upload", "club4", str(tmp_path / "missing.png"), user="alice"),
           output.USAGE, "cannot read", "missing.png")
    failed(burrow(shared_stack, "upload", "club4", str(tmp_path), user="alice"), output.USAGE,
           "cannot read")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not an image at all")
    failed(burrow(shared_stack, "upload", "club4", str(fake), user="alice"), output.REFUSED,
           "wrong_type")
    failed(burrow(shared_stack, "react", "club4", ack["id"], "👍" * 17, user="bob"),
           output.REFUSED, "emoji")
    failed(burrow(shared_stack, "edit", "club4", "no-such-id", "x", user="alice"),
           output.NOT_FOUND, "not_found")
    failed(burrow(shared_stack, "delete", "club4", "no-such-id", user="alice"), output.NOT_FOUND,
           "not_found")
    failed(burrow(shared_stack, "react", "club4", "no-such-id", "👍", user="alice"),
           output.NOT_FOUND, "not_found")
    failed(cli(shared_stack.gateways[0].url(""), "--token", bob, "edit", "club4", ack["id"], "hijack"),
           output.FORBIDDEN, "forbidden")
    failed(burrow(shared_stack, "send", "club4", "x", "--attach", "0" * 24, user="alice"),
           output.REFUSED, "not_claimable")
    # nothing of it was stored
    assert [json.loads(line)["body"] for line in lines(burrow(
        shared_stack, "--json", "history", "club4", user="alice"))] == ["mine"]


def acked(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(done)]


async def test_replies_a_thread_and_a_download(shared_stack: Stack, tmp_path: Path) -> None:
    shared_stack.room("den", "alice", "bob")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"bring a map\n")
    [root] = acked(burrow(shared_stack, "--json", "send", "den", "hike?", user="alice"))
    [upload] = acked(burrow(shared_stack, "--json", "upload", "den", str(notes), user="bob"))
    [first] = acked(burrow(shared_stack, "--json", "reply", "den", root["id"], "yes",
                           "--attach", upload["id"], user="bob"))
    assert lines(burrow(shared_stack, "reply", "den", first["id"], user="alice",
                        stdin="at nine\n\nsee you\n")) == ["den #3 sent", "den #4 sent"]
    failed(burrow(shared_stack, "reply", "den", "no-such-id", "lost", user="alice"),
           output.NOT_FOUND, "not_found")

    file = f"[notes.txt text/plain 12 B id {upload['id']}]"
    replies = [f"den #2 bob ↳ reply to #1: yes {file}", "den #3 alice ↳ reply to #2: at nine",
               "den #4 alice ↳ reply to #2: see you"]
    assert after_clock(lines(burrow(shared_stack, "history", "den", user="bob"))) == [
        "den #1 alice: hike? (3 replies)", *replies]
    tailed = after_clock(lines(burrow(shared_stack, "tail", "den", "--since", "1", "--count", "3",
                                      user="bob")))
    assert tailed == [replies[0].replace("#1", root["id"]), *replies[1:]]  # #1 not shown
    thread = lines(burrow(shared_stack, "thread", "den", root["id"], user="alice"))
    assert after_clock(thread) == [replies[0].replace("#1", root["id"]), *replies[1:]]
    found = acked(burrow(shared_stack, "--json", "thread", "den", root["id"], "--after", "2",
                         user="alice"))
    assert [(m["seq"], m["thread"]) for m in found] == [(3, root["id"]), (4, root["id"])]

    # the file: under its own name in the current directory, never over a file there
    here, file_id = tmp_path / "here", upload["id"]
    here.mkdir()
    [saved] = acked(burrow(shared_stack, "--json", "download", "den", file_id, user="alice",
                           cwd=here))
    assert saved == {"id": file_id, "name": "notes.txt", "type": "text/plain", "size": 12,
                     "path": "notes.txt"}
    assert (here / "notes.txt").read_bytes() == b"bring a map\n"
    (here / "notes.txt").write_bytes(b"mine")
    failed(burrow(shared_stack, "download", "den", file_id, user="alice", cwd=here),
           output.CONFLICT, "exists", "--force")
    assert (here / "notes.txt").read_bytes() == b"mine"
    assert lines(burrow(shared_stack, "download", "den", file_id, "--force", user="alice",
                        cwd=here)) == [
        f"id: {file_id}  name: notes.txt  type: text/plain  size: 12  path: notes.txt"]
    assert (here / "notes.txt").read_bytes() == b"bring a map\n"
    lines(burrow(shared_stack, "download", "den", file_id, "-o", str(tmp_path / "copy"),
                 user="bob"))
    assert (tmp_path / "copy").read_bytes() == b"bring a map\n"
    failed(burrow(shared_stack, "download", "den", file_id, "-o", str(tmp_path / "no" / "x"),
                  user="bob"), output.USAGE, "cannot write")
    failed(burrow(shared_stack, "download", "den", "0" * 24, user="bob", cwd=here),
           output.NOT_FOUND, "not_found")
    failed(burrow(shared_stack, "download", "den", file_id, user="carol", cwd=here),
           output.FORBIDDEN, "forbidden")
    assert [p.name for p in here.iterdir()] == ["notes.txt"]  # no partial file left
