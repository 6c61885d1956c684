"""Hand digest mails to an SMTP relay and say what the worker should do next.

The relay is configured with one URL (:mod:`burrow.mail.smtp_url`: ``smtp://`` with or
without STARTTLS, ``smtps://`` implicit TLS, optional ``user:password@``; plain text and
passwords in clear only where that module allows them), so a deployment sets a single
variable. :meth:`Mailer.send` never raises for what a relay or the network can do; it
returns a :class:`SendResult` whose :class:`Outcome` is all the worker branches on:

* ``SENT``: the relay took responsibility for every recipient;
* ``REJECTED``: a permanent (5xx) refusal; sending the same mail again fails the same way;
* ``RETRY``: a temporary (4xx) refusal, or the relay was unreachable, timed out or hung
  up; the mail may be sent again later. When the line dropped after DATA the relay may
  have taken it already: the digest's stable Message-ID lets the duplicate be recognised.

One connection is kept between sends (a digest run sends many mails), checked with NOOP
when it has been idle, and dropped whenever its state is in doubt.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import MappingProxyType, TracebackType
from typing import Self

import aiosmtplib

from burrow.mail.smtp_url import DEFAULT_PORTS, SmtpTarget, parse_smtp_url

__all__ = ["DEFAULT_PORTS", "Mailer", "Outcome", "SendResult", "SmtpTarget", "parse_smtp_url"]

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    SENT = "sent"
    REJECTED = "rejected"
    RETRY = "retry"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    code: int | None = None  # the SMTP reply code that decided it, if a reply did
    detail: str = ""  # for logs: the relay's text or the exception
    # Recipients the relay refused while it took the mail for others (address -> code).
    # Digests have one recipient each; with several, a RETRY should go only to these.
    refused: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


def _by_code(code: int, detail: str) -> SendResult:
    # 4xx is transient by definition (RFC 5321 s4.2.1); anything that is not 5xx is not a
    # verdict on the mail either, so it gets another chance.
    outcome = Outcome.REJECTED if 500 <= code <= 599 else Outcome.RETRY
    return SendResult(outcome, code, detail)


class Mailer:
    """Sends mails to one relay over a reused connection; one send at a time.

    Bound to the event loop of its first send. Close it (or use ``async with``) when done,
    so the relay sees QUIT instead of a dropped line.
    """

    def __init__(self, target: str | SmtpTarget, *, timeout: float = 30.0,
                 idle_probe: float = 5.0, reuse: bool = True,
                 tls_context: ssl.SSLContext | None = None,
                 local_hostname: str | None = None) -> None:
        """*timeout* bounds each network step (connect, each command); *idle_probe* is how
        long a kept connection may sit unused before a NOOP checks it is still alive."""
        self.target = parse_smtp_url(target) if isinstance(target, str) else target
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.idle_probe = idle_probe
        self.reuse = reuse
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self._client: aiosmtplib.SMTP | None = None
        self._last_used = 0.0
        self._lock: asyncio.Lock | None = None
        self.connections = 0  # how many connections were opened: tests and metrics

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def send(self, message: EmailMessage) -> SendResult:
        """Deliver *message* to its From/To/Cc/Bcc as the relay allows; see the module text.

        ValueError only for a message that no relay could take (no From, no recipient).
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            result = await self._send(message)
            if not self.reuse:
                await self._quit()
            return result

    async def close(self) -> None:
        """QUIT the kept connection, if any (never raises)."""
        if self._lock is None:
            await self._quit()
            return
        async with self._lock:
            await self._quit()

    async def _send(self, message: EmailMessage) -> SendResult:
        try:
            client = await self._connection()
            refused, reply = await client.send_message(message)
        except asyncio.CancelledError:
            self._drop()  # cancelled mid-dialogue: the line is in an unknown state
            raise
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = {r.recipient: r.code for r in exc.recipients}
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            return self._refusal(codes, f"all recipients refused: {detail}")
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials are wrong: a setup problem, not the mail's. Retry tiers, then
            # the dead queue, from where an admin moves it back once the setup is fixed.
            self._drop()
            return SendResult(Outcome.RETRY, exc.code, f"SMTP login failed: {exc.code} "
                              f"{exc.message}")
        except aiosmtplib.SMTPResponseException as exc:
            # Sender refused, DATA refused, a 421/554 greeting, ...
            self._drop_if_broken()
            return _by_code(exc.code, f"{type(exc).__name__}: {exc.code} {exc.message}")
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError,
                aiosmtplib.SMTPTimeoutError, TimeoutError, OSError) as exc:
            # The line's state is unknown (a late reply would answer the next command).
            self._drop()
            return SendResult(Outcome.RETRY, None, f"{type(exc).__name__}: {exc}")
        except aiosmtplib.SMTPNotSupported as exc:
            # The mail needs what the relay lacks (SMTPUTF8 for a non-ASCII address):
            # sending it again will not change that.
            self._drop_if_broken()
            return SendResult(Outcome.REJECTED, None, f"SMTPNotSupported: {exc}")
        except aiosmtplib.SMTPException as exc:
            # Code-less local verdicts: no STARTTLS or AUTH on offer, ... A setup problem
            # an operator can fix; the mail itself is fine, so keep it.
            self._drop()
            return SendResult(Outcome.RETRY, None, f"{type(exc).__name__}: {exc}")
        self._last_used = time.monotonic()
        if refused:
            codes = {address: response.code for address, response in refused.items()}
            detail = "; ".join(f"{a}: {r.code} {r.message}" for a, r in refused.items())
            return self._refusal(codes, f"some recipients refused: {detail}")
        return SendResult(Outcome.SENT, 250, reply)

    def _refusal(self, codes: dict[str, int], detail: str) -> SendResult:
        """One verdict for refused recipients: RETRY while any refusal was temporary."""
        self._drop_if_broken()
        transient = [code for code in codes.values() if not 500 <= code <= 599]
        code = transient[0] if transient else next(iter(codes.values()))
        outcome = Outcome.RETRY if transient else Outcome.REJECTED
        return SendResult(outcome, code, detail, MappingProxyType(dict(codes)))

    async def _connection(self) -> aiosmtplib.SMTP:
        client = self._client
        if client is not None and client.is_connected:
            if time.monotonic() - self._last_used < self.idle_probe:
                return client
            try:  # relays drop idle clients (RFC 5321 allows after 5 min, many sooner)
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                log.info("SMTP connection to %s went stale (%s); reconnecting",
                         self.target, type(exc).__name__)
        self._drop()
        t = self.target
        client = aiosmtplib.SMTP(
            hostname=t.host, port=t.port, username=t.username, password=t.password,
            use_tls=t.use_tls, start_tls=t.start_tls,
            timeout=self.timeout, tls_context=self._tls_context,
            local_hostname=self._local_hostname)
        self._client = client
        self.connections += 1
        await client.connect()  # also STARTTLS and AUTH, as configured
        return client

    def _drop_if_broken(self) -> None:
        # After a refusal aiosmtplib sends RSET, so a still-open line is reusable.
        if self._client is not None and not self._client.is_connected:
            self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _quit(self) -> None:
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
