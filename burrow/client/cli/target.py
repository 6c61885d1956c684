"""The CLI's HTTP side: whom it talks to and as whom (:class:`Target`), dev tokens, and
the error a missing gateway makes. Shared by every command module of the CLI."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from burrow.client.cli import output
from burrow.client.cli.output import CliError
from burrow.core import tokens

CHANGE_ATTEMPTS = 3  # a change request the gateway could not serve (503, 504, away)


@dataclass
class Target:
    """Where to talk to and as whom; the token is minted lazily (and again, for a long
    ``tail``, at every reconnect: dev tokens are short-lived)."""

    url: str
    token_source: Callable[[], str]
    as_json: bool
    out: TextIO
    ssl_context: ssl.SSLContext  # https: whom to trust (burrow.core.tls.client_context)

    def print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def http(self, method: str, path: str, body: Any = None, *, content: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        """The JSON answer (None for 204); raises :exc:`CliError` for any refusal.

        *body* goes as JSON; *content* (bytes or a file) as it is, with *headers*."""
        try:
            with httpx.Client(base_url=self.url, timeout=30,
                              verify=self.ssl_context) as client:
                response = client.request(method, path, json=body, content=content,
                                          headers={**(headers or {}), "Authorization":
                                                   f"Bearer {self.token_source()}"})
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from None
        try:
            data = response.json() if response.content else None
        except ValueError:  # not JSON: a proxy's error page, say
            data = None
        if response.status_code >= 300:
            raise output.http_error(response.status_code, data)
        return data

    def change(self, path: str, body: Any = None) -> Any:
        """POST a change (edit, delete, reaction) with an Idempotency-Key, repeated with
        the same key while the gateway cannot serve it: stored once, whatever happens."""
        key = uuid.uuid4().hex
        for attempt in range(1, CHANGE_ATTEMPTS + 1):
            try:
                return self.http("POST", path, body, headers={"Idempotency-Key": key})
            except CliError as exc:
                if exc.code != output.UNAVAILABLE or attempt == CHANGE_ATTEMPTS:
                    raise
            time.sleep(attempt)
        raise AssertionError("unreachable")  # pragma: no cover


def unreachable(url: str, exc: Exception) -> CliError:
    hint = (" (the gateway's certificate is not trusted: give its CA with --ca-file or "
            "SSL_CERT_FILE)" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "")
    return CliError(f"cannot reach the gateway at {url}: {exc or type(exc).__name__}{hint}",
                    output.UNAVAILABLE)


def dev_token(url: str, user: str, ttl: int | None, admin: bool, secret: str,
              context: ssl.SSLContext) -> str:
    """Mint locally with *secret* (HS256), else ask the gateway's dev login."""
    roles = ("admin",) if admin else ()
    if secret:
        return tokens.mint(secret, user, ttl or 3600, roles)
    body: dict[str, Any] = {"user": user, **({"ttl": ttl} if ttl else {}),
                            **({"roles": list(roles)} if roles else {})}
    try:
        response = httpx.post(f"{url}/v1/dev/token", json=body, timeout=30,
                              verify=context)
    except httpx.TransportError as exc:
        raise unreachable(url, exc) from None
    data = response.json() if response.content else None
    if response.status_code == 404:
        raise CliError("the gateway is not in dev mode (BURROW_DEV_MODE): give --token, "
                       "or --secret to mint one", output.NOT_FOUND)
    if response.status_code != 200:
        raise output.http_error(response.status_code, data)
    return str(response.json()["token"])


def room_path(room: str, rest: str = "") -> str:
    return f"/v1/rooms/{quote(room, safe='')}{rest}"
