"""Moderation actions over HTTP for :meth:`ChatClient.moderate
<burrow.client.ChatClient.moderate>` and ``burrow moderate`` (docs/moderation.md).

One request, ``POST /v1/rooms/{room}/moderation``, with an Idempotency-Key that every
repetition keeps: an action the gateway could not complete (503, 504, or no answer) is
asked again, to the next gateway, and is taken once.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from burrow.client.errors import ChatError
from burrow.client.files import http_base
from burrow.core import tls

ATTEMPTS = 5


async def moderate(urls: Sequence[str], token: Callable[[], str], room: str, action: str,
                   user: str | None = None, *, seconds: int | None = None,
                   reason: str | None = None, key: str | None = None,
                   ssl_context: ssl.SSLContext | None = None,
                   retry_delay: float = 0.2) -> dict[str, Any]:
    """The gateway's answer to *action*; :exc:`ChatError` with its code otherwise."""
    body: dict[str, Any] = {"action": action}
    if user is not None:
        body["user"] = user
    if seconds is not None:
        body["seconds"] = seconds
    if reason:
        body["reason"] = reason
    key = key or uuid.uuid4().hex
    verify = ssl_context or tls.client_context(None)
    path = f"/v1/rooms/{quote(room, safe='')}/moderation"
    failure = "no gateway"
    for attempt in range(ATTEMPTS):
        base = http_base(urls[attempt % len(urls)])
        try:
            async with httpx.AsyncClient(base_url=base, timeout=30, verify=verify) as http:
                response = await http.post(path, json=body, headers={
                    "Authorization": f"Bearer {token()}", "Idempotency-Key": key})
        except httpx.TransportError as exc:
            failure = f"{base}: {exc or type(exc).__name__}"
        else:
            try:
                data = response.json() if response.content else None
            except ValueError:  # not JSON: a proxy's error page
                data = None
            if response.status_code == 200 and isinstance(data, dict):
                return data
            error = data.get("error") if isinstance(data, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            if response.status_code < 500:
                raise ChatError(str(code or "refused"), str(
                    error.get("message", "") if isinstance(error, dict)
                    else f"HTTP {response.status_code}"))
            failure = f"{base}: HTTP {response.status_code} {code or ''}".rstrip()
        await asyncio.sleep(retry_delay * (attempt + 1))
    raise ChatError("unavailable", f"the action is not complete: {failure}")
