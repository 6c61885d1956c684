"""The embedded MongoDB-wire server (SecantusDB) as a separate process on loopback.

Used when no ``BURROW_MONGO_URL`` is given: these machines have no ``mongod`` package.
SecantusDB speaks the real wire protocol over WiredTiger, so Burrow's code talks to it as
to any mongod. It is GPL-2.0: Burrow only ever runs it as its own process.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from burrow.devstack.processes import stop_group
from burrow.devstack.tls import TlsFiles


class DatabaseFailed(RuntimeError):
    """The database server did not come up; the message ends with its log's tail."""


def installed() -> bool:
    return importlib.util.find_spec("secantus") is not None


class EmbeddedMongo:
    """Call :meth:`start` then :meth:`wait_ready`; :meth:`stop` ends it."""

    def __init__(self, storage: Path, port: int, tls: TlsFiles | None = None) -> None:
        self.storage = storage
        self.port = port
        self.tls = tls  # TLS only: the server takes no plain connection then
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = storage.parent / f"{storage.name}.log"

    @property
    def url(self) -> str:
        return self.database_url("")

    def database_url(self, name: str) -> str:
        """The URL Burrow's processes get. ``retryWrites=false``: SecantusDB keeps a
        record of every retryable write for 30 minutes and, past 10,000 of them, sorts
        them all on each write (0.7.0b3); a gateway holding 10,000 connections spent
        most of the database's time there. Burrow does not need PyMongo's one silent
        retry: its writes are idempotent and a failed one is retried by its caller
        (the sequencer requeues, presence restores). Keep retryable writes on with
        mongod. ``w=1&readConcernLevel=local``: one server, so the replica-set defaults
        Burrow adds to other URLs (burrow/storage/mongo_options.py) buy nothing here; the
        URL states them so the embedded server keeps its behaviour. With TLS the client
        verifies the server against the CA file."""
        url = (f"mongodb://127.0.0.1:{self.port}/{name}?directConnection=true"
               "&retryWrites=false&w=1&readConcernLevel=local")
        if self.tls is not None:
            url += f"&tls=true&tlsCAFile={urllib.parse.quote(str(self.tls.ca), safe='/')}"
        return url

    def start(self) -> None:
        if not installed():
            raise DatabaseFailed("the secantusdb package is missing: ./dev installs it "
                                 "(pip install -e '.[embedded-db]'), or set BURROW_MONGO_URL")
        self.storage.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "secantus", "--host", "127.0.0.1",
                 "--port", str(self.port), "--storage-path", str(self.storage),
                 "--log-level", "WARNING", *self._tls_arguments()],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def _tls_arguments(self) -> list[str]:
        # No --tls-ca-file: that would ask clients for certificates; they log in (or,
        # embedded, need not), and verify the server's.
        if self.tls is None:
            return []
        return ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        client: MongoClient[dict[str, object]]
        with MongoClient(self.url, serverSelectionTimeoutMS=500) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise DatabaseFailed(f"the database exited with {self.process.returncode}"
                                         f"{self._log_tail()}")
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError as exc:
                    last_error = str(exc).split(",")[0]
                time.sleep(0.2)
        raise DatabaseFailed(f"the database did not answer on port {self.port} within "
                             f"{timeout:.0f}s ({last_error}){self._log_tail()}")

    def _log_tail(self, lines: int = 25) -> str:
        if not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- " + str(self.log_path) + "\n" + "\n".join(tail)

    def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        stop_group(process, timeout)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start()
        self.wait_ready(timeout)
