"""What the CLI prints and how it exits: pure functions, tested without servers.

Readable lines by default; with ``--json`` one JSON object per line (JSON Lines), so a
script can pipe ``burrow tail`` into ``jq``. Exit codes are part of the interface
(:data:`EXIT_CODES`, docs/cli.md): scripts branch on them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import orjson

OK, REFUSED, USAGE, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, UNAVAILABLE = range(8)
INTERRUPTED = 130  # Ctrl-C, as shells count it

EXIT_CODES: Mapping[int, str] = {
    OK: "done",
    REFUSED: "the server refused the request (bad input, too large, rate limited...)",
    USAGE: "wrong command-line arguments",
    UNAUTHORIZED: "the token is missing, malformed, expired or refused (401, close 4401)",
    FORBIDDEN: "not allowed: not a member of the room, not its owner (403)",
    NOT_FOUND: "no such room, member, device, message or attachment (404), or dev mode "
               "is off",
    CONFLICT: "it exists already (409; download: the file, without --force)",
    UNAVAILABLE: "the gateway cannot be reached, or its broker or database is down (503)",
    INTERRUPTED: "interrupted (Ctrl-C)",
}

_BY_STATUS = {401: UNAUTHORIZED, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT,
              502: UNAVAILABLE, 503: UNAVAILABLE, 504: UNAVAILABLE}
_BY_CODE = {"unauthorized": UNAUTHORIZED, "forbidden": FORBIDDEN, "not_found": NOT_FOUND,
            "dev_mode_off": NOT_FOUND, "exists": CONFLICT, "unavailable": UNAVAILABLE,
            "timeout": UNAVAILABLE, "unreachable": UNAVAILABLE, "edit_window": FORBIDDEN,
            "storage_unavailable": UNAVAILABLE,  # an S3 gateway's bucket away (503)
            # 409s that are no "exists already": a refusal (as over the WebSocket)
            "too_many_reactions": REFUSED, "not_claimable": REFUSED,
            "bad_mention": REFUSED, "room_too_large": REFUSED,
            # download: the file is there already; its directory is missing or locked
            "cannot_write": USAGE}


class CliError(Exception):
    """Ends the command: *message* goes to stderr, the process exits with *code*."""

    def __init__(self, message: str, code: int = REFUSED) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def exit_code(status: int | None = None, code: str | None = None) -> int:
    """The exit code for an HTTP status or a Burrow error code (the code wins)."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    return _BY_STATUS.get(status or 0, REFUSED)


def http_error(status: int, body: Any) -> CliError:
    """A CliError from an HTTP error answer ``{"error": {"code", "message"}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return CliError(f"HTTP {status}", exit_code(status))
    code, message = printable(error.get("code", "")), printable(error.get("message", ""))
    return CliError(f"{message} ({code})" if code else message, exit_code(status, code))


def ws_url(base: str) -> str:
    """``http(s)://host:port[/prefix]`` -> the WebSocket URL ``ws(s)://.../v1/ws``."""
    base = base.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/v1/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + "/v1/ws"
    raise CliError(f"--url must start with http:// or https://, not {base!r}", USAGE)


def clock(ts_ms: int) -> str:
    return datetime.datetime.fromtimestamp(ts_ms / 1000).strftime("%H:%M:%S")


# What another user wrote must not drive the reader's terminal: escape sequences (colours,
# cursor moves, a rewritten title, a fake prompt), a newline that forges the next line,
# bidi controls that reorder what is shown. Every character Python does not call
# printable (controls, format characters such as bidi overrides and zero-width ones,
# line separators) is shown as a visible escape instead.
def printable(value: object) -> str:
    """*value* as text that is safe to print on a terminal."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in text)


CHANGE_KINDS = frozenset({"edit", "delete", "reaction"})


def message_line(message: Mapping[str, Any], as_json: bool,
                 seqs: Mapping[str, int] | None = None) -> str:
    """A message, or a change event (``kind`` from ChatClient's Change, ``type`` in v2
    history); *seqs* (message id -> seq) names a change's target, and a reply's
    message, by its seq."""
    if as_json:
        return orjson.dumps(dict(message)).decode()
    head = f"[{clock(message['ts'])}] {printable(message['room'])} #{message['seq']} " \
           f"{printable(message['sender'])}"
    kind = message.get("kind") or message.get("type")
    if kind in CHANGE_KINDS:
        return f"{head} {change_text(message, kind, seqs or {})}"
    if kind == "moderation":  # docs/moderation.md
        text = f"{head} {printable(message.get('action', ''))}"
        if message.get("user") is not None:
            text += f" {printable(message['user'])}"
        if message.get("seconds") is not None:
            text += f" ({printable(message['seconds'])} s)"
        return text + (f": {printable(message['reason'])}" if message.get("reason") else "")
    if message.get("reply_to"):
        head += f" ↳ reply to {seq_or_id(str(message['reply_to']), seqs or {})}"
    if message.get("deleted_at") is not None:
        return f"{head}: (deleted)"
    text = printable(message.get("body", ""))
    if message.get("edit_count"):
        text += " (edited)"
    for item in message.get("attachments") or []:
        text += " " + attachment_text(item)
    mentioned = mentions_text(message)
    if mentioned:
        text += f" ({mentioned})"
    reactions = [f"{printable(r.get('emoji', ''))} {r.get('count', 0)}"
                 for r in message.get("reactions") or [] if isinstance(r, Mapping)]
    if reactions:
        text += " [" + ", ".join(reactions) + "]"
    count = message.get("reply_count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        text += f" ({count} {'reply' if count == 1 else 'replies'})"
    return f"{head}: {text}"


def mentions_text(message: Mapping[str, Any]) -> str:
    """``@bob @room``: whom a message mentions, from a received Message's fields
    (``mentions`` ids, ``mention_room``) or a history entry's ``mentions`` object."""
    value = message.get("mentions")
    if isinstance(value, Mapping):
        users, room = value.get("users") or [], value.get("room") is True
    else:
        users, room = value or [], message.get("mention_room") is True
    names = [f"@{printable(str(u))}" for u in users] + (["@room"] if room else [])
    return " ".join(names)


def change_text(change: Mapping[str, Any], kind: str, seqs: Mapping[str, int]) -> str:
    """``edited #3: new text``, ``deleted #3``, ``reacted 👍 to #3``, ``took back 👍
    from #3`` (the target's id when its seq is not known)."""
    target = seq_or_id(str(change.get("target", "")), seqs)
    emoji = printable(change.get("emoji") or "")
    if kind == "edit":
        return f"edited {target}: {printable(change.get('body') or '')}"
    if kind == "delete":
        return f"deleted {target}"
    if change.get("op") == "remove":
        return f"took back {emoji} from {target}"
    return f"reacted {emoji} to {target}"


def seq_or_id(message_id: str, seqs: Mapping[str, int]) -> str:
    """``#SEQ`` for a message shown before (its seq known), else its id."""
    return f"#{seqs[message_id]}" if message_id in seqs else printable(message_id)


def attachment_text(item: Any) -> str:
    """``[photo.png image/png 1.2 KB 640x480 id 65f...]``."""
    if not isinstance(item, Mapping):
        return "[attachment]"
    parts = [printable(item.get("name", "")), printable(item.get("type", "")),
             size_text(item.get("size"))]
    if item.get("width") and item.get("height"):
        parts.append(f"{item['width']}x{item['height']}")
    return "[" + " ".join(p for p in parts + [f"id {printable(item.get('id', ''))}"] if p) \
        + "]"


def size_text(size: Any) -> str:
    """``512 B``, ``1.2 KB``, ``10.5 MB`` (SI units); "" for anything but an int."""
    if not isinstance(size, int) or isinstance(size, bool):
        return ""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"


def ack_line(ack: Mapping[str, Any], as_json: bool, done: str = "sent") -> str:
    """``ROOM #SEQ sent`` (or ``edited``, ``deleted``, ``reacted``)."""
    if as_json:
        return orjson.dumps(dict(ack)).decode()
    return f"{printable(ack['room'])} #{ack['seq']} {done}"


def rows(items: list[dict[str, Any]], columns: tuple[str, ...], as_json: bool) -> list[str]:
    """A table as aligned text columns, or one JSON object per row."""
    if as_json:
        return [orjson.dumps(item).decode() for item in items]
    cells = [[printable(item.get(c, "")) for c in columns] for item in items]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    return [line] + ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells]


def one(item: dict[str, Any], as_json: bool) -> str:
    """One object: JSON, or ``key: value`` pairs."""
    if as_json:
        return orjson.dumps(item).decode()
    return "  ".join(f"{k}: {printable(v)}" for k, v in item.items())
