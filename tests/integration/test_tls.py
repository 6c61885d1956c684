"""TLS end to end (issue 15, item 4), with a throw-away CA (tests/tls.py).

The session's RabbitMQ node has a TLS listener, a database of this module's serves TLS
only, and the gateway serves HTTPS and WSS; the sequencer and the gateway reach the
broker and the database over TLS and verify both against the CA, and the clients
verify the gateway. Then the hostile side: plain HTTP on the TLS port gets no answer,
a client that does not trust the CA or reaches a certificate for another name stops at
the handshake (the WebSocket client, aio-pika and PyMongo alike), HSTS comes over
https only (or a trusted proxy's word), and half a TLS setup stops the gateway.
"""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Self

import aio_pika
import pytest
from pymongo.errors import ServerSelectionTimeoutError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage

from burrow.client import ChatClient
from burrow.core import tokens
from burrow.devstack import mongo, ports
from burrow.devstack.processes import wait_status
from burrow.devstack.tls import TlsFiles
from burrow.storage import database
from tests.conftest import JWT_SECRET, PASSWORDS, Vhost, running
from tests.integration.conftest import READY, Start
from tests.tls import ThrowawayCA

pytestmark = pytest.mark.integration
HSTS = "max-age=31536000"
T = 30  # seconds any one step may take on a busy machine
# The sequencer's broker user: its own role's, or the workers' shared one before roles
SEQUENCER_USER = next(u for u in ("burrow-sequencer", "burrow-worker") if u in PASSWORDS)


@pytest.fixture(scope="module")
def tls_mongo(tmp_path_factory: pytest.TempPathFactory,
              tls_ca: ThrowawayCA) -> Iterator[mongo.EmbeddedMongo]:
    """The embedded database serving TLS only (the session's one stays plain)."""
    with running(mongo.EmbeddedMongo(tmp_path_factory.mktemp("mongo-tls") / "data",
                                     ports.free_port(), tls=tls_ca.server("mongo"))) as server:
        yield server


def token(user: str) -> str:
    return tokens.mint(JWT_SECRET, user, 3600, ())


def https(port: int, method: str, path: str, context: ssl.SSLContext | None,
          user: str | None = None, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """(status, headers, JSON body) of one request to a gateway on *port*; plain http
    when *context* is None."""
    scheme = "http" if context is None else "https"
    request = urllib.request.Request(
        f"{scheme}://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {}),
                 **({"Authorization": f"Bearer {token(user)}"} if user else {})})
    try:
        with urllib.request.urlopen(request, timeout=T, context=context) as response:
            status, answer, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, answer, raw = exc.code, exc.headers, exc.read()
    return status, answer, json.loads(raw) if raw else None


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "burrow.client.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), T)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_chat_over_tls_end_to_end(
        vhost: Vhost, tls_mongo: mongo.EmbeddedMongo, tls_ca: ThrowawayCA,
        process_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, start: Start) -> None:
    # (start comes last: its processes stop before the vhost goes)
    mongo_url = tls_mongo.database_url(f"t_tls_{vhost.name[5:]}")
    cert = tls_ca.server("gateway")
    trusting = tls_ca.client_context()
    sequencer = start("worker", vhost.tls_url(SEQUENCER_USER), mongo_url, "sequencer")
    gateway = start("gateway", vhost.tls_url("burrow-gateway"), mongo_url,
                    BURROW_TLS_CERT=str(cert.cert), BURROW_TLS_KEY=str(cert.key))
    sequencer.wait("up", "up")  # its probes stay on plain loopback http
    ready = {"ready": True, "checks": {"broker": "up", "database": "up"}}
    got = await asyncio.to_thread(
        wait_status, f"https://127.0.0.1:{gateway.port}/readyz", 200, READY,
        alive=gateway.app, body=ready, context=trusting)
    assert got == (200, ready), f"{got}\n{gateway.log.read_text()[-3000:]}"

    # HTTPS API, and HSTS on every kind of answer
    status, headers, body = https(gateway.port, "POST", "/v1/rooms", trusting, "alice",
                                  {"id": "vault", "members": ["bob"]})
    assert status == 201, body
    assert headers["Strict-Transport-Security"] == HSTS
    for path, user, expected in (("/healthz", None, 200), ("/v1/rooms", None, 401),
                                 ("/no-such-path", "alice", 404)):
        status, headers, _ = https(gateway.port, "GET", path, trusting, user)
        assert (status, headers["Strict-Transport-Security"]) == (expected, HSTS), path

    # WSS: a message goes round through the broker's TLS listener and the TLS database
    wss = f"wss://127.0.0.1:{gateway.port}/v1/ws"
    bob = ChatClient([wss], lambda: token("bob"), ssl_context=trusting)
    alice = ChatClient([wss], lambda: token("alice"), ssl_context=trusting)
    try:
        await asyncio.wait_for(asyncio.gather(bob.connect(), alice.connect()), T)
        assert await asyncio.wait_for(bob.subscribe("vault"), T) == 0
        ack = await asyncio.wait_for(alice.send("vault", "over tls"), T)
        got_message = await asyncio.wait_for(bob.messages.get(), T)
    finally:
        await asyncio.gather(bob.close(), alice.close())
    assert (ack.seq, got_message.seq, got_message.body) == (1, 1, "over tls")
    client = database.open_client(mongo_url, 10.0)
    try:
        stored = await database.database(client).messages.find_one({"room": "vault"})
    finally:
        await client.close()
    assert stored is not None and (stored["seq"], stored["body"]) == (1, "over tls")

    # SSL_CERT_FILE is honoured by the Python client's default context
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_ca.ca_file))
    carol = ChatClient([wss], lambda: token("bob"))
    try:
        await asyncio.wait_for(carol.connect(), T)
        assert await asyncio.wait_for(carol.subscribe("vault", since=0), T) == 0
        assert (await asyncio.wait_for(carol.messages.get(), T)).body == "over tls"
    finally:
        await carol.close()

    # A client that does not trust the CA stops at the handshake
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.wait_for(ChatClient([wss], lambda: token("bob")).connect(), T)

    # Plain HTTP and ws:// on the TLS port get no chat answer
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), T)
    writer.close()
    assert not answer.startswith(b"HTTP/"), answer[:200]
    with pytest.raises((InvalidMessage, OSError)):
        async with asyncio.timeout(T):
            await connect(f"ws://127.0.0.1:{gateway.port}/v1/ws",
                          additional_headers={"Authorization": f"Bearer {token('bob')}"})

    # The CLI: --ca-file (HTTP and WSS), SSL_CERT_FILE, and neither
    env = {k: v for k, v in process_env.items() if k != "SSL_CERT_FILE"}
    base = ["--url", f"https://127.0.0.1:{gateway.port}", "--token", token("alice")]
    (sent, _, sent_err), (refused, _, refused_err) = await asyncio.gather(
        cli(*base, "--ca-file", str(tls_ca.ca_file), "send", "vault", "from", "the", "cli",
            env=env),
        cli(*base, "rooms", env=env))
    assert sent == 0, sent_err
    assert refused == 7 and "certificate" in refused_err, refused_err
    history, out, err = await cli(*base, "--json", "history", "vault",
                                  env={**env, "SSL_CERT_FILE": str(tls_ca.ca_file)})
    assert history == 0, err
    assert [json.loads(line)["body"] for line in out.splitlines()] == [
        "over tls", "from the cli"]
    assert "Traceback" not in gateway.log.read_text()


class HandshakeOnly:
    """A TLS server that completes handshakes and says nothing: it shows whether a
    client got past certificate verification, whatever protocol it speaks next."""

    def __init__(self, files: TlsFiles) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(files.cert, files.key)
        self.handshakes = 0
        self.port = 0

    async def _completed(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1  # asyncio calls back only after the TLS handshake
        writer.close()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._completed, "127.0.0.1", 0,
                                                  ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


def ping_mongo(url: str) -> str | None:
    """Ping through Burrow's own client settings, on an event loop of its own (whatever
    PyMongo leaves behind goes with it); the error, if any."""
    async def ping() -> None:
        client = database.open_client(url, 1.0)
        try:
            await client.admin.command("ping")
        finally:
            await client.close()

    try:
        asyncio.run(ping())
    except ServerSelectionTimeoutError as exc:
        return str(exc)
    return None


@pytest.fixture(params=["trusted", "other CA", "other name"])
async def impostor(request: pytest.FixtureRequest, tls_ca: ThrowawayCA,
                   tmp_path: Path) -> AsyncIterator[tuple[str, HandshakeOnly]]:
    if request.param == "trusted":  # the control: the same clients get through
        files = tls_ca.server("good")
    elif request.param == "other CA":
        files = ThrowawayCA(tmp_path / "other-ca").server("impostor")
    else:
        files = tls_ca.server("elsewhere", ("elsewhere.example",))
    async with HandshakeOnly(files) as server:
        yield request.param, server


async def test_certificates_that_do_not_fit_stop_every_client_at_the_handshake(
        impostor: tuple[str, HandshakeOnly], tls_ca: ThrowawayCA) -> None:
    kind, server = impostor
    ca = tls_ca.ca_file
    failures: list[str] = []

    chat = ChatClient([f"wss://127.0.0.1:{server.port}/v1/ws"], lambda: token("bob"),
                      ssl_context=tls_ca.client_context(), reconnect=False)
    try:
        await asyncio.wait_for(chat.connect(), T)
    except Exception as exc:  # noqa: BLE001 - the kind of failure is what is checked
        failures.append(f"wss: {exc!r}")

    try:  # the URL shape Burrow's processes are given (BURROW_AMQP_URL)
        connection = await aio_pika.connect(
            f"amqps://u:p@127.0.0.1:{server.port}/v?cafile={ca}", timeout=T)
        await connection.close()
    except Exception as exc:  # noqa: BLE001
        failures.append(f"amqps: {exc!r}")

    # PyMongo 4.20 sometimes leaves the socket of a TLS handshake it gave up on to the
    # garbage collector, even after its loop closed: collected here, with that
    # ResourceWarning (PyMongo's, not Burrow's) silenced, it cannot fail a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        mongo_error = await asyncio.to_thread(
            ping_mongo, f"mongodb://127.0.0.1:{server.port}/db?directConnection=true"
                        f"&tls=true&tlsCAFile={ca}")  # a BURROW_MONGO_URL
        gc.collect()
    if mongo_error is not None:
        failures.append(f"mongodb: {mongo_error}")

    assert len(failures) == 3, failures  # the server never speaks their protocols
    verify_failed = [f for f in failures if "CERTIFICATE_VERIFY_FAILED" in f]
    if kind == "trusted":
        assert not verify_failed and server.handshakes >= 3, failures
    else:
        assert len(verify_failed) == 3 and server.handshakes == 0, failures


async def test_hsts_only_over_https_or_a_trusted_proxys_word(
        vhost: Vhost, mongo_url: str, start: Start) -> None:
    plain = start("gateway", vhost.url("burrow-gateway"), mongo_url)
    proxied = start("gateway", vhost.url("burrow-gateway"), mongo_url,
                    SANIC_PROXIES_COUNT="1")
    # Ready, not only answering /healthz: a gateway stopped while its worker still
    # starts (broker link and indexes half done) can hang in its shutdown for 10-20 s
    # until it is killed (seen at this test's teardown: 20 s).
    for gateway in (plain, proxied):
        await asyncio.to_thread(gateway.wait, "up", "up")
    says_https = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    for gateway, headers, hsts in ((plain, {}, None), (plain, says_https, None),
                                   (proxied, {}, None), (proxied, says_https, HSTS)):
        status, answer, _ = https(gateway.port, "GET", "/healthz", None, headers=headers)
        assert (status, answer["Strict-Transport-Security"]) == (200, hsts), (
            gateway.port, headers)
        assert answer["X-Content-Type-Options"] == "nosniff"


def test_half_a_tls_setup_stops_the_gateway_at_startup(
        process_env: dict[str, str], tls_ca: ThrowawayCA) -> None:
    good, other = tls_ca.server("half"), tls_ca.server("other")
    # It stops before it would reach for the broker: none is needed.
    env = {**process_env, "BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:1/v",
           "BURROW_PORT": str(ports.free_port())}
    for extra, message in (
            ({"BURROW_TLS_CERT": str(good.cert)}, "BURROW_TLS_KEY is not"),
            ({"BURROW_TLS_CERT": str(good.cert), "BURROW_TLS_KEY": str(other.key)},
             "cannot serve TLS")):
        done = subprocess.run([sys.executable, "-m", "gateway"], env={**env, **extra},
                              capture_output=True, text=True, timeout=T, check=False)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
