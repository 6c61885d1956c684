"""The HTTP calls a user makes to protect themself (docs/moderation.md, "Users protect
themselves"): block and unblock users, leave a room, answer invitations. Used by
:class:`burrow.client.ChatClient` (``block``, ``unblock``, ``blocks``, ``leave``,
``invitations``, ``accept``, ``decline``); no connection needed.

Refusals are :exc:`ChatError` with the server's code (``bad_user``,
``too_many_blocks``, ``owner_stays``, ``not_found``...), ``unavailable`` when no
gateway answers or one answers 5xx.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from burrow.client.errors import ChatError
from burrow.client.files import http_base
from burrow.core import tls

_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict"}


async def call(urls: Sequence[str], token: Callable[[], str], method: str, path: str, *,
               ssl_context: ssl.SSLContext | None = None, timeout: float = 30) -> Any:
    """*method* *path* on the first gateway of *urls* (WebSocket URLs, as ChatClient's)
    that answers: the JSON answer, None for 204."""
    verify = ssl_context or tls.client_context(None)
    failures: list[str] = []
    for url in urls:
        base = http_base(url)
        async with httpx.AsyncClient(base_url=base, timeout=timeout, verify=verify) as http:
            try:
                response = await http.request(method, path, headers={
                    "Authorization": f"Bearer {token()}"})
            except httpx.TransportError as exc:
                failures.append(f"{base}: {exc or type(exc).__name__}")
                continue
        try:
            data = response.json() if response.content else None
        except ValueError:  # not JSON: a proxy's error page
            data = None
        if response.status_code >= 300:
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict) and isinstance(error.get("code"), str):
                raise ChatError(error["code"], str(error.get("message", "")))
            code = ("unavailable" if response.status_code >= 500
                    else _STATUS_CODES.get(response.status_code, "refused"))
            raise ChatError(code, f"HTTP {response.status_code}")
        return data
    raise ChatError("unavailable", "cannot reach the gateway: " + "; ".join(failures))


def block_path(user: str) -> str:
    return f"/v1/me/blocks/{quote(user, safe='')}"


def member_path(room: str, user: str) -> str:
    return f"/v1/rooms/{quote(room, safe='')}/members/{quote(user, safe='')}"


def invitation_path(invitation: str, action: str) -> str:
    return f"/v1/me/invitations/{quote(invitation, safe='')}/{action}"


class Protection:
    """:class:`burrow.client.ChatClient`'s calls of this module (a mixin: it needs
    ``urls``, ``token``, ``ssl_context`` and the ``blocked`` set the client keeps)."""

    urls: Sequence[str]
    token: Callable[[], str]
    ssl_context: ssl.SSLContext | None
    blocked: set[str]

    async def blocks(self) -> set[str]:
        """The users I block (``GET /v1/me/blocks``), also kept in :attr:`blocked`:
        their messages still arrive (a room's stream has no gaps), an application hides
        them (``message.sender in client.blocked``)."""
        answer = await call(self.urls, self.token, "GET", "/v1/me/blocks",
                                    ssl_context=self.ssl_context)
        self.blocked = {entry["user"] for entry in answer["blocks"]}
        return set(self.blocked)

    async def block(self, user: str) -> None:
        """Block *user*: no pushes or digest lines of theirs, they cannot add me to rooms."""
        await call(self.urls, self.token, "PUT", block_path(user),
                           ssl_context=self.ssl_context)
        self.blocked.add(user)

    async def unblock(self, user: str) -> None:
        """Unblock *user* (``not_found`` if I did not block them)."""
        await call(self.urls, self.token, "DELETE", block_path(user),
                           ssl_context=self.ssl_context)
        self.blocked.discard(user)

    async def leave(self, room: str, me: str) -> None:
        """Leave *room* (*me*: my user id, as my token names me). An owner leaves only a
        room with no other member (``owner_stays``): hand it over first."""
        await call(self.urls, self.token, "DELETE", member_path(room, me),
                           ssl_context=self.ssl_context)

    async def invitations(self) -> list[dict[str, Any]]:
        """My pending invitations: ``[{id, room, name, by, at, expires_at}]``."""
        answer = await call(self.urls, self.token, "GET", "/v1/me/invitations",
                                    ssl_context=self.ssl_context)
        return list(answer["invitations"])

    async def accept(self, invitation: str) -> dict[str, Any]:
        """Accept an invitation: ``{room, user, added}`` (again: the same, ``added``
        false)."""
        answer: dict[str, Any] = await call(
            self.urls, self.token, "POST", invitation_path(invitation, "accept"),
            ssl_context=self.ssl_context)
        return answer

    async def decline(self, invitation: str) -> None:
        await call(self.urls, self.token, "POST",
                           invitation_path(invitation, "decline"),
                           ssl_context=self.ssl_context)
