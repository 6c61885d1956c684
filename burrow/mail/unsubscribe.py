"""Signed unsubscribe tokens for the links in digest mails.

The token sits in a URL that a mail provider may POST to without a login (RFC 8058
one-click), so the signature is the only proof that Burrow wrote it. It is a signed link
token (:mod:`burrow.mail.links`, shared with address verification) whose audience names the mailing list (``burrow:unsubscribe:digest``): a chat access token
either has no audience or another one, so PyJWT refuses it here, and the gateway, which
expects no audience or its own, refuses an unsubscribe token in turn. Tokens carry no
expiry by default: a link in a mail from last year must still unsubscribe (mail clients
keep mail forever and providers treat a dead unsubscribe link as a spam signal). A reader
that wants a limit passes ``max_age``, judged against the ``iat`` claim, so the policy can
change without re-issuing anything.
"""

from __future__ import annotations

import re

from burrow.mail import links
from burrow.mail.links import CLOCK_SKEW, MAX_TOKEN_CHARS, MIN_SECRET_BYTES, BadToken, Reason

__all__ = ["AUDIENCE_PREFIX", "CLOCK_SKEW", "MAX_TOKEN_CHARS", "MIN_SECRET_BYTES", "BadToken",
           "Reason", "audience", "make_token", "read_token"]

AUDIENCE_PREFIX = "burrow:unsubscribe:"
WHAT = "unsubscribe token"

_LIST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def audience(list_name: str = "digest") -> str:
    """The JWT audience of *list_name*'s tokens (ValueError for an unusable name)."""
    if not _LIST_NAME.fullmatch(list_name):
        raise ValueError(f"list name {list_name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    return AUDIENCE_PREFIX + list_name


def make_token(secret: str, user: str, list_name: str = "digest",
               now: float | None = None) -> str:
    """A token that unsubscribes *user* from *list_name*, valid until the secret changes."""
    if not user:
        raise ValueError("user must not be empty")
    return links.sign(secret, audience(list_name), user, now=now, what="unsubscribe")


def read_token(secret: str, token: str, list_name: str = "digest", *,
               max_age: float | None = None, now: float | None = None) -> str:
    """The user *token* unsubscribes from *list_name*, or :exc:`BadToken` saying why not.

    *max_age* (seconds since the token was made) is off by default: see the module text.
    """
    links.check_secret(secret, "unsubscribe")
    expected = audience(list_name)

    def wrong_audience(aud: object) -> str:
        # Say which list a validly signed token is for; the reader may have the wrong one.
        if aud is None:
            return f"not an unsubscribe token for list {list_name!r} (it has no audience)"
        if (isinstance(aud, str) and aud.startswith(AUDIENCE_PREFIX)
                and _LIST_NAME.fullmatch(aud.removeprefix(AUDIENCE_PREFIX))):
            return (f"unsubscribe token is for list {aud.removeprefix(AUDIENCE_PREFIX)!r}, "
                    f"not {list_name!r}")
        return f"not an unsubscribe token for list {list_name!r} (audience {aud!r})"

    claims = links.read(secret, expected, token, what=WHAT, max_age=max_age, now=now,
                        wrong_audience=wrong_audience)
    user: str = claims["sub"]
    return user
