"""Signed tokens for the links Burrow puts in its mails (unsubscribe, address verification).

A link in a mail is followed without a login, so its signature is the only proof that
Burrow wrote it. Each kind of link is an HS256 JWT with an audience of its own
(``burrow:unsubscribe:digest``, ``burrow:verify-email``): a chat access token has no
audience or another one and is refused here, a token of one link kind is refused by
every other, and the gateway, which expects no audience or its own, refuses all of them
as access tokens. Times are judged against *now* (default: the clock), never PyJWT's own
clock, so callers and tests can pin it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

import jwt

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32  # RFC 7518 s3.2: an HS256 key must be at least as long as the hash
MAX_TOKEN_CHARS = 2048  # ours are ~200-300; longer input is not worth parsing
CLOCK_SKEW = 60.0  # seconds another node's clock may run ahead when it mints a token
# Three base64url parts: anything else (spaces, U+FFFD from invalid UTF-8 in the query,
# padding) is refused before a parser sees it.
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

Reason = Literal["malformed", "signature", "audience", "claims", "expired"]


class BadToken(ValueError):
    """The token proves nothing; ``reason`` lets the HTTP layer pick a status."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def check_secret(secret: str, what: str = "link") -> bytes:
    """*secret* as an HS256 key; ValueError (a setup error, not a bad token) if too short."""
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"{what} secret must be at least {MIN_SECRET_BYTES} bytes "
                         f"(got {len(key)}); HS256 with a shorter key is guessable")
    return key


def sign(secret: str, audience: str, subject: str, claims: Mapping[str, Any] | None = None,
         *, ttl: float | None = None, now: float | None = None, what: str = "link") -> str:
    """A token for *subject* and *audience*, with *claims*; it expires after *ttl* seconds
    when one is given (``exp``), and never otherwise."""
    key = check_secret(secret, what)
    if not subject:
        raise ValueError("subject must not be empty")
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {**(claims or {}), "sub": subject, "aud": audience,
                               "iat": issued}
    if ttl is not None:
        payload["exp"] = issued + int(ttl)
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def read(secret: str, audience: str, token: object, *, what: str,
         require: Collection[str] = (), max_age: float | None = None,
         now: float | None = None,
         wrong_audience: Callable[[object], str] | None = None) -> dict[str, Any]:
    """The claims of *token* once it is proven Burrow's, for *audience*, and current.

    Raises :exc:`BadToken`. *what* names the token in messages ("unsubscribe token");
    *require* lists claims beyond ``sub``, ``aud`` and ``iat``; ``exp`` is honoured when
    present; *max_age* (seconds since ``iat``) is a reader's own limit. *wrong_audience*
    words the refusal of a validly signed token for another audience (it gets that
    audience, None when there is none to show).
    """
    key = check_secret(secret, what)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise BadToken("malformed", f"{what} is empty or too long")
    if not _SHAPE.fullmatch(token):
        raise BadToken("malformed", f"{what} is malformed: not three base64url parts")
    try:
        payload: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=audience,
            options={"require": ["sub", "aud", "iat"], "verify_iat": False,
                     "verify_exp": False, "verify_nbf": False})
    except jwt.InvalidSignatureError:
        raise BadToken("signature", f"{what} signature does not verify") from None
    except jwt.InvalidAudienceError:
        shown = _audience_of(key, token)
        message = (wrong_audience(shown) if wrong_audience is not None
                   else f"not a {what} (audience {shown!r})")
        raise BadToken("audience", message) from None
    except jwt.MissingRequiredClaimError as exc:
        if exc.claim == "aud":
            message = (wrong_audience(None) if wrong_audience is not None
                       else f"not a {what} (it has no audience)")
            raise BadToken("audience", message) from None
        raise BadToken("claims", f"{what} lacks the {exc.claim!r} claim") from None
    except jwt.PyJWTError as exc:  # DecodeError, InvalidAlgorithmError, bad claims, ...
        raise BadToken("malformed", f"{what} is malformed: {exc}") from None
    # Checked once the audience is: a token of another kind is refused as that.
    for claim in require:
        if claim not in payload:
            raise BadToken("claims", f"{what} lacks the {claim!r} claim")
    subject, issued = payload["sub"], payload["iat"]
    if not isinstance(subject, str) or not subject:
        raise BadToken("claims", f"{what} names no user")
    if not _is_number(issued):
        raise BadToken("claims", f"{what} has a non-numeric 'iat'")
    current = time.time() if now is None else now
    if issued > current + CLOCK_SKEW:
        raise BadToken("claims", f"{what} is issued in the future")
    if "exp" in payload:
        if not _is_number(payload["exp"]):
            raise BadToken("claims", f"{what} has a non-numeric 'exp'")
        if current >= payload["exp"]:
            raise BadToken("expired", f"{what} has expired")
    if max_age is not None and current - issued > max_age:
        raise BadToken("expired", f"{what} is older than {max_age:g} s")
    return payload


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _audience_of(key: bytes, token: str) -> object:
    """The audience of a token whose signature verifies; None otherwise (claims are only
    echoed once they are known to be ours)."""
    try:
        payload = jwt.decode(token, key, algorithms=[ALGORITHM],
                             options={"verify_aud": False, "verify_iat": False,
                                      "verify_exp": False, "verify_nbf": False})
    except jwt.PyJWTError:
        return None
    return payload.get("aud")
