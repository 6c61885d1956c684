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
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from burrow.devstack.mailbox.pages import HOST, WebServer
from burrow.devstack.mailbox.store import (
    MAX_MAIL_BYTES,
    MAX_MAILS,
    MAX_TOTAL_BYTES,
    Mail,
    Mailbox,
    installed,
    smtp_factory,
)
from burrow.devstack.processes import AppProcess
from burrow.runtime.settings import ConfigError

HTTP_PORT: Final = 8025  # mailpit's web port in docker-compose.yml
SMTP_PORT: Final = 1025  # BURROW_SMTP_URL's default, and mailpit's SMTP port
HTTP_PORT_VAR: Final = "BURROW_DEV_MAILBOX_PORT"
SMTP_PORT_VAR: Final = "BURROW_DEV_SMTP_PORT"
MODULE: Final = "burrow.devstack.mailbox"



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


