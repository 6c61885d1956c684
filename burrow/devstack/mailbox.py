"""The development mailbox: ``./dev up`` catches every mail the stack sends and shows it.

Why it exists: the digester sends digests and verification mails to ``BURROW_SMTP_URL``,
by default ``smtp://127.0.0.1:1025``. Docker compose has mailpit there; under ``./dev up``
nothing listened, so every mail failed, went through the retry tiers and ended in
``digest.dead`` / ``email.dead``, and a developer never saw the e-mail side work: no
verification link to follow, so no digest either (digests go only to a verified address).

What it is: an SMTP server (aiosmtpd, on 127.0.0.1 only) that takes any mail and delivers
it nowhere, and a web page, by default ``http://127.0.0.1:8025/`` (the port mailpit has
in compose), that lists the mails newest first (from, to, subject, time) and shows one:
its text part, its HTML part in a sandboxed frame, the raw source. ``/api/mails`` is the
same as JSON (``?after=ID&wait=SECONDS`` waits for a newer one: scripts and tests wait on
the mail rather than sleep). ``python -m burrow.devstack.mailbox`` runs it; the launcher
starts it as a child process unless ``BURROW_SMTP_URL`` is set (then mail goes there) or
``--no-mailbox`` is given (docs/mailbox.md).

A process of its own, like every other service the launcher runs: it is started, probed
(``/readyz``), watched and stopped the same way, a bug or a hostile mail costs this
process and not the launcher's signal-driven loop, and it can run beside a stack started
another way.

Mails live in memory only, bounded (:data:`MAX_MAILS` mails, :data:`MAX_TOTAL_BYTES` in
all, the oldest go first; one mail at most :data:`MAX_MAIL_BYTES`, refused with 552
beyond): a restart of ``./dev up`` empties it, nothing accumulates on disk, and the
verification and unsubscribe tokens in the mails are not written anywhere.

Mails carry user-written chat text, and anything on this machine may send one, so the
pages treat every byte of a mail as hostile: every header and the text part are
HTML-escaped, the HTML part is served only to a frame with ``sandbox`` (no scripts, no
forms, no same-origin; its links open in a new tab) and with a ``Content-Security-Policy:
sandbox`` of its own should it be opened directly; the pages run no script at all (their
policy allows none). Mails that are not UTF-8 or not well-formed MIME are kept and shown
as well as can be (undecodable bytes as U+FFFD), never a crash. The pages answer only to
a ``Host`` of 127.0.0.1 or localhost, so a web page in the developer's browser cannot
read them through DNS rebinding.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import importlib.util
import json
import re
import signal
import socketserver
import sys
import threading
import traceback
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final

from burrow.devstack.processes import AppProcess
from burrow.runtime.settings import ConfigError

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

HOST: Final = "127.0.0.1"
HTTP_PORT: Final = 8025  # mailpit's web port in docker-compose.yml
SMTP_PORT: Final = 1025  # BURROW_SMTP_URL's default, and mailpit's SMTP port
HTTP_PORT_VAR: Final = "BURROW_DEV_MAILBOX_PORT"
SMTP_PORT_VAR: Final = "BURROW_DEV_SMTP_PORT"
MAX_MAILS: Final = 200
MAX_MAIL_BYTES: Final = 4 * 1024 * 1024  # a backend email's parts are at most 256 KiB
MAX_TOTAL_BYTES: Final = 64 * 1024 * 1024
MAX_RECIPIENTS: Final = 100
MAX_WAIT: Final = 60.0  # seconds an /api/mails?wait= request may block
SUMMARY_CHARS: Final = 300  # of a header shown in the listing
MODULE: Final = "burrow.devstack.mailbox"
HOST_REFUSED: Final = b"the mailbox answers only to 127.0.0.1 or localhost (DNS rebinding)\n"

# C0/C1 controls but tab and newline, and the bidi overrides that make text read backwards.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_HEAD = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
_PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; frame-src 'self'; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# Frame flags: links may open a tab (which leaves the sandbox, so a verification page
# there can post its form); no scripts, forms, same-origin or top navigation.
SANDBOX: Final = "allow-popups allow-popups-to-escape-sandbox"
_PART_POLICY = (f"sandbox {SANDBOX}; default-src 'none'; style-src 'unsafe-inline'; "
                "img-src data:; frame-ancestors 'self'")


def installed() -> bool:
    """aiosmtpd is there (Burrow's test extra, which ``./dev`` installs)."""
    return importlib.util.find_spec("aiosmtpd") is not None


# -- what a mail shows -----------------------------------------------------------------


def clean(text: str) -> str:
    """*text* safe to encode and show: bytes a parser kept as surrogates decoded as UTF-8
    where they are (else U+FFFD), CRLF as LF, other controls and bidi overrides U+FFFD."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate of another kind
        raw = text.encode("utf-8", "surrogatepass")
    decoded = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    return _INVISIBLE.sub("\ufffd", decoded)


def one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = " ".join(clean(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def header(message: Message, name: str) -> str:
    """The decoded value of header *name* ('' when absent), however malformed it is."""
    try:
        value = message.get(name)
    except Exception:  # noqa: BLE001  the parser's header classes raise on some garbage
        value = None
    if value is not None:
        return one_line(str(value))
    for key, raw in message.raw_items():
        if key.lower() == name.lower():
            try:
                return one_line(str(make_header(decode_header(str(raw)))))
            except Exception:  # noqa: BLE001  undecodable encoded words
                return one_line(str(raw))
    return ""


@dataclass(frozen=True)
class Mail:
    """One mail as it came: the envelope, the bytes, and the headers the listing shows."""

    id: int
    received: datetime
    envelope_from: str
    envelope_to: tuple[str, ...]
    raw: bytes
    sender: str
    to: str
    subject: str

    @classmethod
    def parse(cls, mail_id: int, envelope_from: str, envelope_to: tuple[str, ...],
              raw: bytes, received: datetime | None = None) -> Mail:
        try:
            headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
            sender, to, subject = (header(headers, n) for n in ("From", "To", "Subject"))
        except Exception:  # noqa: BLE001  kept as raw source whatever it is
            sender, to, subject = "", "", "(unreadable headers: see the raw source)"
        return cls(mail_id, received or datetime.now(UTC), one_line(envelope_from),
                   tuple(one_line(a) for a in envelope_to), raw, sender,
                   to or ", ".join(one_line(a) for a in envelope_to), subject)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "received": self.received.isoformat(), "from": self.sender,
                "to": self.to, "subject": self.subject, "size": len(self.raw),
                "envelope_from": self.envelope_from, "envelope_to": list(self.envelope_to)}


@dataclass(frozen=True)
class Body:
    """What a mail says: its text and HTML parts, and why they may be missing."""

    text: str | None
    html: str | None
    problem: str | None = None


def _part(message: EmailMessage, subtype: str) -> str | None:
    try:
        part = message.get_body((subtype,))
    except Exception:  # noqa: BLE001
        return None
    if part is None:
        return None
    try:
        content = part.get_content()
    except Exception:  # noqa: BLE001  an unknown charset, a broken transfer encoding
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # noqa: BLE001
            return None
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    return clean(content) if isinstance(content, str) else None


def body(raw: bytes) -> Body:
    """The text and HTML parts of *raw*, as far as they can be read."""
    try:
        message = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(raw)
    except Exception as exc:  # noqa: BLE001
        return Body(None, None, f"not readable as MIME ({type(exc).__name__}): see the "
                                "raw source")
    text, markup = _part(message, "plain"), _part(message, "html")
    if text is None and markup is None:
        return Body(None, None, "no text or HTML part: see the raw source")
    return Body(text, markup)


# -- the store ---------------------------------------------------------------------------


class Mailbox:
    """The mails, newest last, in memory: at most *max_mails* and *max_bytes* of them (the
    oldest go first). Thread-safe: the SMTP loop adds, the web threads read and wait."""

    def __init__(self, max_mails: int = MAX_MAILS, max_bytes: int = MAX_TOTAL_BYTES) -> None:
        if max_mails < 1 or max_bytes < 1:
            raise ValueError("a mailbox keeps at least one mail")
        self.max_mails, self.max_bytes = max_mails, max_bytes
        self._mails: deque[Mail] = deque()
        self._bytes = 0
        self._next = 1
        self._changed = threading.Condition()

    def add(self, envelope_from: str, envelope_to: tuple[str, ...], raw: bytes) -> Mail:
        parsed = Mail.parse(0, envelope_from, envelope_to, raw)  # outside the lock
        with self._changed:
            mail = replace(parsed, id=self._next)
            self._next += 1
            self._mails.append(mail)
            self._bytes += len(raw)
            while len(self._mails) > 1 and (len(self._mails) > self.max_mails
                                            or self._bytes > self.max_bytes):
                self._bytes -= len(self._mails.popleft().raw)
            self._changed.notify_all()
            return mail

    def newest_first(self, after: int = 0) -> list[Mail]:
        with self._changed:
            return [m for m in reversed(self._mails) if m.id > after]

    def get(self, mail_id: int) -> Mail | None:
        with self._changed:
            return next((m for m in self._mails if m.id == mail_id), None)

    def wait_newer(self, after: int, timeout: float) -> list[Mail]:
        """Mails newer than id *after*, newest first, once there is one or *timeout* ends."""
        with self._changed:
            self._changed.wait_for(lambda: self._next - 1 > after, timeout)
        return self.newest_first(after)

    @property
    def size(self) -> int:
        with self._changed:
            return self._bytes


# -- SMTP ---------------------------------------------------------------------------------


class Handler:
    """aiosmtpd's hooks: every mail is accepted into the mailbox, none goes anywhere."""

    def __init__(self, box: Mailbox, announce: Callable[[Mail], None] | None = None) -> None:
        self.box = box
        self.announce = announce

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mail = self.box.add(envelope.mail_from or "", tuple(envelope.rcpt_tos),
                            envelope.original_content or b"")
        if self.announce is not None:
            self.announce(mail)
        return f"250 2.0.0 Ok: kept as mail {mail.id}"


def smtp_factory(box: Mailbox, loop: asyncio.AbstractEventLoop, max_mail_bytes: int,
                 announce: Callable[[Mail], None] | None = None) -> Callable[[], SMTP]:
    """A protocol factory for ``loop.create_server``: one aiosmtpd SMTP per client."""
    from aiosmtpd.smtp import SMTP

    handler = Handler(box, announce)

    def make() -> SMTP:
        # hostname: aiosmtpd would otherwise ask socket.getfqdn() (a DNS lookup) per client;
        # loop: so that it never looks one up itself.
        return SMTP(handler, hostname="burrow-mailbox", ident="Burrow dev mailbox",
                    data_size_limit=max_mail_bytes, enable_SMTPUTF8=True, loop=loop)

    return make


# -- the pages ----------------------------------------------------------------------------

_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;
border-bottom:1px solid #ddd;vertical-align:top}th{background:#f4f4f4}
td.time{white-space:nowrap;color:#555}pre{white-space:pre-wrap;word-break:break-word;
background:#f8f8f8;padding:1em;border:1px solid #ddd}iframe{width:100%;height:60vh;
border:1px solid #ddd;resize:vertical}dt{font-weight:bold}dd{margin:0 0 .4em 1em}
.note{color:#555}"""


def _page(title: str, content: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">{meta}'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>{content}</body></html>\n")


def _time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def render_list(mails: list[Mail], box: Mailbox, smtp: str) -> str:
    rows = "".join(
        f'<tr><td class="time">{_time(m.received)}</td><td>{html.escape(m.sender)}</td>'
        f"<td>{html.escape(m.to)}</td><td><a href=\"/mail/{m.id}\">"
        f"{html.escape(m.subject) or '(no subject)'}</a></td></tr>\n" for m in mails)
    intro = (f"<p class=\"note\">Every mail sent to {html.escape(smtp)} since this mailbox "
             f"started, newest first; the last {box.max_mails} are kept, in memory only. "
             "Nothing is delivered anywhere. JSON: <a href=\"/api/mails\">/api/mails</a>. "
             "(docs/mailbox.md)</p>")
    table = ("<table><thead><tr><th>Received</th><th>From</th><th>To</th><th>Subject</th>"
             f"</tr></thead><tbody>\n{rows}</tbody></table>" if mails
             else "<p>No mail yet.</p>")
    return _page(f"Burrow mailbox ({len(mails)})",
                 f"<h1>Burrow dev mailbox</h1>{intro}{table}", refresh=5)


def linked(text: str) -> str:
    """*text* HTML-escaped, its http(s) URLs made links that open in a new tab."""
    out: list[str] = []
    last = 0
    for found in _URL.finditer(text):
        url = found.group(0).rstrip(".,;:!?)]}")
        out.append(html.escape(text[last:found.start()]))
        out.append(f'<a href="{html.escape(url, quote=True)}" target="_blank" '
                   f'rel="noopener noreferrer">{html.escape(url)}</a>')
        last = found.start() + len(url)
    out.append(html.escape(text[last:]))
    return "".join(out)


def render_mail(mail: Mail) -> str:
    parts = body(mail.raw)
    fields = [("From", mail.sender), ("To", mail.to), ("Subject", mail.subject),
              ("Received", _time(mail.received)),
              ("Envelope", f"MAIL FROM:<{mail.envelope_from}> RCPT TO:"
                           + ", ".join(f"<{a}>" for a in mail.envelope_to)),
              ("Size", f"{len(mail.raw):,} bytes")]
    content = [(f'<p><a href="/">&larr; all mails</a> &middot; '
                f'<a href="/mail/{mail.id}/raw">raw source</a></p>'),
               f"<h1>{html.escape(mail.subject) or '(no subject)'}</h1><dl>",
               *(f"<dt>{name}</dt><dd>{html.escape(value)}</dd>" for name, value in fields),
               "</dl>"]
    if parts.problem:
        content.append(f'<p class="note">{html.escape(parts.problem)}</p>')
    if parts.text is not None:
        content.append(f"<h2>Text part</h2><pre>{linked(parts.text)}</pre>")
    if parts.html is not None:
        content.append(
            "<h2>HTML part</h2><p class=\"note\">Shown sandboxed: no scripts or forms; "
            "links open in a new tab.</p>"
            f'<iframe sandbox="{SANDBOX}" referrerpolicy="no-referrer" '
            f'src="/mail/{mail.id}/html" title="HTML part"></iframe>')
    return _page(mail.subject or f"mail {mail.id}", "".join(content))


def framed_html(markup: str) -> str:
    """The HTML part for its frame: links open a new tab (``<base target>`` first)."""
    base = '<base target="_blank">'
    head = _HEAD.search(markup)
    if head is None:
        return base + markup
    return markup[:head.end()] + base + markup[head.end():]


class WebServer(ThreadingHTTPServer):
    daemon_threads = True  # a waiting /api/mails?wait= does not hold up the exit

    def __init__(self, address: tuple[str, int], box: Mailbox, smtp: str) -> None:
        self.box, self.smtp = box, smtp
        super().__init__(address, Pages)

    def server_bind(self) -> None:
        # HTTPServer's own asks socket.getfqdn() (a reverse DNS lookup): not needed here
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class Pages(BaseHTTPRequestHandler):
    server: WebServer
    server_version = "burrow-mailbox"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the launcher's terminal is for the stack

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        try:
            status, kind, payload, extra = self._route()
        except ValueError as exc:
            status, kind, payload, extra = 400, "text/plain", str(exc).encode(), {}
        except Exception:  # noqa: BLE001  a bug: say so, keep serving
            traceback.print_exc()
            status, kind, payload, extra = 500, "text/plain", b"mailbox error\n", {}
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", extra.get("csp", _PAGE_POLICY))
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def _host_ok(self) -> bool:
        port = self.server.server_port
        return self.headers.get("Host", "").lower() in {
            f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

    def _route(self) -> tuple[int, str, bytes, dict[str, str]]:
        if not self._host_ok():
            return 403, "text/plain", HOST_REFUSED, {}
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        box = self.server.box
        if path == "/readyz":
            return 200, "application/json", b'{"ready": true}', {}
        if path == "/":
            return 200, "text/html", render_list(box.newest_first(), box,
                                                 self.server.smtp).encode(), {}
        if path == "/api/mails":
            after = _number(query, "after", 0)
            wait = min(float(_number(query, "wait", 0)), MAX_WAIT)
            mails = box.wait_newer(after, wait) if wait > 0 else box.newest_first(after)
            return 200, "application/json", _json([m.summary() for m in mails]), {}
        found = re.fullmatch(r"/(mail|api/mails)/([0-9]{1,12})(/html|/raw)?", path)
        mail = box.get(int(found.group(2))) if found else None
        if found is None or mail is None:
            return 404, "text/plain", b"no such mail (the mailbox keeps only the newest)\n", {}
        view, suffix = found.group(1), found.group(3)
        if view == "api/mails" and suffix is None:
            parts = body(mail.raw)
            return 200, "application/json", _json({**mail.summary(), "text": parts.text,
                                                   "html": parts.html,
                                                   "problem": parts.problem}), {}
        if view == "mail" and suffix is None:
            return 200, "text/html", render_mail(mail).encode(), {}
        if view == "mail" and suffix == "/raw":
            source = clean(mail.raw.decode("utf-8", "replace"))
            return 200, "text/plain", source.encode(), {"csp": _PART_POLICY}
        if view == "mail" and suffix == "/html":
            markup = body(mail.raw).html
            if markup is None:
                return 404, "text/plain", b"this mail has no HTML part\n", {}
            return 200, "text/html", framed_html(markup).encode(), {"csp": _PART_POLICY}
        return 404, "text/plain", b"not found\n", {}


def _number(query: Mapping[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [str(default)])[-1]
    if not raw.isdigit() or len(raw) > 12:
        raise ValueError(f"{name} must be a whole number")
    return int(raw)


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


# -- running it -----------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    http_port: int = HTTP_PORT
    smtp_port: int = SMTP_PORT
    max_mails: int = MAX_MAILS
    max_mail_bytes: int = MAX_MAIL_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}/"

    @property
    def smtp_url(self) -> str:
        """What the workers get as BURROW_SMTP_URL (plain SMTP: it is loopback)."""
        return f"smtp://{HOST}:{self.smtp_port}"

    def needed_ports(self) -> list[tuple[int, str, str]]:
        return [(self.http_port, "the mailbox page", HTTP_PORT_VAR),
                (self.smtp_port, "the mailbox's SMTP server", SMTP_PORT_VAR)]

    def arguments(self) -> list[str]:
        return ["--http-port", str(self.http_port), "--smtp-port", str(self.smtp_port),
                "--max-mails", str(self.max_mails),
                "--max-mail-bytes", str(self.max_mail_bytes),
                "--max-total-bytes", str(self.max_total_bytes)]

    def process(self, env: Mapping[str, str]) -> AppProcess:
        """The mailbox as the launcher's child (shares its terminal)."""
        return AppProcess("mailbox", MODULE, env, args=self.arguments())


def for_launcher(env: Mapping[str, str], wanted: bool) -> tuple[Options | None, str]:
    """The mailbox ``./dev up`` runs, or None and why it runs none."""
    if not wanted:
        return None, "--no-mailbox"
    if env.get("BURROW_SMTP_URL"):
        return None, "BURROW_SMTP_URL is set"
    if not installed():
        return None, "no mailbox: aiosmtpd is missing (pip install -e '.[test]'; ./dev does)"

    def port(name: str, default: int) -> int:
        raw = env.get(name) or str(default)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"{name}={raw!r} is not a port (1..65535)")
        return int(raw)

    options = Options(port(HTTP_PORT_VAR, HTTP_PORT), port(SMTP_PORT_VAR, SMTP_PORT))
    if options.http_port == options.smtp_port:
        raise ConfigError(f"{HTTP_PORT_VAR} and {SMTP_PORT_VAR} are both {options.http_port}")
    return options, ""


def _printable(text: str) -> str:
    """For the terminal: what a sender wrote can hold escape sequences."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


async def serve(options: Options, stopped: asyncio.Event | None = None) -> None:
    """Listen until *stopped* is set (SIGTERM or SIGINT when it is not given)."""
    box = Mailbox(options.max_mails, options.max_total_bytes)
    loop = asyncio.get_running_loop()

    def announce(mail: Mail) -> None:
        print(f"burrow-mailbox: mail {mail.id} for "
              f"{_printable(', '.join(mail.envelope_to))}: {options.url}mail/{mail.id}",
              flush=True)

    try:
        smtp = await loop.create_server(
            smtp_factory(box, loop, options.max_mail_bytes, announce), HOST,
            options.smtp_port)
    except OSError as exc:
        raise SystemExit(f"burrow-mailbox: cannot listen for SMTP on {HOST}:"
                         f"{options.smtp_port} ({exc.strerror}); set {SMTP_PORT_VAR}") from None
    try:
        web = WebServer((HOST, options.http_port), box, options.smtp_url)
    except OSError as exc:
        smtp.close()
        raise SystemExit(f"burrow-mailbox: cannot serve {options.url} ({exc.strerror}); "
                         f"set {HTTP_PORT_VAR}") from None
    if stopped is None:
        stopped = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
    pages = threading.Thread(target=web.serve_forever, name="mailbox-web", daemon=True)
    pages.start()
    print(f"burrow-mailbox: {options.url} shows what {options.smtp_url} receives",
          flush=True)
    try:
        await stopped.wait()
    finally:
        smtp.close()
        await asyncio.to_thread(web.shutdown)
        web.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http-port", type=int, default=HTTP_PORT,
                        help=f"the page's port on {HOST} (default {HTTP_PORT})")
    parser.add_argument("--smtp-port", type=int, default=SMTP_PORT,
                        help=f"the SMTP port on {HOST} (default {SMTP_PORT})")
    parser.add_argument("--max-mails", type=int, default=MAX_MAILS,
                        help=f"mails kept, the oldest go first (default {MAX_MAILS})")
    parser.add_argument("--max-mail-bytes", type=int, default=MAX_MAIL_BYTES,
                        help="a larger mail is refused with 552 (default 4 MiB)")
    parser.add_argument("--max-total-bytes", type=int, default=MAX_TOTAL_BYTES,
                        help="bytes kept in all, the oldest go first (default 64 MiB)")
    args = parser.parse_args(argv)
    if min(args.max_mails, args.max_mail_bytes, args.max_total_bytes) < 1:
        parser.error("the limits must be positive")
    if not installed():
        sys.exit("burrow-mailbox: aiosmtpd is missing (pip install -e '.[test]')")
    asyncio.run(serve(Options(args.http_port, args.smtp_port, args.max_mails,
                              args.max_mail_bytes, args.max_total_bytes)))


if __name__ == "__main__":
    main()
