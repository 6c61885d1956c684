"""A server's TLS identity as files, for the private RabbitMQ node and the embedded
database: both servers read PEM files, and their clients need the CA's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # the server's certificate chain, leaf first (PEM)
    key: Path   # its private key (PEM)
    ca: Path    # the CA that clients verify the certificate with (PEM)
