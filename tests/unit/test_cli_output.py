"""The CLI's pure parts: exit codes, error messages, URLs, output lines."""

from __future__ import annotations

import json

import pytest

from burrow.client.cli import output, parser


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
