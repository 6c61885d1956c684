"""Logging for every Burrow process: one handler on the root logger, Sanic's included.

Sanic installs its own handlers unless an app is built with ``configure_logging=False``;
Burrow's apps are, so Sanic's records reach this one handler exactly once.

Two formats. On a terminal, a line a person reads. Elsewhere (a container, a file, a
log shipper), one JSON object per line that ELK or Loki take without parsing rules:
``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``process`` (gateway, sequencer,
notifier...), ``pid``, ``logger``, ``event`` (the message), and, where the code knows
them, the fields of :data:`CONTEXT`, passed as ``extra={"room": ..., "msg_id": ...}``.
One message can be followed from the gateway to the sequencer, the fan-out and the push
worker by its ``msg_id``.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

import orjson

# The context fields a record may carry (bounded: anything else in ``extra`` is ignored,
# so a log line never grows a field per call site).
CONTEXT: Final = ("room", "user", "conn", "msg_id", "client_id", "seq", "shard", "queue",
                  "device")
OWN_LOGGERS: Final = ("burrow", "gateway", "consumers", "queues")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Credentials that can reach a log line by way of a URL, a header or an exception's text
# (Sanic logs the full URL of a request whose handler raised): a token in the query, a
# bearer header, a JWT anywhere, a password in any URL (AMQP, MongoDB...), a one-time
# WebSocket ticket (in a URL or a JSON answer): worth a connection until it is used.
SECRETS: Final = (
    (re.compile(r"(access_token=)[^&\s'\"]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(\bticket=)[^&\s'\"]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"([\"']ticket[\"']:\s*[\"'])[^\"']+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(bearer\s+)[^\s'\",]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"eyJ[\w-]*\.eyJ[\w-]*\.[\w-]*"), "[jwt redacted]"),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE),
     r"\1[redacted]@"),  # any scheme: amqp(s), mongodb(+srv), redis (no user), smtp(s)
)


def redact(text: str) -> str:
    """*text* with every credential :data:`SECRETS` knows replaced."""
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on a field it cannot encode (``str``)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "process": self.process, "pid": record.process,
            "logger": record.name, "event": redact(record.getMessage())}
        for name in CONTEXT:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with the context fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        context = [f"{name}={record.__dict__[name]}" for name in CONTEXT
                   if record.__dict__.get(name) is not None]
        return f"{line} [{' '.join(context)}]" if context else line


def formatter(fmt: str, process: str, tty: bool) -> logging.Formatter:
    """The formatter for ``BURROW_LOG_FORMAT`` *fmt* (auto, json, text)."""
    if fmt == "json" or (fmt == "auto" and not tty):
        return JsonFormatter(process)
    return TextFormatter()


def _log_unraisable(unraisable: Any) -> None:
    """An exception Python cannot raise (in a destructor, or in a coroutine closed by the
    garbage collector: Sanic abandons a shutdown coroutine when a stop signal interrupts
    it) goes to the log as a line like any other, not as bare text that breaks a JSON log.
    """
    exc_info = (None if unraisable.exc_type is None else
                (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))
    logging.getLogger("burrow.unraisable").warning(
        "%s: %r", unraisable.err_msg or "Exception ignored in", unraisable.object,
        exc_info=exc_info)


def setup(level: str, fmt: str = "auto", process: str = "burrow") -> None:
    sys.unraisablehook = _log_unraisable
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, process, sys.stderr.isatty()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # DEBUG is for Burrow's own per-message lines (gateway, sequencer, notifier): the
    # libraries' debug output (every AMQP frame, every database command) stays out.
    root.setLevel(max(logging.getLevelName(level), logging.INFO))
    for ours in OWN_LOGGERS:
        logging.getLogger(ours).setLevel(level)
    # aio-pika logs every failed reconnect attempt at WARNING with a traceback-sized line;
    # Burrow's own monitor already says "broker is down/up" once per change.
    logging.getLogger("aio_pika.robust_connection").setLevel(max(logging.getLevelName(level),
                                                                  logging.ERROR))
