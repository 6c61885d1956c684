"""APNs through aioapns 4.0: HTTP/2 provider API, token (.p8) authentication.

aioapns reports Apple's answers as results, not exceptions (LIBRARY-NOTES §6); this module
turns them into :class:`~burrow.push.Outcome`\\ s:

========================================================  ============
200                                                       ``SENT``
410 Unregistered; 400 BadDeviceToken, DeviceTokenNotForTopic  ``INVALID``
429, 5xx; no connection (MaxAttemptsExceeded); timeout    ``RETRY``
403 (provider token), any other 4xx                       ``FAILED``
========================================================  ============

Three aioapns behaviours shape the code (read in aioapns/connection.py, then measured):

- In-flight requests are keyed by ``apns-id``: two requests with the same id on one
  connection overwrite each other's future, and the first never completes. So
  :func:`apns_id` is made from the notification id *and* the device (stable across resends,
  distinct within a send), and a send dedupes devices that would be the same request.
- It has no request timeout. The sender bounds each request; the cancelled request's future
  is then resolved by a late answer (``set_result`` on a cancelled future raises inside the
  protocol's ``data_received``, which kills the connection and makes aioapns resend the other
  requests on it). :class:`_Hardened` drops abandoned futures before aioapns touches them,
  and the per-stream bookkeeping aioapns keeps forever for successful requests.
- It signs a new provider JWT for every connection, and drops a connection after 10 s
  idle; Apple wants a token reused for 20-60 minutes. The sender shares one provider
  (aioapns renews its token after 30 minutes) across its connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import (
    APNsDevelopmentClientProtocol,
    APNsProductionClientProtocol,
    APNsTLSClientProtocol,
    AuthorizationHeaderProvider,
    JWTAuthorizationHeaderProvider,
)
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded
from aioapns.exceptions import ConnectionError as ApnsConnectionError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from burrow.push import Device, Notification, Outcome, Platform, Result

MAX_COLLAPSE_ID_BYTES = 64  # Apple: apns-collapse-id "must not exceed 64 bytes"
_APNS_ID_NAMESPACE = uuid.UUID("0b1c5a5e-7d0e-4d43-9d1f-6f3a2a9b8e51")
_INVALID_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})


def collapse_id(key: str) -> str:
    """*key* as an ``apns-collapse-id``: itself when it fits in 64 bytes, else its SHA-256
    (64 hex digits), so a long key still collapses resends instead of being refused."""
    if len(key.encode()) <= MAX_COLLAPSE_ID_BYTES:
        return key
    return hashlib.sha256(key.encode()).hexdigest()


def apns_id(notification_id: str, topic: str, token: str) -> str:
    """The ``apns-id`` of *notification_id* to the device *token* of app *topic*.

    A name-based UUID (uuid5): the same on every resend, distinct per device, because aioapns
    matches answers to requests by this id.
    """
    return str(uuid.uuid5(_APNS_ID_NAMESPACE, f"{notification_id}\n{topic}\n{token}"))


def payload(notification: Notification) -> dict[str, Any]:
    """The JSON payload: the alert in ``aps``, the notification's data as custom keys.

    ``notification_id`` is added as FCM's data carries it: the app sees no ``apns-id``.
    ``aps`` goes last so custom data cannot replace it.
    """
    aps: dict[str, Any] = {"alert": {"title": notification.title, "body": notification.body},
                           "sound": "default"}
    if notification.badge is not None:
        aps["badge"] = notification.badge
    return {**notification.data, "notification_id": notification.id, "aps": aps}


def outcome(result: NotificationResult) -> tuple[Outcome, str]:
    """Apple's answer as an outcome and a reason (Apple's ``reason``, else the status)."""
    reason = result.description or result.status
    if result.is_successful:
        return Outcome.SENT, ""
    status = int(result.status) if result.status.isdigit() else 0
    if status == 410 or (status == 400 and result.description in _INVALID_TOKEN_REASONS):
        return Outcome.INVALID, reason
    if status == 429 or status >= 500:
        return Outcome.RETRY, reason
    return Outcome.FAILED, reason


class _Hardened(APNsTLSClientProtocol):
    """aioapns' protocol, made safe for cancelled requests, observable when closed, and
    sharing its sender's provider token."""

    shared_auth: AuthorizationHeaderProvider | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.shared_auth is not None:
            self.auth_provider = self.shared_auth
        self.lost = asyncio.Event()

    def _forget_if_abandoned(self, notification_id: str) -> None:
        # A request cancelled by the sender's timeout leaves its (cancelled) future here;
        # aioapns would call set_result on it and raise InvalidStateError.
        future = self.requests.get(notification_id)
        if future is not None and future.done():
            del self.requests[notification_id]

    def on_response_received(self, headers: dict[bytes, bytes]) -> None:
        self._forget_if_abandoned(headers.get(b"apns-id", b"").decode())
        super().on_response_received(headers)

    def on_data_received(self, raw_data: bytes, stream_id: int) -> None:
        notification_id = self.request_streams.get(stream_id, "")
        self._forget_if_abandoned(notification_id)
        super().on_data_received(raw_data, stream_id)
        if notification_id not in self.requests:  # answered, or abandoned: status unused
            self.request_statuses.pop(notification_id, None)

    def on_stream_ended(self, stream_id: int) -> None:
        # aioapns forgets a stream only when an error body arrives: without this, every
        # successful request stays in request_streams for the connection's life (measured:
        # 500 entries after 500 sends).
        self.request_streams.pop(stream_id, None)
        super().on_stream_ended(stream_id)

    def connection_lost(self, exc: Exception | None) -> None:
        # aioapns sets ConnectionClosed on every pending future: not on cancelled ones.
        for notification_id in [i for i, f in self.requests.items() if f.done()]:
            del self.requests[notification_id]
        super().connection_lost(exc)
        self.lost.set()


class _Production(_Hardened, APNsProductionClientProtocol):
    pass


class _Development(_Hardened, APNsDevelopmentClientProtocol):
    pass


class ApnsSender:
    """Sends alerts through APNs with a .p8 token-auth key.

    *key* is the PEM **contents** of the .p8 file (aioapns takes no path); *topic* is the
    default bundle id, replaced by a device's ``app`` when set. *host*/*port* point it at
    another server than Apple's (tests: with an *ssl_context* trusting that server's CA).
    Each request is bounded by *timeout* seconds. aioapns needs a running loop when built,
    so the client is made at the first :meth:`send`; :meth:`close` closes its connections
    (a later :meth:`send` would open new ones, with the same provider token).
    """

    platform: Platform = "apns"

    def __init__(self, *, key: str, key_id: str, team_id: str, topic: str,
                 use_sandbox: bool = False, host: str | None = None, port: int | None = None,
                 ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0,
                 max_connections: int = 4, max_connection_attempts: int = 3) -> None:
        # Fail at start-up, not at the first send, on a path or a non-EC key.
        loaded = serialization.load_pem_private_key(key.encode(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise TypeError("an APNs auth key (.p8) is an EC P-256 private key")
        self._key = key
        self._key_id = key_id
        self._team_id = team_id
        self._topic = topic
        self._use_sandbox = use_sandbox
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_connection_attempts = max_connection_attempts
        base: type[_Hardened] = _Development if use_sandbox else _Production
        # One provider token for all of this sender's connections (aioapns makes one per
        # connection, and closes idle connections after 10 s): Apple refuses tokens
        # "recreated more than once every 20 minutes" (TooManyProviderTokenUpdates).
        provider = JWTAuthorizationHeaderProvider(
            key=key, key_id=key_id, team_id=team_id)
        self._protocol_class: type[_Hardened] = type("_SenderProtocol", (base,), {
            "APNS_SERVER": host if host is not None else base.APNS_SERVER,
            "APNS_PORT": port if port is not None else base.APNS_PORT,
            "shared_auth": provider})
        self._apns: APNs | None = None

    def _client(self) -> APNs:
        if self._apns is None:
            apns = APNs(key=self._key, key_id=self._key_id, team_id=self._team_id,
                        topic=self._topic, use_sandbox=self._use_sandbox,
                        ssl_context=self._ssl_context, max_connections=self._max_connections,
                        max_connection_attempts=self._max_connection_attempts,
                        err_func=_ignore_error)
            # The documented way to choose the protocol (LIBRARY-NOTES §6): per pool, no
            # global patch.
            apns.pool.protocol_class = self._protocol_class
            self._apns = apns
        return self._apns

    async def send(self, notification: Notification, devices: Sequence[Device]) -> list[Result]:
        """One :class:`Result` per device, in order; never raises for a device."""
        if not devices:
            return []
        apns = self._client()
        message = payload(notification)
        collapse = collapse_id(notification.collapse_key)
        keys = [(d.app or self._topic, d.token) for d in devices]
        unique: dict[tuple[str, str], Device] = {}
        for key, device in zip(keys, devices):
            unique.setdefault(key, device)  # the same request twice would share an apns-id
        answers = await asyncio.gather(*(
            self._send_one(apns, notification.id, message, collapse, topic, device)
            for (topic, _), device in unique.items()))
        by_key = dict(zip(unique, answers))
        return [replace(by_key[key], device=device) for key, device in zip(keys, devices)]

    async def _send_one(self, apns: APNs, notification_id: str, message: dict[str, Any],
                        collapse: str, topic: str, device: Device) -> Result:
        request = NotificationRequest(
            device_token=device.token, message=message,
            notification_id=apns_id(notification_id, topic, device.token),
            collapse_key=collapse, push_type=PushType.ALERT, apns_topic=topic)
        try:
            async with asyncio.timeout(self._timeout):
                answer = await apns.send_notification(request)
        except TimeoutError:
            return Result(device, Outcome.RETRY, f"no answer in {self._timeout}s")
        except (MaxAttemptsExceeded, ApnsConnectionError, ConnectionClosed, OSError) as error:
            return Result(device, Outcome.RETRY, type(error).__name__)
        verdict, reason = outcome(answer)
        return Result(device, verdict, reason)

    async def close(self) -> None:
        """Close the connections and wait until they are closed (bounded by the timeout)."""
        apns, self._apns = self._apns, None
        if apns is None:
            return
        connections = [c for c in apns.pool.connections if isinstance(c, _Hardened)]
        apns.pool.close()
        waits = [asyncio.create_task(c.lost.wait()) for c in connections]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self._timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _ignore_error(request: NotificationRequest, result: NotificationResult) -> None:
    """Errors become Results; without this aioapns logs each at ERROR level."""
