"""Signed unsubscribe tokens for the links in digest mails.

The token sits in a URL that a mail provider may POST to without a login (RFC 8058
one-click), so the signature is the only proof that Burrow wrote it. It is an HS256 JWT
whose audience names the mailing list (``burrow:unsubscribe:digest``): a chat access token
either has no audience or another one, so PyJWT refuses it here, and the gateway, which
expects no audience or its own, refuses an unsubscribe token in turn. Tokens carry no
expiry by default: a link in a mail from last year must still unsubscribe (mail clients
keep mail forever and providers treat a dead unsubscribe link as a spam signal). A reader
that wants a limit passes ``max_age``, judged against the ``iat`` claim, so the policy can
change without re-issuing anything.
"""

from __future__ import annotations

import re
import time
from typing import Literal

import jwt

ALGORITHM = "HS256"
AUDIENCE_PREFIX = "burrow:unsubscribe:"
MIN_SECRET_BYTES = 32  # RFC 7518 s3.2: an HS256 key must be at least as long as the hash
MAX_TOKEN_CHARS = 2048  # ours are ~200; longer input is not worth parsing
CLOCK_SKEW = 60.0  # seconds another node's clock may run ahead when it mints a token

_LIST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Reason = Literal["malformed", "signature", "audience", "claims", "expired"]


class BadToken(ValueError):
    """The token cannot unsubscribe anyone; ``reason`` lets the HTTP layer pick a status."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def audience(list_name: str = "digest") -> str:
    """The JWT audience of *list_name*'s tokens (ValueError for an unusable name)."""
    if not _LIST_NAME.fullmatch(list_name):
        raise ValueError(f"list name {list_name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    return AUDIENCE_PREFIX + list_name


def _check_secret(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"unsubscribe secret must be at least {MIN_SECRET_BYTES} bytes "
                         f"(got {len(key)}); HS256 with a shorter key is guessable")
    return key


def make_token(secret: str, user: str, list_name: str = "digest",
               now: float | None = None) -> str:
    """A token that unsubscribes *user* from *list_name*, valid until the secret changes."""
    key = _check_secret(secret)
    if not user:
        raise ValueError("user must not be empty")
    issued = time.time() if now is None else now
    claims = {"sub": user, "aud": audience(list_name), "iat": int(issued)}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def read_token(secret: str, token: str, list_name: str = "digest", *,
               max_age: float | None = None, now: float | None = None) -> str:
    """The user *token* unsubscribes from *list_name*, or :exc:`BadToken` saying why not.

    *max_age* (seconds since the token was made) is off by default: see the module text.
    """
    key = _check_secret(secret)
    expected = audience(list_name)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise BadToken("malformed", "unsubscribe token is empty or too long")
    try:
        # iat is checked below, against *now*, so tests and callers can pin the clock.
        payload = jwt.decode(token, key, algorithms=[ALGORITHM], audience=expected,
                             options={"require": ["sub", "aud", "iat"], "verify_iat": False})
    except jwt.InvalidSignatureError:
        raise BadToken("signature", "unsubscribe token signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise _wrong_audience(key, token, list_name) from None
    except jwt.MissingRequiredClaimError as exc:
        if exc.claim == "aud":
            raise BadToken("audience", f"not an unsubscribe token for list {list_name!r} "
                                       "(it has no audience)") from None
        raise BadToken("claims", f"unsubscribe token lacks the {exc.claim!r} claim") from None
    except jwt.ExpiredSignatureError:
        raise BadToken("expired", "unsubscribe token has expired") from None
    except jwt.PyJWTError as exc:  # DecodeError, InvalidAlgorithmError, bad exp/nbf, ...
        raise BadToken("malformed", f"unsubscribe token is malformed: {exc}") from None
    user, issued = payload["sub"], payload["iat"]
    if not isinstance(user, str) or not user:
        raise BadToken("claims", "unsubscribe token names no user")
    if isinstance(issued, bool) or not isinstance(issued, (int, float)):
        raise BadToken("claims", "unsubscribe token has a non-numeric 'iat'")
    current = time.time() if now is None else now
    if issued > current + CLOCK_SKEW:
        raise BadToken("claims", "unsubscribe token is issued in the future")
    if max_age is not None and current - issued > max_age:
        raise BadToken("expired", f"unsubscribe token is older than {max_age:g} s")
    return user


def _wrong_audience(key: bytes, token: str, list_name: str) -> BadToken:
    """Say which list a validly signed token is for; claims are only echoed once verified."""
    try:
        payload = jwt.decode(token, key, algorithms=[ALGORITHM],
                             options={"verify_aud": False, "verify_iat": False,
                                      "verify_exp": False, "verify_nbf": False})
    except jwt.PyJWTError:
        return BadToken("audience", f"not an unsubscribe token for list {list_name!r}")
    aud = payload.get("aud")
    if (isinstance(aud, str) and aud.startswith(AUDIENCE_PREFIX)
            and _LIST_NAME.fullmatch(aud.removeprefix(AUDIENCE_PREFIX))):
        return BadToken("audience", f"unsubscribe token is for list "
                                    f"{aud.removeprefix(AUDIENCE_PREFIX)!r}, not {list_name!r}")
    return BadToken("audience", f"not an unsubscribe token for list {list_name!r} "
                                f"(audience {aud!r})")
