"""The mailbox's store: what a caught mail is, how it is shown safely, and the SMTP side
that takes it in (aiosmtpd), bounded so a flood costs memory it was given and no more."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

MAX_MAILS: Final = 200
MAX_MAIL_BYTES: Final = 4 * 1024 * 1024  # a backend email's parts are at most 256 KiB
MAX_TOTAL_BYTES: Final = 64 * 1024 * 1024
MAX_RECIPIENTS: Final = 100
SUMMARY_CHARS: Final = 300  # of a header shown in the listing

# C0/C1 controls but tab and newline, and the bidi overrides that make text read backwards.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


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


