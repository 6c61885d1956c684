"""The gateway's HTTPS and WSS: Sanic's TLS from ``BURROW_TLS_CERT`` / ``BURROW_TLS_KEY``,
and HSTS on every answer a client got over https.

The certificate is loaded once in the main process before Sanic starts, so that a
key that does not match, a file that is not PEM or a certificate without names
ends ``python -m gateway`` with one line naming the variable instead of a traceback in
every worker. Sanic's workers are spawned processes; they get the two paths (a dict,
Sanic's own shorthand) and load them again.
"""

from __future__ import annotations

import ssl
from typing import Any

from sanic import Request
from sanic.http.tls.context import process_to_context
from sanic.response import BaseHTTPResponse

from burrow.runtime.settings import ConfigError, Settings

# A year, the value browsers' preload lists ask for; no includeSubDomains: other
# hosts of the operator's domain may still need plain http, that is their call.
HSTS = "max-age=31536000"


def server_ssl(settings: Settings) -> dict[str, Any] | None:
    """Sanic's ``ssl`` argument, None without TLS; raises :exc:`ConfigError` for files
    Sanic could not serve with."""
    if not settings.tls_cert:
        return None
    files = {"cert": settings.tls_cert, "key": settings.tls_key}
    try:
        process_to_context(dict(files))  # what each worker will do: fail here, once
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"BURROW_TLS_CERT / BURROW_TLS_KEY: cannot serve TLS with "
                          f"{settings.tls_cert} and {settings.tls_key} ({exc})") from None
    except KeyError:  # Sanic reads the certificate's subjectAltName
        raise ConfigError(f"BURROW_TLS_CERT: {settings.tls_cert} names no host "
                          "(subjectAltName): no client could verify it") from None
    return files


def over_https(request: Request) -> bool:
    """Whether the client reached us over TLS: this connection's own, or, behind a proxy
    Sanic trusts (``SANIC_PROXIES_COUNT``, ``SANIC_FORWARDED_SECRET``,
    ``SANIC_REAL_IP_HEADER``), the proxy's word in ``X-Forwarded-Proto`` /
    ``Forwarded: proto=``. Sanic reads no forwarded header of an untrusted client, so
    nobody talks a plain-http gateway into sending HSTS."""
    if request.conn_info is not None and request.conn_info.ssl:
        return True
    return str(request.forwarded.get("proto", "")).lower() in ("https", "wss")


async def strict_transport(request: Request, answer: BaseHTTPResponse) -> None:
    """HSTS over https only: browsers ignore it over plain http (RFC 6797 8.1), where
    it would only suggest a protection that is not there."""
    if over_https(request):
        answer.headers.setdefault("Strict-Transport-Security", HSTS)
