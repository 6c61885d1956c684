"""Mint HS256 tokens for development and tests (production tokens come from your IdP)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import jwt


def mint(secret: str, user: str, ttl: float = 3600, roles: Sequence[str] = (),
         audience: str = "", issuer: str = "", now: float | None = None) -> str:
    """A token for *user* valid *ttl* seconds from *now* (default: the current time)."""
    issued = time.time() if now is None else now
    claims: dict[str, object] = {"sub": user, "iat": int(issued), "exp": int(issued + ttl)}
    if roles:
        claims["roles"] = list(roles)
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")
