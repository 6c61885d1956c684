"""A capturing SMTP server for tests: real sockets, aiosmtpd, its own thread and loop.

It runs in a background thread with its own event loop, not in the test's loop, so it
keeps answering while a test blocks (``wait_for``, a subprocess, a synchronous client)
and can serve a worker that runs in a separate process. Delivered mails are parsed with
``policy.default`` (so they are :class:`EmailMessage` with ``get_body`` and friends)
and kept with their envelope.

The port is bound before the thread starts (a socket on port 0 handed to
``loop.create_server``), so ``.port`` is known at once and nothing can take it in between;
``aiosmtpd.controller.Controller`` cannot do this (``port=0`` breaks its self-check).

Scripted failures: :meth:`refuse` answers RCPT for an address with an error code, for
as long as it is set; :meth:`fail_next` answers the next DATA(s) with an error code;
:meth:`disconnect_clients` hangs up on every client, as an idle-timeout relay would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType
from typing import Any, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_PARSER = BytesParser(_class=EmailMessage, policy=policy.default)
_DEFAULT_TEXT = {4: "4.2.0 temporarily unavailable, try again later",
                 5: "5.1.1 mailbox unavailable"}


@dataclass(frozen=True)
class Captured:
    """One accepted mail: what the client said in the envelope, and the parsed message."""
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    login: str | None  # the AUTH user, when the client authenticated


def _reply(code: int, text: str | None) -> str:
    return f"{code} {text or _DEFAULT_TEXT.get(code // 100, 'scripted reply')}"


class FakeSmtpServer:
    """Start with :meth:`start` or ``with FakeSmtpServer() as smtp:``; stop with :meth:`stop`.

    With *credentials*, MAIL is refused (530) until the client has done AUTH with them
    (AUTH is offered without TLS here: it is a loopback test server).
    """

    def __init__(self, host: str = "127.0.0.1", *, hostname: str = "fake-smtp.test",
                 credentials: tuple[str, str] | None = None) -> None:
        self.host = host
        self.hostname = hostname  # passed to aiosmtpd so it never calls socket.getfqdn()
        self.credentials = credentials
        self._cond = threading.Condition()
        self._messages: list[Captured] = []
        self._refusals: dict[str, tuple[int, str | None]] = {}
        self._data_failures: deque[tuple[int, str | None]] = deque()
        self._connections = 0
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("FakeSmtpServer is already running")
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        try:
            sock.bind((self.host, 0))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._port = int(sock.getsockname()[1])
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(loop,), daemon=True,
                                        name=f"fake-smtp-{self._port}")
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(timeout=10)
        except BaseException:
            sock.close()
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Hang up on clients, stop listening, end the thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed() and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("fake SMTP server thread did not stop")
        self._loop = self._thread = self._server = None

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # Like asyncio.run's ending: no task left pending when the loop is closed.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    async def _serve(self, sock: socket.socket) -> None:
        self._server = await asyncio.get_running_loop().create_server(self._protocol,
                                                                      sock=sock)

    def _protocol(self) -> SMTP:
        # Warnings, precisely: loop= is passed so aiosmtpd never calls its
        # _get_or_new_eventloop(), which wraps get_event_loop() in warnings.catch_warnings():
        # that swaps the process-wide filter list from this thread while pytest's own
        # catch_warnings (filterwarnings=error) is active in the main one, and the two can
        # restore each other's filters. AUTH is enforced in handle_MAIL rather than with
        # auth_required=True, which without TLS warns "Requiring AUTH while not requiring
        # TLS". Nothing else in this setup warns (checked under -X dev); aiosmtpd's
        # "Session.login_data is deprecated" after AUTH is a log record, not a warning.
        authenticator = self._authenticate if self.credentials else None
        protocol = SMTP(self, hostname=self.hostname, loop=asyncio.get_running_loop(),
                        authenticator=authenticator, auth_require_tls=False)
        with self._cond:
            self._connections += 1
            self._protocols.add(protocol)
        return protocol

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._hang_up()
        if self._server is not None:
            await self._server.wait_closed()

    async def _hang_up(self) -> None:
        for protocol in list(self._protocols):
            if protocol.transport is not None:
                protocol.transport.close()
        await asyncio.sleep(0)  # let connection_lost run before anyone looks again

    # -- what the tests see and script -------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSmtpServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """``smtp://host:port``, with the credentials when there are some."""
        user = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smtp://{user}{host}:{self.port}"

    @property
    def messages(self) -> list[Captured]:
        with self._cond:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """Connections accepted so far (to see whether a client reused one)."""
        with self._cond:
            return self._connections

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Captured]:
        """All mails once at least *count* arrived; TimeoutError after *timeout* seconds.

        Blocks the calling thread: from async code use :meth:`wait_for_async`.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"expected {count} mail(s) within {timeout} s, "
                                   f"got {len(self._messages)}")
            return list(self._messages)

    async def wait_for_async(self, count: int, timeout: float = 5.0) -> list[Captured]:
        """:meth:`wait_for` on a worker thread, so the test's event loop keeps running."""
        return await asyncio.to_thread(self.wait_for, count, timeout)

    def refuse(self, address: str, code: int = 550, message: str | None = None) -> None:
        """Answer RCPT TO *address* with *code* (4xx or 5xx) until :meth:`clear`."""
        if not 400 <= code <= 599:
            raise ValueError("a refusal code is 4xx or 5xx")
        with self._cond:
            self._refusals[address.lower()] = (code, message)

    def fail_next(self, code: int = 451, message: str | None = None, times: int = 1) -> None:
        """Answer the next *times* DATA commands with *code* (the mail is not captured)."""
        if not 400 <= code <= 599:
            raise ValueError("a failure code is 4xx or 5xx")
        with self._cond:
            self._data_failures.extend([(code, message)] * times)

    def clear(self) -> None:
        """Forget captured mails and scripted refusals."""
        with self._cond:
            self._messages.clear()
            self._refusals.clear()
            self._data_failures.clear()

    def disconnect_clients(self) -> None:
        """Close every client connection from the server side (the listener stays)."""
        if self._loop is None:
            raise RuntimeError("FakeSmtpServer is not started")
        asyncio.run_coroutine_threadsafe(self._hang_up(), self._loop).result(timeout=10)

    # -- aiosmtpd handler hooks (run on the server thread) -----------------------------

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        assert self.credentials is not None
        user, password = self.credentials
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == user.encode()
              and auth_data.password == password.encode())
        # handled=False on failure: aiosmtpd's default (handled=True) sends NO reply, and the
        # client waits for one until it times out.
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.credentials and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        with self._cond:
            refusal = self._refusals.get(address.lower())
        if refusal is not None:
            return _reply(*refusal)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._cond:
            if self._data_failures:
                return _reply(*self._data_failures.popleft())
        raw = envelope.original_content or b""
        captured = Captured(mail_from=envelope.mail_from or "",
                            rcpt_tos=tuple(envelope.rcpt_tos), message=_PARSER.parsebytes(raw),
                            raw=raw, login=session.auth_data if session.authenticated else None)
        with self._cond:
            self._messages.append(captured)
            self._cond.notify_all()
        return "250 2.0.0 Message accepted for delivery"
