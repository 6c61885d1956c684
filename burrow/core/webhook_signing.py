"""The signature of a webhook request (docs/events.md, "Verifying a webhook").

Like Stripe's: the header ``Burrow-Signature: t=<unix seconds>,v1=<hex>`` where the hex
is HMAC-SHA256, keyed with ``BURROW_WEBHOOK_SECRET``, over ``<t>.<raw body>``. Signing
the timestamp with the body lets a receiver refuse a request replayed later (it checks
that ``t`` is recent), and the raw body bytes are signed, so a receiver must verify
before parsing the JSON. Several ``v1=`` entries may appear (while a secret is being
rotated); one that matches is enough.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Burrow-Signature"
TOLERANCE = 300  # seconds a receiver accepts between t and its own clock, by default


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under *secret*."""
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def header(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Burrow-Signature`` value of *body* sent at *timestamp* (unix seconds)."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(secret: bytes, value: str, body: bytes, now: float,
           tolerance: float = TOLERANCE) -> bool:
    """Whether *value* (a ``Burrow-Signature`` header) signs *body* with *secret* and its
    timestamp is within *tolerance* seconds of *now*. Malformed headers are False."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t" and item.isascii() and item.isdigit() and len(item) <= 12:
            timestamp = int(item)
        elif key == "v1":
            candidates.append(item)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
