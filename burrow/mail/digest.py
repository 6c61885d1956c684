"""Render an unread-messages digest as a multipart/alternative mail.

Everything user-controlled (room names, sender names, message bodies) goes through Jinja2
templates whose HTML side is autoescaped, so a chat message cannot inject markup into the
mail. Rendering is pure: no clock unless *now* is omitted, no I/O beyond reading the two
templates once, so the worker can render, store and resend the same bytes.

The headers are the ones providers grade bulk mail by: ``List-Unsubscribe`` with
``List-Unsubscribe-Post`` (RFC 8058 one-click; the relay's DKIM signature must cover both),
``Auto-Submitted`` (RFC 3834, so vacation responders stay quiet), and a ``Message-ID``
the caller chooses, so a resend after an uncertain SMTP outcome is recognisably the same
mail rather than a second digest.

A message that mentions the reader (by name, or @room) is marked: ``@ mentioned you``
(or ``@ mentioned @room``) after its line, and each room's heading counts the mentions,
also without previews (docs/protocol.md, mentions).
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import utils
from email.message import EmailMessage
from functools import cache
from pathlib import Path

import jinja2

DEFAULT_MAX_MESSAGES = 10
DEFAULT_PREVIEW_CHARS = 200
ELLIPSIS = "\u2026"
TEMPLATES = Path(__file__).resolve().parent / "templates"

# C0/C1 controls (minus whitespace, folded separately) and bidi overrides: invisible in a
# preview, and the overrides can make a sender's text read backwards in the HTML part.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class DigestMessage:
    seq: int
    sender: str
    body: str
    ts: int  # ms since epoch UTC
    mention: str | None = None  # "user": mentions the reader by name; "room": @room


#: How a line of a mentioning message is marked, by :attr:`DigestMessage.mention`.
MENTION_MARKS = {"user": "@ mentioned you", "room": "@ mentioned @room"}


@dataclass(frozen=True)
class DigestRoom:
    room: str  # the room id: shown when the room has no name
    name: str
    total_unread: int  # may exceed len(messages): the worker loads only the newest few
    messages: list[DigestMessage]


@dataclass(frozen=True)
class Digest:
    user: str
    to: str
    rooms: list[DigestRoom]
    unsubscribe_url: str
    open_url: str | None
    message_id: str  # stable across resends of this digest, e.g. from :func:`message_id_for`


@dataclass(frozen=True)
class _Line:
    """One shown message, already cleaned and cut for both templates."""
    sender: str
    body: str
    time: str
    mark: str  # "" or MENTION_MARKS' text


@dataclass(frozen=True)
class _SenderCount:
    sender: str
    count: int


@dataclass(frozen=True)
class _RoomView:
    title: str
    unread: int
    lines: list[_Line]  # empty without previews
    senders: list[_SenderCount]  # used without previews
    more: int  # unread messages (or senders, without previews) not listed
    mentions: int  # messages of the room (of those loaded) that mention the reader


def message_id_for(user: str, key: str, domain: str) -> str:
    """A Message-ID that is the same every time digest *key* (e.g. a period) goes to *user*.

    Hashed so the user id does not show in the header.
    """
    if not domain or any(c in domain for c in "<>@ \r\n"):
        raise ValueError(f"Message-ID domain {domain!r} is not a plain domain name")
    digest = hashlib.sha256(f"{user}\x00{key}".encode()).hexdigest()[:32]
    return f"<digest.{digest}@{domain}>"


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``"1 room"``, ``"2 rooms"``."""
    return f"{count} {singular if count == 1 else (many or singular + 's')}"


def subject(digest: Digest) -> str:
    """``"3 unread messages in 2 rooms"``: counts only, nothing a message said."""
    unread = sum(_unread(room) for room in digest.rooms)
    return f"{plural(unread, 'unread message')} in {plural(len(digest.rooms), 'room')}"


def format_time(ts: int) -> str:
    """``"2024-05-01 14:03 UTC"``: unambiguous for readers in any time zone."""
    return datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def preview(body: str, limit: int) -> str:
    """*body* on one line, at most *limit* characters, cut at a word when one is near."""
    text = _WHITESPACE.sub(" ", _INVISIBLE.sub("", body)).strip()
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    if space >= limit * 2 // 3:  # a word boundary close to the end: do not split the word
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


class Renderer:
    """Renders digests with fixed limits (how many messages, how long a preview)."""

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES,
                 preview_chars: int = DEFAULT_PREVIEW_CHARS) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if preview_chars < 10:
            raise ValueError("preview_chars must be at least 10")
        self.max_messages = max_messages
        self.preview_chars = preview_chars

    def render(self, digest: Digest, sender_address: str, previews: bool,
               now: datetime | None = None) -> EmailMessage:
        """The mail for *digest*; without *previews* no message body appears in it.

        ValueError for a digest that should not be sent (no rooms) or unsafe URLs.
        """
        if not digest.rooms:
            raise ValueError("a digest needs at least one room")
        _check_url("unsubscribe_url", digest.unsubscribe_url)
        if digest.open_url is not None:
            _check_url("open_url", digest.open_url)
        rooms = [self._view(room, previews) for room in digest.rooms]
        context = {"summary": subject(digest), "rooms": rooms, "previews": previews,
                   "open_url": digest.open_url, "unsubscribe_url": digest.unsubscribe_url}
        env = _environment()
        text = env.get_template("digest.txt.j2").render(context)
        html = env.get_template("digest.html.j2").render(context)

        msg = EmailMessage()
        msg["From"] = sender_address
        msg["To"] = digest.to
        msg["Subject"] = subject(digest)
        msg["Date"] = utils.format_datetime(now or datetime.now(UTC))
        msg["Message-ID"] = _message_id(digest.message_id)
        msg["List-Unsubscribe"] = f"<{digest.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["Auto-Submitted"] = "auto-generated"
        # quoted-printable keeps every line short and 7-bit, whatever relay sits in between.
        msg.set_content(text, subtype="plain", cte="quoted-printable")
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
        return msg

    def _view(self, room: DigestRoom, previews: bool) -> _RoomView:
        title = preview(room.name or "", self.preview_chars) or room.room
        unread = _unread(room)
        mentions = sum(1 for m in room.messages if m.mention in MENTION_MARKS)
        newest = sorted(room.messages, key=lambda m: (m.ts, m.seq))[-self.max_messages:]
        if previews:
            lines = [_Line(sender=preview(m.sender, 80) or "?",
                           body=preview(m.body, self.preview_chars), time=format_time(m.ts),
                           mark=MENTION_MARKS.get(m.mention or "", ""))
                     for m in newest]
            return _RoomView(title=title, unread=unread, lines=lines, senders=[],
                             more=unread - len(lines), mentions=mentions)
        senders = _count_senders(room.messages)
        shown = senders[:self.max_messages]
        return _RoomView(title=title, unread=unread, lines=[], senders=shown,
                         more=len(senders) - len(shown), mentions=mentions)


def render(digest: Digest, sender_address: str, previews: bool, *,
           max_messages: int = DEFAULT_MAX_MESSAGES,
           preview_chars: int = DEFAULT_PREVIEW_CHARS,
           now: datetime | None = None) -> EmailMessage:
    """:meth:`Renderer.render` with the given limits."""
    return Renderer(max_messages, preview_chars).render(digest, sender_address, previews, now)


def _unread(room: DigestRoom) -> int:
    # The count comes from another query than the messages: never show fewer than listed.
    return max(room.total_unread, len(room.messages))


def _count_senders(messages: Sequence[DigestMessage]) -> list[_SenderCount]:
    """Senders, most messages first (ties: who wrote first), for the no-previews view."""
    counts: dict[str, int] = {}
    for m in sorted(messages, key=lambda m: (m.ts, m.seq)):
        name = preview(m.sender, 80) or "?"
        counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])  # stable: ties keep order
    return [_SenderCount(sender, count) for sender, count in ranked]


def _check_url(field: str, url: str) -> None:
    # RFC 8058 wants https for one-click; http is tolerated for a local dev stack. Anything
    # else (javascript:, data:) must never become an href, and <> or whitespace would
    # break the angle-bracketed List-Unsubscribe header.
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(f"{field} must be an absolute http(s) URL, got {url!r}")
    if any(c in url for c in "<> \t\r\n\"'"):
        raise ValueError(f"{field} must not contain spaces, quotes or angle brackets")


def _message_id(value: str) -> str:
    mid = value.strip()
    if not mid.startswith("<"):
        mid = f"<{mid}>"
    if "@" not in mid or not mid.endswith(">") or any(c in mid for c in " \t\r\n"):
        raise ValueError(f"message_id {value!r} is not of the form <local@domain>")
    return mid


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        # Escape unless a template is known to be plain text: a new template is safe first.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                            disabled_extensions=("txt.j2",),
                                            default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails the tests, not a mail
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
