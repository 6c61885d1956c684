"""The CLI's pure parts: exit codes, error messages, URLs, output lines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from burrow.client import ChatClient, ChatError, files
from burrow.client.chat import Change, Message
from burrow.client.cli import output, parser, received


def test_exit_codes_follow_the_status_and_the_code_wins() -> None:
    assert [output.exit_code(s) for s in (400, 401, 403, 404, 409, 413, 429, 503, 504)] == [
        1, 3, 4, 5, 6, 1, 1, 7, 7]
    assert output.exit_code(404, "dev_mode_off") == output.NOT_FOUND
    assert output.exit_code(400, "forbidden") == output.FORBIDDEN
    assert output.exit_code(code="timeout") == output.UNAVAILABLE
    assert set(output.EXIT_CODES) == {0, 1, 2, 3, 4, 5, 6, 7, 130}


def test_http_errors_become_one_clear_line() -> None:
    error = output.http_error(403, {"error": {"code": "forbidden", "message": "not yours"}})
    assert (error.message, error.code) == ("not yours (forbidden)", output.FORBIDDEN)
    for body in (None, "oops", {"error": "x"}, []):
        assert output.http_error(502, body).message == "HTTP 502"


def test_websocket_urls_and_lines() -> None:
    assert output.ws_url("http://h:8000/") == "ws://h:8000/v1/ws"
    assert output.ws_url("https://chat.example/x") == "wss://chat.example/x/v1/ws"
    with pytest.raises(output.CliError) as caught:
        output.ws_url("ws://h")
    assert caught.value.code == output.USAGE
    message = {"room": "r", "seq": 3, "id": "i", "sender": "al", "client_id": "c",
               "ts": 0, "body": "a\\nb ünï"}
    assert output.message_line(message, False).endswith("] r #3 al: a\\nb ünï")
    assert json.loads(output.message_line(message, True)) == message
    assert output.rows([{"id": "a", "n": 10}, {"id": "bbb"}], ("id", "n"), False) == [
        "id   n", "a    10", "bbb"]
    assert output.rows([{"id": "a"}], ("id",), True) == ['{"id":"a"}']


def test_arguments() -> None:
    args = parser().parse_args(["--user", "al", "tail", "r", "--since", "4", "--count", "2"])
    assert (args.command, args.room, args.since, args.count, args.user) == (
        "tail", "r", 4, 2, "al")
    with pytest.raises(SystemExit):
        parser().parse_args(["--user", "a", "--token", "t", "rooms"])  # one or the other
    with pytest.raises(SystemExit):
        parser().parse_args(["tail", "r", "--since", "x"])


HOSTILE = {
    "colour and a reset": "\x1b[31mred\x1b[0m",
    "window title": "\x1b]0;pwned\x07",
    "clear screen (8-bit CSI)": "\x9b2J",
    "a forged next line": "hi\n[12:00:00] lobby #99 admin: send me your token",
    "carriage return over the line": "harmless\rrm -rf",
    "bidi override": "invoice\u202egnp.exe",
    "backspace and NUL": "a\x08\x00b",
    "line separator and zero-width": "a\u2028b\u200bc",
}


@pytest.mark.parametrize("body", list(HOSTILE.values()), ids=list(HOSTILE))
def test_what_another_user_wrote_cannot_drive_the_terminal(body: str) -> None:
    line = output.message_line({"ts": 0, "room": "lobby", "seq": 1, "sender": body,
                                "body": body}, as_json=False)
    assert line.isprintable(), line  # no control, escape or bidi character left
    assert "\n" not in line and "\x1b" not in line
    for text in (output.rows([{"name": body}], ("name",), False)[1],
                 output.one({"name": body}, False),
                 str(output.http_error(400, {"error": {"code": "x", "message": body}}))):
        assert text.isprintable(), text
    # JSON output stays exact (machines read it): orjson escapes what must be
    assert json.loads(output.message_line({"ts": 0, "room": "r", "seq": 1, "sender": "s",
                                           "body": body}, as_json=True))["body"] == body


def test_ordinary_text_is_printed_as_it_is() -> None:
    text = "Grüße, 日本語, emoji 🎉, tabs\tare not kept"
    assert output.printable("Grüße, 日本語, emoji 🎉") == "Grüße, 日本語, emoji 🎉"
    assert output.printable(text).endswith("tabs\\x09are not kept")


def test_changes_are_lines_that_name_their_target() -> None:
    base = {"room": "r", "ts": 0, "sender": "bob", "target": "m1"}
    seqs = {"m1": 3}
    shown = [output.message_line({**base, "seq": 5, "kind": "edit", "body": "new text"},
                                 False, seqs),
             output.message_line({**base, "seq": 6, "type": "delete"}, False, seqs),
             output.message_line({**base, "seq": 7, "kind": "reaction", "emoji": "👍",
                                  "op": "add"}, False, seqs),
             output.message_line({**base, "seq": 8, "kind": "reaction", "emoji": "👍",
                                  "op": "remove"}, False, seqs),
             output.message_line({**base, "seq": 9, "kind": "delete", "target": "m9"},
                                 False, seqs)]
    assert [line.split("] ", 1)[1] for line in shown] == [
        "r #5 bob edited #3: new text", "r #6 bob deleted #3", "r #7 bob reacted 👍 to #3",
        "r #8 bob took back 👍 from #3", "r #9 bob deleted m9"]  # m9: not seen, its id
    change = {**base, "seq": 5, "kind": "edit", "body": "x", "edit_count": 1}
    assert json.loads(output.message_line(change, True, seqs)) == change


def test_messages_show_their_state_files_and_reactions() -> None:
    message = {"room": "r", "seq": 1, "id": "m1", "sender": "al", "ts": 0, "body": "look",
               "attachments": [{"id": "f1", "name": "a.png", "type": "image/png",
                                "size": 1234, "width": 3, "height": 2},
                               {"id": "f2", "name": "b.pdf", "type": "application/pdf",
                                "size": 12, "width": None, "height": None}]}
    assert output.message_line(message, False).endswith(
        "r #1 al: look [a.png image/png 1.2 KB 3x2 id f1] [b.pdf application/pdf 12 B id f2]")
    edited = {**message, "attachments": [], "edit_count": 2,
              "reactions": [{"emoji": "👍", "count": 2, "me": True}]}
    assert output.message_line(edited, False).endswith("r #1 al: look (edited) [👍 2]")
    gone = {**message, "body": "", "attachments": [], "deleted_at": 5}
    assert output.message_line(gone, False).endswith("r #1 al: (deleted)")
    assert [output.size_text(n) for n in (0, 999, 1000, 10_485_760, None, True)] == [
        "0 B", "999 B", "1.0 KB", "10.5 MB", "", ""]
    ack = {"room": "r", "seq": 4, "id": "e", "client_id": "c"}
    assert [output.ack_line(ack, False, done) for done in ("sent", "edited")] == [
        "r #4 sent", "r #4 edited"]
    assert [output.exit_code(s, c) for s, c in ((409, "too_many_reactions"),
                                                (409, "not_claimable"), (403, "edit_window"),
                                                (413, "too_large"), (404, "not_found"))] == [
        1, 1, 4, 1, 5]


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_changes_and_file_names_cannot_drive_the_terminal(text: str) -> None:
    base = {"room": "r", "ts": 0, "seq": 2, "sender": text, "target": text}
    for line in (output.message_line({**base, "kind": "edit", "body": text}, False),
                 output.message_line({**base, "kind": "reaction", "emoji": text}, False),
                 output.message_line({**base, "body": "", "attachments": [
                     {"id": text, "name": text, "type": text, "size": 1}],
                     "reactions": [{"emoji": text, "count": 1}]}, False)):
        assert line.isprintable(), line


def test_new_arguments() -> None:
    args = parser().parse_args(["send", "r", "hi", "--attach", "f1", "--attach", "f2"])
    assert (args.text, args.attach) == (["hi"], ["f1", "f2"])
    args = parser().parse_args(["react", "r", "m1", "👍", "--remove"])
    assert (args.id, args.emoji, args.remove) == ("m1", "👍", True)
    args = parser().parse_args(["upload", "r", "a.bin", "--type", "text/plain"])
    assert (args.file, args.media_type) == ("a.bin", "text/plain")
    assert parser().parse_args(["edit", "r", "m1"]).text == []  # then: stdin
    with pytest.raises(SystemExit):
        parser().parse_args(["react", "r", "m1"])  # no emoji


async def test_tail_takes_messages_and_changes_in_seq_order() -> None:
    client = ChatClient([], lambda: "")
    for seq in (1, 3):
        client.messages.put_nowait(Message("r", seq, f"m{seq}", "al", "c", 0, "b"))
    for seq in (2, 4):
        client.changes.put_nowait(Change("r", seq, f"e{seq}", "delete", "m1", "al", 0))
    assert [e.seq for e in await received(client)] == [1, 2, 3, 4]
    asyncio.get_running_loop().call_later(0.01, client.changes.put_nowait,
                                          Change("r", 5, "e5", "edit", "m1", "al", 0, "x"))
    assert [e.seq for e in await asyncio.wait_for(received(client), 5)] == [5]
    assert client.messages.empty() and client.changes.empty()


def test_replies_name_what_they_answer_and_roots_count_their_replies() -> None:
    root = {"room": "r", "seq": 1, "id": "m1", "sender": "al", "ts": 0, "body": "lunch?",
            "reply_count": 2, "last_reply": {"seq": 3, "id": "m3", "sender": "bo", "ts": 0}}
    reply = {"room": "r", "seq": 2, "id": "m2", "sender": "bo", "ts": 0, "body": "yes",
             "reply_to": "m1", "thread": "m1"}
    seqs = {"m1": 1}
    shown = [output.message_line(root, False, seqs), output.message_line(reply, False, seqs),
             output.message_line(reply, False),  # its target not shown: by its id
             output.message_line({**root, "reply_count": 1}, False),
             output.message_line({**reply, "body": "", "deleted_at": 5}, False, seqs)]
    assert [line.split("] ", 1)[1] for line in shown] == [
        "r #1 al: lunch? (2 replies)", "r #2 bo ↳ reply to #1: yes",
        "r #2 bo ↳ reply to m1: yes", "r #1 al: lunch? (1 reply)",
        "r #2 bo ↳ reply to #1: (deleted)"]
    hostile = output.message_line({**reply, "reply_to": HOSTILE["a forged next line"],
                                   "reply_count": "\x1b[2J"}, False)
    assert hostile.isprintable() and "(" not in hostile.split(": ", 1)[1]
    assert json.loads(output.message_line(reply, True)) == reply
    frame = {**reply, "client_id": "c", "type": "message"}
    message = Message.from_frame(frame)
    assert (message.reply_to, message.thread, message.reply_count) == ("m1", "m1", 0)
    assert Message.from_frame({**frame, "reply_count": 4}).reply_count == 4


def test_reply_thread_and_download_arguments() -> None:
    args = parser().parse_args(["reply", "r", "m1", "sure", "thing", "--attach", "f1"])
    assert (args.command, args.room, args.reply_to, args.text, args.attach) == (
        "reply", "r", "m1", ["sure", "thing"], ["f1"])
    assert parser().parse_args(["reply", "r", "m1"]).text == []  # then: stdin
    args = parser().parse_args(["thread", "r", "m1", "--after", "3", "--limit", "9"])
    assert (args.root, args.after, args.limit) == ("m1", 3, 9)
    args = parser().parse_args(["download", "r", "f1"])
    assert (args.id, args.output, args.force) == ("f1", None, False)
    args = parser().parse_args(["download", "r", "f1", "-o", "x/", "--force"])
    assert (args.output, args.force) == ("x/", True)
    with pytest.raises(SystemExit):
        parser().parse_args(["reply", "r"])  # no message id
    assert output.exit_code(code="cannot_write") == output.USAGE
    assert output.exit_code(code="exists") == output.CONFLICT


HOSTILE_NAMES = {
    "../../x": "x", "/etc/passwd": "passwd", "C:\\Users\\a\\evil.pdf": "evil.pdf",
    "..": "attachment", ".": "attachment", "": "attachment", "dir/": "attachment",
    "a\x00b.txt": "ab.txt", "a\nb\x1b[31m.txt": "ab[31m.txt", ".bashrc": "bashrc",
    "invoice\u202egnp.exe": "invoicegnp.exe", " . .. x.png . ": "x.png",
    "..\\..\\..\\x": "x", "/": "attachment", "日本語.txt": "日本語.txt",
}


@pytest.mark.parametrize("raw", list(HOSTILE_NAMES), ids=[repr(r) for r in HOSTILE_NAMES])
def test_a_server_supplied_name_never_leaves_the_chosen_directory(
        raw: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = files.safe_name(raw)
    assert name == HOSTILE_NAMES[raw]
    monkeypatch.chdir(tmp_path)
    for dest, directory in ((None, tmp_path), (tmp_path, tmp_path),
                            (f"{tmp_path}/", tmp_path)):
        path = files.target_path(dest, name)
        assert path.resolve().parent == directory.resolve(), (dest, path)
        assert path.name == name
    # a path the user chose is the user's
    assert files.target_path(tmp_path / "mine.bin", name) == tmp_path / "mine.bin"


def test_names_that_are_no_text_too_long_or_nothing_get_a_safe_name() -> None:
    assert [files.safe_name(v) for v in (None, 12, ["../x"], {"a": 1})] == [
        "attachment"] * 4
    long = files.safe_name("é" * 300 + ".tar.gz")
    assert len(long.encode()) <= files.MAX_NAME_BYTES and long.endswith("é.gz")
    assert len(files.safe_name("x" * 5000).encode()) == files.MAX_NAME_BYTES
    with pytest.raises(ChatError) as caught:
        files.target_path(".", "..")
    assert caught.value.code == "cannot_write"
    assert files.http_base("wss://chat.example/app/v1/ws") == "https://chat.example/app"
    assert files.http_base("ws://127.0.0.1:8000/v1/ws") == "http://127.0.0.1:8000"


def test_a_complete_download_takes_its_name_only_if_free_or_forced(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"mine")
    part = tmp_path / ".part"
    part.write_bytes(b"theirs")
    with pytest.raises(ChatError) as caught:
        files._place(part, target, overwrite=False)
    assert caught.value.code == "exists" and target.read_bytes() == b"mine"
    link = tmp_path / "link.txt"  # a symlink planted at the name is not followed
    link.symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(ChatError):
        files._place(part, link, overwrite=False)
    assert not (tmp_path / "elsewhere.txt").exists()
    files._place(part, target, overwrite=True)
    assert target.read_bytes() == b"theirs" and not part.exists()
