"""Push notifications: what is sent, to which device, and what came of it.

The notifier worker decides *whether* and *what* to push (:mod:`consumers.notifier`);
the senders here only deliver: :mod:`burrow.push.fcm` through firebase-admin's FCM HTTP v1
API, :mod:`burrow.push.apns` through aioapns (HTTP/2, .p8 token auth). Each sender turns
the provider's answer for every device into one :class:`Outcome`, so the worker can delete
dead tokens, retry through the back-off tiers, or park the job, without knowing providers.

May import: :mod:`burrow.core`, :mod:`burrow.runtime.settings` (to build the senders),
firebase-admin, google-auth and aioapns; never the storage or the broker.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Platform = Literal["fcm", "apns"]
TokenKind = Literal["registration_token", "fid"]
"""FCM only: firebase-admin 7 deprecates ``Message.token`` for ``Message.fid``."""


@dataclass(frozen=True)
class Device:
    id: str  # Burrow's id of the registration (devices collection ``_id``)
    user: str
    platform: Platform
    token: str  # FCM registration token or Firebase installation id; APNs device token (hex)
    token_kind: TokenKind = "registration_token"
    app: str = ""  # FCM: the app id (informational); APNs: the topic (bundle id), "" = default


@dataclass(frozen=True)
class Notification:
    """One notification, the same on every device of the user.

    ``collapse_key`` is sent as FCM's ``collapse_key`` / APNs' ``apns-collapse-id``: a
    resend after a crash (at-least-once) replaces the earlier one on the device instead of
    showing twice. ``id`` is stable across resends too (APNs ``apns-id`` is a UUID made
    from it).
    """

    id: str
    title: str
    body: str
    collapse_key: str
    data: dict[str, str] = field(default_factory=dict)  # FCM data / APNs custom keys
    badge: int | None = None


class Outcome(enum.Enum):
    SENT = "sent"
    INVALID = "invalid"  # the token is dead (unregistered, bad token): delete the device
    RETRY = "retry"  # 429, 5xx, timeouts, connection errors: try again later
    FAILED = "failed"  # a permanent error that is not the token's (bad payload, auth)


@dataclass(frozen=True)
class Result:
    device: Device
    outcome: Outcome
    reason: str = ""  # provider's reason (APNs ``reason``, FCM ``errorCode``/status) or error
    retry_after: float | None = None  # seconds, when the provider said (Retry-After)


class Sender(Protocol):
    """Delivers one notification to devices of its platform; never raises for a device."""

    platform: Platform

    async def send(self, notification: Notification, devices: Sequence[Device]) -> list[Result]:
        """One :class:`Result` per device, in order."""
        ...

    async def close(self) -> None: ...
