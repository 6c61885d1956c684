"""The mailbox's web pages: the list, one mail, its HTML part in a sandboxed frame, and
the JSON API; every byte of a mail is treated as hostile here (the package's docstring
says how)."""

from __future__ import annotations

import html
import json
import re
import socketserver
import traceback
import urllib.parse
from collections.abc import Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from burrow.devstack.mailbox.store import Mail, Mailbox, body, clean

HOST: Final = "127.0.0.1"
MAX_WAIT: Final = 60.0  # seconds an /api/mails?wait= request may block
HOST_REFUSED: Final = b"the mailbox answers only to 127.0.0.1 or localhost (DNS rebinding)\n"

_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_HEAD = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
_PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; frame-src 'self'; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# Frame flags: links may open a tab (which leaves the sandbox, so a verification page
# there can post its form); no scripts, forms, same-origin or top navigation.
SANDBOX: Final = "allow-popups allow-popups-to-escape-sandbox"
_PART_POLICY = (f"sandbox {SANDBOX}; default-src 'none'; style-src 'unsafe-inline'; "
                "img-src data:; frame-ancestors 'self'")



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


