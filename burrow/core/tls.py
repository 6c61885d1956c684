"""Burrow's TLS policy, shared by its processes and its clients: a peer's certificate is
always verified.

Each library keeps its own TLS options in its URL (aio-pika: ``amqps://...?cafile=``,
PyMongo: ``mongodb://...?tls=true&tlsCAFile=``), so Burrow passes those URLs through
as they are; what it adds is a refusal of the options that switch verification off or
that look like TLS but are not (a CA file on a plain ``amqp://`` URL), since either
would leave the link open to whoever sits on the path while the operator believes it
is protected (docs/security.md, "TLS").
"""

from __future__ import annotations

import ssl
from urllib.parse import parse_qsl, urlsplit

# aio-pika / aiormq URL options that only mean something on amqps://
_AMQP_TLS_OPTIONS = frozenset({"cafile", "capath", "cadata", "certfile", "keyfile"})
# PyMongo URI options (case-insensitive) that accept a certificate nobody vouches for
_MONGO_INSECURE = frozenset({"tlsinsecure", "tlsallowinvalidcertificates",
                             "tlsallowinvalidhostnames"})


def verified_amqp_url(raw: str) -> str:
    """*raw* if its TLS, when asked for, verifies the broker; raises ``ValueError`` else."""
    parts = urlsplit(raw)
    query = dict(parse_qsl(parts.query))
    if query.get("no_verify_ssl", "0") != "0":
        raise ValueError("no_verify_ssl turns the broker's certificate check off; Burrow "
                         "always verifies it (give its CA with ?cafile=PATH)")
    plain_tls = sorted(_AMQP_TLS_OPTIONS & query.keys())
    if parts.scheme != "amqps" and plain_tls:
        raise ValueError(f"{plain_tls[0]}= only takes effect with TLS: use amqps://")
    return raw


def verified_mongo_url(raw: str) -> str:
    """*raw* unless it accepts invalid certificates or host names; ``ValueError`` then."""
    for key, value in parse_qsl(urlsplit(raw).query):
        if key.lower() in _MONGO_INSECURE and value.lower() not in ("false", "0"):
            raise ValueError(f"{key} turns the database's certificate check off; Burrow "
                             "always verifies it (give its CA with tlsCAFile=PATH)")
    return raw


def readable_file(raw: str) -> str:
    """A path that can be opened for reading now (empty: not set)."""
    if raw:
        try:
            with open(raw, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read {raw}: {exc.strerror}") from None
    return raw


def client_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying client context: *ca_file*'s CAs only, or without one the system's
    (OpenSSL honours ``SSL_CERT_FILE`` then), for every library of one client alike;
    httpx would otherwise fall back to certifi's bundle and websockets to the system's."""
    return ssl.create_default_context(cafile=ca_file or None)
