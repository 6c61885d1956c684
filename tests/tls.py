"""A throw-away certificate authority for the TLS tests (the ``trustme`` package).

Real servers read PEM files, so each certificate is written out as the files the
private RabbitMQ node, the embedded database and the gateway are given; clients trust
:attr:`ThrowawayCA.ca_file` and nothing else.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from burrow.devstack.tls import TlsFiles

LOOPBACK = ("127.0.0.1", "localhost")


class ThrowawayCA:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA(organization_name="Burrow tests")
        self.ca_file = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def server(self, name: str, hosts: tuple[str, ...] = LOOPBACK) -> TlsFiles:
        """A certificate for *hosts*, written as ``NAME-cert.pem`` and ``NAME-key.pem``."""
        leaf = self._ca.issue_cert(*hosts)
        cert, key = self.directory / f"{name}-cert.pem", self.directory / f"{name}-key.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        key.chmod(0o600)
        return TlsFiles(cert=cert, key=key, ca=self.ca_file)

    def client_context(self) -> ssl.SSLContext:
        """Trusts this CA only, with host names checked: what Burrow's clients do."""
        return ssl.create_default_context(cafile=str(self.ca_file))
