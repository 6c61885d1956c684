"""Local stand-ins for the push providers, serving their documented wire APIs over TLS.

Each fake runs an asyncio server on 127.0.0.1 in a background **thread** with its own event
loop, so it answers both a sender awaited in the test's loop and a Burrow worker in another
process, and so a client that blocks its own loop (firebase-admin fetches OAuth tokens
synchronously, LIBRARY-NOTES §7) cannot deadlock it.

What a test does with a fake (:class:`FakeServer`, shared by :mod:`tests.fakes.fcm` and
:mod:`tests.fakes.apns`)::

    with ApnsFake(...) as fake:                 # started; stopped on exit
        fake.script(token, [429, 200])          # replies consumed per request, then normal
        fake.hold(token)                        # requests for token stall ...
        fake.wait_for(1, timeout=10)            # ... (recorded on arrival) ...
        fake.release()                          # ... until released
        fake.requests                           # what arrived, in order

Everything a test calls is thread-safe; the server's own state lives in its loop.

TLS: :func:`make_tls` issues a throw-away CA and a leaf certificate for ``localhost`` and
``127.0.0.1`` (SANs); clients trust ``ca_file`` (:meth:`FakeServer.client_context`, or
:meth:`FakeServer.client_env` for clients that only read the environment). A CA and a leaf
with the usual extensions rather than one self-signed certificate, so that strict X.509
verification (on by default from Python 3.13) accepts them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http
import ipaddress
import json
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


# --- TLS material ----------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # PEM of the CA that signed the server certificate: what clients trust
    cert_file: Path
    key_file: Path


def make_tls(directory: Path) -> TlsFiles:
    """Write a fresh CA and a server certificate (SAN localhost, 127.0.0.1) into *directory*."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "burrow test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return files


# --- HTTP values -----------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    http_version: str  # "2" or "1.1": what the client really negotiated


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @classmethod
    def json(cls, status: int, value: object,
             headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        return cls(status, (("content-type", "application/json; charset=UTF-8"), *headers),
                   json.dumps(value).encode())


@dataclass(frozen=True)
class Reply:
    """A scripted answer: *status*, with the provider's *reason* (FCM ``errorCode``, APNs
    ``reason``; ``None`` = the fake's usual one for that status), an optional error
    *message* and an optional ``Retry-After`` header value."""

    status: int
    reason: str | None = None
    message: str | None = None
    retry_after: str | None = None


ScriptItem = int | Reply
R = TypeVar("R")


# --- the server ------------------------------------------------------------------------


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@dataclass
class _Stream:
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)


class FakeServer(Generic[R]):
    """A TLS server in its own thread; subclasses answer :meth:`handle` and record ``R``s.

    ``alpn`` is what the server offers; a client that negotiates ``h2`` gets HTTP/2. A client
    that negotiates nothing gets HTTP/2 when ``h2_without_alpn`` (aioapns speaks HTTP/2 with
    prior knowledge and sets no ALPN), else HTTP/1.1 (requests/urllib3 offer "http/1.1").
    """

    alpn: Sequence[str] = ("h2", "http/1.1")
    h2_without_alpn: bool = False

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._records: list[R] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._held: set[str] = set()
        self._directory = Path(tempfile.mkdtemp(prefix="burrow-fake-"))
        self.tls = make_tls(self._directory)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._hold_changed: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections = 0

    # -- life cycle (test thread) --

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError(f"{type(self).__name__} did not start")
        if self._failure is not None:
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._failure

    def stop(self) -> None:
        """Cut every connection (held requests included), stop the thread, delete the files."""
        if self._thread is not None and self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
            self._thread = None
        shutil.rmtree(self._directory, ignore_errors=True)
        if self._failure is not None:
            raise RuntimeError(f"{type(self).__name__} crashed") from self._failure

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    def client_env(self) -> dict[str, str]:
        """Environment under which default TLS contexts trust this fake (and nothing else):
        OpenSSL, thus ``ssl.create_default_context()`` and httpx, read ``SSL_CERT_FILE``;
        requests reads ``REQUESTS_CA_BUNDLE``. For ``monkeypatch.setenv`` or a worker's env."""
        return {"SSL_CERT_FILE": str(self.tls.ca_file),
                "REQUESTS_CA_BUNDLE": str(self.tls.ca_file)}

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this fake (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.tls.ca_file))

    # -- scripting, holding, recording (test thread) --

    def script(self, key: str, replies: Iterable[ScriptItem]) -> None:
        """Answer the next requests for *key* with *replies*, one each, then normally again."""
        with self._lock:
            self._scripts.setdefault(key, []).extend(
                r if isinstance(r, Reply) else Reply(r) for r in replies)

    def hold(self, key: str) -> None:
        """Stall requests for *key* after recording them, until :meth:`release`."""
        with self._lock:
            self._held.add(key)

    def release(self, key: str | None = None) -> None:
        """Let held requests (for *key*, or all) be answered."""
        with self._lock:
            if key is None:
                self._held.clear()
            else:
                self._held.discard(key)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._pulse_holds)

    @property
    def connection_count(self) -> int:
        """How many connections clients have opened so far."""
        with self._lock:
            return self._connections

    @property
    def requests(self) -> list[R]:
        with self._lock:
            return list(self._records)

    def wait_for(self, count: int, timeout: float = 10.0,
                 where: Callable[[R], bool] | None = None) -> list[R]:
        """Block until *count* requests (matching *where*) have arrived; return them all.

        Raises :class:`TimeoutError` after *timeout* seconds, saying what did arrive.
        """
        def matching() -> list[R]:
            return [r for r in self._records if where is None or where(r)]

        with self._lock:
            if not self._lock.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(
                    f"{type(self).__name__}: {len(matching())} of {count} requests after "
                    f"{timeout}s: {self._records!r}")
            return matching()

    async def wait_for_async(self, count: int, timeout: float = 10.0,
                             where: Callable[[R], bool] | None = None) -> list[R]:
        """:meth:`wait_for` from a coroutine, without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for, count, timeout, where)

    # -- for subclasses (server loop) --

    async def handle(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    def next_reply(self, key: str) -> Reply | None:
        with self._lock:
            queue = self._scripts.get(key)
            return queue.pop(0) if queue else None

    def record(self, value: R) -> None:
        with self._lock:
            self._records.append(value)
            self._lock.notify_all()

    async def wait_while_held(self, key: str) -> None:
        while True:
            with self._lock:
                if key not in self._held:
                    return
            assert self._hold_changed is not None
            await self._hold_changed.wait()

    # -- internals (server loop) --

    def _pulse_holds(self) -> None:
        assert self._hold_changed is not None
        changed, self._hold_changed = self._hold_changed, asyncio.Event()
        changed.set()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 - reported by start(), not lost
            self._failure = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._hold_changed = asyncio.Event()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        context.set_alpn_protocols(list(self.alpn))
        server = await asyncio.start_server(self._connection, HOST, 0, ssl=context)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self._connections += 1
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn == "h2" or (alpn is None and self.h2_without_alpn):
                await self._serve_h2(reader, writer)
            else:
                await self._serve_http11(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away: its problem, as with a real provider
        except asyncio.CancelledError:
            # stop() cuts the connection. Ending normally, because on 3.11 asyncio's stream
            # server callback calls task.exception() on a cancelled task and logs the error.
            pass
        finally:
            self._tasks.discard(task)
            if self._stop is not None and self._stop.is_set():
                # stopping: a client that keeps its connection open (a worker's HTTP/2
                # pool) would never answer the TLS close_notify; cut it at once
                writer.transport.abort()
            else:
                writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError,
                                     TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        try:
            return await self.handle(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a fake's bug must show, not hang
            return HttpResponse.json(500, {"fake_error": repr(error)})

    async def _serve_http11(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            method, target, _version = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            response = await self._answer(HttpRequest(method, target, headers, body, "1.1"))
            head = [f"HTTP/1.1 {response.status} {_phrase(response.status)}", f"content-length: {len(response.body)}",
                    *(f"{k}: {v}" for k, v in response.headers)]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return

    async def _serve_h2(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, _Stream] = {}
        window = asyncio.Event()
        responders: set[asyncio.Task[None]] = set()
        try:
            while data := await reader.read(65536):
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    writer.write(conn.data_to_send())
                    return
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        assert event.stream_id is not None and event.headers is not None
                        streams[event.stream_id] = _Stream(
                            {str(k): str(v) for k, v in event.headers})
                    elif isinstance(event, h2.events.DataReceived):
                        assert event.stream_id is not None and event.data is not None
                        if event.stream_id in streams:
                            streams[event.stream_id].body += event.data
                        conn.acknowledge_received_data(
                            event.flow_controlled_length or 0, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        assert event.stream_id is not None
                        stream = streams.pop(event.stream_id, None)
                        if stream is None:
                            continue
                        task = asyncio.create_task(
                            self._respond_h2(conn, writer, event.stream_id, stream, window))
                        responders.add(task)
                        task.add_done_callback(responders.discard)
                    elif isinstance(event, h2.events.StreamReset):
                        streams.pop(event.stream_id or 0, None)
                    elif isinstance(event, h2.events.WindowUpdated):
                        window.set()
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        writer.write(conn.data_to_send())
                        return
                writer.write(conn.data_to_send())
        finally:
            for task in list(responders):
                task.cancel()
            await asyncio.gather(*responders, return_exceptions=True)

    async def _respond_h2(self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter,
                          stream_id: int, stream: _Stream, window: asyncio.Event) -> None:
        headers = stream.headers
        request = HttpRequest(headers.get(":method", ""), headers.get(":path", ""),
                              {k: v for k, v in headers.items() if not k.startswith(":")},
                              bytes(stream.body), "2")
        response = await self._answer(request)
        try:
            conn.send_headers(stream_id, [
                (":status", str(response.status)), *response.headers,
                ("content-length", str(len(response.body)))], end_stream=not response.body)
            # The whole body in one DATA frame: aioapns json-decodes each frame on its own.
            # A client that never returns flow-control credit (aioapns does not) stalls here,
            # as it would against Apple.
            while response.body and conn.local_flow_control_window(stream_id) < len(
                    response.body):
                window.clear()
                writer.write(conn.data_to_send())
                await window.wait()
            if response.body:
                conn.send_data(stream_id, response.body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client reset the stream or left
        if not writer.is_closing():
            writer.write(conn.data_to_send())
