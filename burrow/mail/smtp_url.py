"""The SMTP relay URL: what it names, and the rule that mail to a real relay is encrypted.

``smtp://`` (optionally ``?starttls=1`` or ``?starttls=0``), ``smtps://`` (TLS from the
first byte), optional ``user:password@``. Parsed without I/O, so every process checks
it at startup (:mod:`burrow.runtime.settings`) and a relay that would get mail or a password in
clear is a configuration error, not a surprise in a packet capture:

* ``smtps://`` and ``smtp://...?starttls=1`` encrypt; STARTTLS is then required: a relay
  that does not offer it gets nothing (aiosmtplib fails the connection);
* ``smtp://`` to a **loopback** host (127.0.0.0/8, ``::1``, ``localhost``) is plain by
  default: a local relay or capture server (mailpit, the tests') never leaves the host;
* ``smtp://`` to **any other host** requires STARTTLS unless the URL says
  ``?starttls=0``, and even then credentials are refused: a password must never cross
  a network in clear. An operator who opts out does so in writing, for a relay on a
  private network (docker compose's mailpit) that takes no login.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass, field

DEFAULT_PORTS = {("smtp", False): 25, ("smtp", True): 587, ("smtps", False): 465}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    use_tls: bool  # smtps: TLS from the first byte
    start_tls: bool  # upgrade after EHLO, and fail if the relay cannot
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        """The URL without the password, for logs; it parses back to the same target."""
        scheme = "smtps" if self.use_tls else "smtp"
        user = f"{urllib.parse.quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.start_tls:
            query = "?starttls=1"
        elif not self.use_tls and not _loopback(self.host):
            query = "?starttls=0"  # the explicit opt-out this target was made with
        else:
            query = ""
        return f"{scheme}://{user}{host}:{self.port}{query}"


def _loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; any other name may resolve off the host."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_smtp_url(url: str) -> SmtpTarget:
    """The relay *url* names, or ValueError saying what is wrong (never echoing a password).

    Also ValueError for a URL that would send mail in clear to another host without
    saying so, or a password in clear at all beyond loopback (see the module text).
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError as exc:  # e.g. an unbalanced "[" around an IPv6 address
        raise ValueError(f"SMTP URL is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP URL must start with smtp:// or smtps://, not {scheme!r}"
                         if scheme else "SMTP URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("SMTP URL has no host (smtp://host:port)")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("SMTP URL must have no path or #fragment (smtp://host:port)")

    asked = _starttls(parts.query)
    if asked and scheme == "smtps":
        raise ValueError("SMTP URL: smtps:// is TLS already; starttls=1 is for smtp://")
    loopback = _loopback(parts.hostname)
    # Beyond loopback, plain text is what the operator must ask for, not what they get
    # by leaving the parameter out.
    start_tls = scheme == "smtp" and (asked if asked is not None else not loopback)

    try:
        port = parts.port
    except ValueError:
        raise ValueError("SMTP URL port must be a number from 1 to 65535") from None
    if port is None:
        port = DEFAULT_PORTS[(scheme, start_tls)]
    elif port == 0:
        raise ValueError("SMTP URL port must be a number from 1 to 65535")

    username = password = None
    if parts.username is not None or parts.password is not None:
        username = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        if not username:
            raise ValueError("SMTP URL has credentials without a user name (user:password@)")
        if password is None:
            raise ValueError("SMTP URL has a user name but no password (user:password@)")
        if scheme == "smtp" and not start_tls and not loopback:
            raise ValueError(
                f"SMTP URL would send the password in clear to {parts.hostname}: use "
                "smtps://, or smtp:// without starttls=0 (STARTTLS is then required)")
    return SmtpTarget(host=parts.hostname, port=port, use_tls=scheme == "smtps",
                      start_tls=start_tls, username=username, password=password)


def _starttls(query: str) -> bool | None:
    """The ``starttls`` parameter: True, False, or None when the URL does not say."""
    try:
        pairs = urllib.parse.parse_qs(query, keep_blank_values=True,
                                      strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"SMTP URL has a malformed query {query!r}") from None
    asked: bool | None = None
    for name, values in pairs.items():
        if name != "starttls":
            raise ValueError(f"SMTP URL has an unknown parameter {name!r} (only starttls)")
        value = values[-1].lower()
        if value not in _TRUE | _FALSE:
            raise ValueError(f"SMTP URL starttls must be 1 or 0, not {values[-1]!r}")
        asked = value in _TRUE
    return asked
