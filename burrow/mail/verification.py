"""Digest e-mail address verification: the rules, the signed link, the mail. No I/O.

A user may type any address into their settings, so digests (private messages) go only
to an address whose owner followed a link Burrow mailed there; otherwise Burrow could be
made to mail a stranger, and a typo would leak a user's chats. The pieces:

* :func:`plan` says what setting an address does to the stored state and whether a
  verification mail goes out: a new address is unverified and gets one; the same address
  again gets another only after :data:`COOLDOWN` and only while unverified;
* :func:`make_token` / :func:`read_token`: the link's token (a signed link token,
  :mod:`burrow.mail.links`, audience ``burrow:verify-email``) binds the user, a keyed
  digest of the address (no address in URLs or logs) and an expiry (:data:`TOKEN_TTL`).
  A token names the address it was minted for, so changing the address makes every
  older link useless without storing anything;
* :func:`address_key` is what rate limits count a target address by, so that case and
  ``+tags`` do not multiply one mailbox;
* :func:`render` writes the mail. It holds nothing the requester chose but the link:
  not the user id (an attacker picks that), so a verification mail cannot carry spam.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import utils
from email.message import EmailMessage
from typing import Any, Final

from burrow.core import ids
from burrow.mail import links
from burrow.mail.links import BadToken

__all__ = ["BadToken", "Claim", "EmailState", "Plan", "VerifyJob", "address_key",
           "legacy_job_id", "make_token", "plan", "read_token", "render"]

AUDIENCE: Final = "burrow:verify-email"
WHAT: Final = "verification token"
PATH: Final = "/v1/settings/email/verify"
KIND: Final = "verify"  # the email.due job kind
TOKEN_TTL: Final = timedelta(hours=24)
COOLDOWN: Final = timedelta(minutes=10)
MAX_ADDRESS: Final = 254
_DIGEST_CLAIM: Final = "eh"


@dataclass(frozen=True)
class EmailState:
    """What the ``users`` document says about the address."""
    email: str | None
    verified: bool = False
    sent_at: datetime | None = None  # the last verification mail asked for, if any


@dataclass(frozen=True)
class Plan:
    state: EmailState  # to store
    send: bool  # a verification mail goes to state.email


def plan(current: EmailState, new: str | None, now: datetime,
         cooldown: timedelta = COOLDOWN) -> Plan:
    """What setting the address to *new* (None: removing it) does at *now*."""
    if new is None:
        return Plan(EmailState(None), send=False)
    if new != current.email:
        return Plan(EmailState(new, verified=False, sent_at=now), send=True)
    if current.verified or (current.sent_at is not None and now - current.sent_at < cooldown):
        return Plan(current, send=False)
    return Plan(EmailState(new, verified=False, sent_at=now), send=True)


def needs_first_mail(state: EmailState) -> bool:
    """An unverified address no verification mail was ever asked for: one stored before
    verification existed, or whose request never reached the broker."""
    return state.email is not None and not state.verified and state.sent_at is None


# -- the link's token --------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A verified token: *user* may confirm the address whose digest is *digest*."""
    user: str
    digest: str

    def names(self, secret: str, address: str | None) -> bool:
        """Whether the token was minted for *address* (the one stored now, say)."""
        return address is not None and hmac.compare_digest(
            self.digest, address_digest(secret, address))


def address_digest(secret: str, address: str) -> str:
    """A keyed digest of *address*: binds a token to it without showing it."""
    key = hmac.new(links.check_secret(secret, "verification"), b"burrow address digest",
                   hashlib.sha256).digest()
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()[:32]


def make_token(secret: str, user: str, address: str, *, now: float | None = None,
               ttl: timedelta = TOKEN_TTL) -> str:
    """The token of a link that lets *user* confirm *address* for *ttl*."""
    return links.sign(secret, AUDIENCE, user, {_DIGEST_CLAIM: address_digest(secret, address)},
                      ttl=ttl.total_seconds(), now=now, what="verification")


def read_token(secret: str, token: object, *, now: float | None = None) -> Claim:
    """The claim *token* carries, or :exc:`BadToken` (forged, tampered, foreign, expired)."""
    claims = links.read(secret, AUDIENCE, token, what=WHAT, require=("exp", _DIGEST_CLAIM),
                        now=now)
    digest = claims[_DIGEST_CLAIM]
    if not isinstance(digest, str) or not digest:
        raise BadToken("claims", f"{WHAT} names no address")
    return Claim(claims["sub"], digest)


def link(public_url: str, token: str) -> str:
    return f"{public_url}{PATH}?token={token}"


# -- rate limiting and jobs ----------------------------------------------------------------


def address_key(address: str) -> str:
    """The mailbox *address* reaches, as a rate-limit key: case and a ``+tag`` of the
    local part do not make another victim (hashed: no address in the limiter's keys)."""
    local, _, domain = address.rpartition("@")
    mailbox = f"{local.split('+', 1)[0]}@{domain}".lower()
    return hashlib.sha256(mailbox.encode()).hexdigest()[:32]


def legacy_job_id(user: str, address: str) -> str:
    """The once-only id of the one verification mail an old address gets: the same
    however many digest jobs find the address unverified."""
    return "verify-" + hashlib.sha256(f"{user}\x00{address}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class VerifyJob:
    """``{"kind": "verify", "id", "user", "address"}`` on ``email.due``: mail a
    verification link for *address* if it is still *user*'s unverified address."""
    id: str
    user: str
    address: str

    def body(self) -> dict[str, Any]:
        return {"kind": KIND, "id": self.id, "user": self.user, "address": self.address}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> VerifyJob:
        """The job in *body*; ValueError saying what is wrong (the job is then parked)."""
        job_id, user, address = body.get("id"), body.get("user"), body.get("address")
        if not ids.is_client_id(job_id):
            raise ValueError("id must be 1..64 printable ASCII characters (the once-only key)")
        if not ids.is_user_id(user):
            raise ValueError("user must be a printable string of 1..128 characters")
        if (not isinstance(address, str) or "@" not in address or len(address) > MAX_ADDRESS
                or any(c.isspace() or c in "<>,\"" for c in address)):
            raise ValueError("address must be an email address")
        return cls(job_id, user, address)


# -- the mail ----------------------------------------------------------------------------


def message_id(job_id: str, domain: str) -> str:
    """The same Message-ID for every attempt of one job (a resend after an uncertain SMTP
    outcome is recognisably the same mail); hashed, so any job id makes a valid header."""
    return f"<verify.{hashlib.sha256(job_id.encode()).hexdigest()[:32]}@{domain}>"


SUBJECT: Final = "Confirm your email address for Burrow digests"
_TEXT = """Hello,

someone asked Burrow, a chat service, to send email digests of unread chat messages
to {address}. If that was you, confirm the address here within {hours} hours:

{link}

If it was not you, ignore this mail: nothing more is sent to this address unless the
link is used.
"""
_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{subject}</title></head>
<body><p>Hello,</p>
<p>someone asked Burrow, a chat service, to send email digests of unread chat messages to
<strong>{address}</strong>. If that was you, confirm the address within {hours} hours:</p>
<p><a href="{link}">Confirm this address</a></p>
<p>If it was not you, ignore this mail: nothing more is sent to this address unless the
link is used.</p></body></html>
"""


def render(to: str, url: str, sender: str, message_id: str, *,
           ttl: timedelta = TOKEN_TTL, now: datetime | None = None) -> EmailMessage:
    """The verification mail to *to* with the link *url* (made by :func:`link`)."""
    hours = int(ttl.total_seconds() // 3600)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = SUBJECT
    msg["Date"] = utils.format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
    msg.set_content(_TEXT.format(address=to, hours=hours, link=url), cte="quoted-printable")
    msg.add_alternative(_HTML.format(subject=html.escape(SUBJECT), address=html.escape(to),
                                     hours=hours, link=html.escape(url, quote=True)),
                        subtype="html", cte="quoted-printable")
    return msg
