"""burrow.runtime.logs: JSON lines for machines, readable lines for people, the same context."""

from __future__ import annotations

import gc
import json
import logging
import sys
import types
from collections.abc import Generator

import pytest

from burrow.runtime import logs
from burrow.runtime.settings import ConfigError, Settings


def record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("gateway.node", logging.WARNING, __file__, 1, message, args,
                            exc_info)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_fields_and_the_context_a_log_shipper_indexes() -> None:
    line = logs.JsonFormatter("gateway").format(
        record("send %s refused", "c1", room="lobby", user="ann", msg_id="m-1", color="red"))
    assert "\n" not in line
    out = json.loads(line)
    assert out["event"] == "send c1 refused"
    assert (out["level"], out["process"], out["logger"]) == ("WARNING", "gateway", "gateway.node")
    assert out["ts"].endswith("+00:00") and "T" in out["ts"]
    assert (out["room"], out["user"], out["msg_id"]) == ("lobby", "ann", "m-1")
    assert "color" not in out  # only the known context fields


def test_a_json_line_holds_the_traceback_and_survives_odd_values() -> None:
    out = json.loads(logs.JsonFormatter("sequencer").format(
        record("with \"quotes\"\nand a newline", exc=True, seq=object())))
    assert out["event"] == "with \"quotes\"\nand a newline"
    assert "ValueError: boom" in out["exc"]
    assert out["seq"].startswith("<object")


def test_text_lines_append_the_context() -> None:
    line = logs.TextFormatter().format(record("hello", room="lobby", conn="c9"))
    assert line.endswith("WARNING gateway.node: hello [room=lobby conn=c9]")
    assert logs.TextFormatter().format(record("plain")).endswith("gateway.node: plain")


@pytest.mark.parametrize(("fmt", "tty", "kind"), [
    ("auto", True, logs.TextFormatter), ("auto", False, logs.JsonFormatter),
    ("json", True, logs.JsonFormatter), ("text", False, logs.TextFormatter)])
def test_the_format_follows_the_setting_and_the_terminal(fmt: str, tty: bool,
                                                         kind: type) -> None:
    assert isinstance(logs.formatter(fmt, "gateway", tty), kind)


def test_an_unknown_log_format_is_a_config_error() -> None:
    env = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:5672/burrow"}
    assert Settings.from_env(env).log_format == "auto"
    with pytest.raises(ConfigError, match="BURROW_LOG_FORMAT='xml' is invalid"):
        Settings.from_env({**env, "BURROW_LOG_FORMAT": "xml"})


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(("text", "leaked"), [
    (f"Exception occurred while handling uri: 'http://gw/v1/ws?access_token={JWT}&x=1'", JWT),
    ("GET /v1/sse?rooms=a&ACCESS_TOKEN=opaque-token-123 failed", "opaque-token-123"),
    (f"headers: {{'authorization': 'Bearer {JWT}'}}", JWT),
    (f"a token somewhere: {JWT}.", JWT),
    ("broker amqp://burrow-gateway:s3cret-pass@rabbit:5672/burrow unreachable", "s3cret-pass"),
    ("mongodb://admin:hunter2@db:27017/burrow?authSource=admin down", "hunter2"),
    ("Exception occurred while handling uri: 'http://gw/v1/ws?ticket=Zx9_-aB3&x=1'",
     "Zx9_-aB3"),
    ("GET /v1/sse?rooms=a&TICKET=Q7w-ticket-value failed", "Q7w-ticket-value"),
    ('answer {"ticket": "Tk_4f-one-time", "expires_in": 30}', "Tk_4f-one-time"),
    ("args {'ticket': 'Tk_py-repr'}", "Tk_py-repr"),
])
def test_credentials_never_reach_a_log_line(text: str, leaked: str) -> None:
    for formatter in (logs.JsonFormatter("gateway"), logs.TextFormatter()):
        line = formatter.format(record(text.replace("%", "%%")))
        assert leaked not in line
        assert "redacted" in line
    try:
        raise RuntimeError(text)
    except RuntimeError:
        rec = logging.LogRecord("sanic.error", logging.ERROR, __file__, 1, "boom", (),
                                sys.exc_info())
    assert leaked not in logs.JsonFormatter("gateway").format(rec)
    assert leaked not in logs.TextFormatter().format(rec)


def test_what_is_not_a_credential_is_left_alone() -> None:
    text = "room lobby seq 42 amqp://rabbit:5672/burrow eyJ-not-a-jwt bearer"
    assert logs.redact(text) == text


def test_an_exception_python_cannot_raise_is_a_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A coroutine closed by the garbage collector while it still runs (Sanic abandons a
    shutdown coroutine a stop signal interrupts) prints "Exception ignored in" on stderr;
    with the logs set up it is a JSON line like the others."""
    logs.setup("INFO", "json", "gateway")
    try:
        @types.coroutine
        def pause() -> Generator[None, None, None]:
            yield

        async def stubborn() -> None:
            try:
                await pause()
            finally:
                await pause()  # awaits while being closed: RuntimeError

        coroutine = stubborn()
        coroutine.send(None)
        del coroutine
        gc.collect()
    finally:
        sys.unraisablehook = sys.__unraisablehook__
        logging.getLogger().handlers.clear()
    [line] = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["process"]) == ("WARNING", "gateway")
    assert entry["event"].startswith("Exception ignored in: <coroutine object")
    assert "RuntimeError" in entry["exc"]
