"""A local APNs provider API (HTTP/2 over TLS, token auth), for aioapns.

Wire API served (Apple, "Sending notification requests to APNs" / "Handling notification
responses from APNs"): ``POST /3/device/{token}`` with ``authorization: bearer <JWT>``,
``apns-topic``, ``apns-push-type``, ``apns-id``, ``apns-collapse-id``... and a JSON payload.
Every answer carries ``apns-id`` (the request's, or a new one): aioapns matches responses to
requests by it, and a missing one breaks its error path. Error bodies are ``{"reason": ...}``
(plus ``"timestamp"`` in ms for 410), sent in one DATA frame (aioapns decodes frame by frame).

HTTP/2 without ALPN: aioapns opens TLS with no ALPN and speaks HTTP/2 with prior knowledge;
the fake offers ``h2`` by ALPN too and serves HTTP/2 either way.

Checked on every request, in Apple's order: the provider JWT (ES256, header ``kid`` = the key
id, ``iss`` = the team id, ``iat`` younger than an hour, signed by the .p8 key the fake was
given) → ``403 MissingProviderToken / InvalidProviderToken / ExpiredProviderToken``; then a
scripted reply if any; then ``410 Unregistered`` for :meth:`ApnsFake.unregister`\\ ed tokens;
``400 MissingTopic / TopicDisallowed`` (the topic must be one the fake was given),
``DeviceTokenNotForTopic`` (a token :meth:`ApnsFake.bind`\\ ed to another topic),
``BadDeviceToken`` (not hex, shorter than 64 digits), ``InvalidPushType``, ``BadCollapseId``
(over 64 bytes), ``BadMessageId``, ``PayloadEmpty`` and ``413 PayloadTooLarge`` (> 4 KiB).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes import FakeServer, HttpRequest, HttpResponse, Reply

PUSH_TYPES = frozenset({"alert", "background", "voip", "complication", "fileprovider", "mdm",
                        "liveactivity", "location", "pushtotalk", "widgets", "controls"})
MAX_PAYLOAD = 4096
MAX_COLLAPSE_ID = 64
_DEVICE_PATH = re.compile(r"/3/device/([^/?]*)")
_TOKEN_SHAPE = re.compile(r"(?:[0-9a-fA-F]{2}){32,100}")
_REASONS = {400: "BadDeviceToken", 403: "Forbidden", 404: "BadPath", 405: "MethodNotAllowed",
            410: "Unregistered", 413: "PayloadTooLarge", 429: "TooManyRequests",
            500: "InternalServerError", 503: "ServiceUnavailable"}


def make_p8_key() -> str:
    """A fresh APNs auth key as Apple hands it out: EC P-256, PKCS#8 PEM (AuthKey_XXX.p8)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def write_p8_key(path: Path) -> str:
    """:func:`make_p8_key`, also written to *path*; returns the PEM contents."""
    pem = make_p8_key()
    path.write_text(pem)
    return pem


def device_token() -> str:
    """A well-formed device token (32 bytes, hex), unique per call."""
    return uuid.uuid4().hex + uuid.uuid4().hex


@dataclass(frozen=True)
class ApnsRequest:
    """One notification request as the fake saw it."""

    token: str
    topic: str | None
    push_type: str | None
    collapse_id: str | None
    apns_id: str | None  # as sent (None: the fake made one up for the answer)
    priority: str | None
    payload: dict[str, Any] | None  # None: not a JSON object
    headers: dict[str, str]
    http_version: str
    status: int  # what the fake answered (decided on arrival, sent after any hold)
    reason: str | None


class ApnsFake(FakeServer[ApnsRequest]):
    """APNs for one team and key; *key* is the .p8 PEM (the fake keeps its public half)."""

    alpn = ("h2",)
    h2_without_alpn = True

    def __init__(self, *, key: str, key_id: str, team_id: str, topics: Iterable[str]) -> None:
        super().__init__()
        private = serialization.load_pem_private_key(key.encode(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise TypeError("an APNs key is an EC P-256 key")
        self.public_key = private.public_key()
        self.key_id = key_id
        self.team_id = team_id
        self.topics = frozenset(topics)
        self._unregistered: dict[str, int] = {}  # token -> ms timestamp
        self._bound: dict[str, str] = {}  # token -> its app's topic

    def unregister(self, token: str, timestamp_ms: int | None = None) -> None:
        """From now on *token* gets ``410 Unregistered`` with *timestamp_ms* (default: now)."""
        with self._lock:
            self._unregistered[token] = timestamp_ms or int(time.time() * 1000)

    def bind(self, token: str, topic: str) -> None:
        """*token* belongs to the app *topic*: other topics get ``DeviceTokenNotForTopic``."""
        with self._lock:
            self._bound[token] = topic

    # -- server side --

    async def handle(self, request: HttpRequest) -> HttpResponse:
        headers = request.headers
        match = _DEVICE_PATH.fullmatch(request.path)
        token = match.group(1) if match else ""
        sent_id = headers.get("apns-id")
        try:
            payload = json.loads(request.body)
        except ValueError:
            payload = None
        status, reason, extra = self._decide(request, match is not None, token, payload)
        answer_id = sent_id if sent_id and _is_uuid(sent_id) else str(uuid.uuid4())
        self.record(ApnsRequest(
            token=token, topic=headers.get("apns-topic"),
            push_type=headers.get("apns-push-type"), collapse_id=headers.get("apns-collapse-id"),
            apns_id=sent_id, priority=headers.get("apns-priority"),
            payload=payload if isinstance(payload, dict) else None, headers=headers,
            http_version=request.http_version, status=status, reason=reason))
        await self.wait_while_held(token)
        reply_headers = (("apns-id", answer_id), *extra)
        if status == 200:
            return HttpResponse(200, reply_headers)
        body: dict[str, Any] = {"reason": reason}
        if status == 410:
            with self._lock:
                body["timestamp"] = self._unregistered.get(token, int(time.time() * 1000))
        return HttpResponse.json(status, body, reply_headers)

    def _decide(self, request: HttpRequest, device_path: bool, token: str,
                payload: object) -> tuple[int, str | None, tuple[tuple[str, str], ...]]:
        if request.method != "POST":
            return 405, "MethodNotAllowed", ()
        if not device_path:
            return 404, "BadPath", ()
        refusal = self._check_provider_token(request.headers.get("authorization", ""))
        if refusal is not None:
            return 403, refusal, ()
        scripted = self.next_reply(token)
        if scripted is not None:
            extra = (("retry-after", scripted.retry_after),) if scripted.retry_after else ()
            reason = None if scripted.status == 200 else (
                scripted.reason or _REASONS.get(scripted.status, "InternalServerError"))
            return scripted.status, reason, extra
        with self._lock:
            unregistered = token in self._unregistered
            bound = self._bound.get(token)
        headers = request.headers
        topic = headers.get("apns-topic")
        collapse = headers.get("apns-collapse-id")
        sent_id = headers.get("apns-id")
        if unregistered:
            return 410, "Unregistered", ()
        if not topic:
            return 400, "MissingTopic", ()
        if topic not in self.topics:
            return 400, "TopicDisallowed", ()
        if not token:
            return 400, "MissingDeviceToken", ()
        if not _TOKEN_SHAPE.fullmatch(token):
            return 400, "BadDeviceToken", ()
        if bound is not None and bound != topic:
            return 400, "DeviceTokenNotForTopic", ()
        if headers.get("apns-push-type", "alert") not in PUSH_TYPES:
            return 400, "InvalidPushType", ()
        if collapse is not None and len(collapse.encode()) > MAX_COLLAPSE_ID:
            return 400, "BadCollapseId", ()
        if sent_id is not None and not _is_uuid(sent_id):
            return 400, "BadMessageId", ()
        if len(request.body) > MAX_PAYLOAD:
            return 413, "PayloadTooLarge", ()
        if not isinstance(payload, dict) or not payload:
            return 400, "PayloadEmpty", ()
        return 200, None, ()

    def _check_provider_token(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "MissingProviderToken"
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                return "InvalidProviderToken"
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"],
                                issuer=self.team_id, leeway=60,
                                options={"require": ["iss", "iat"]})
        except jwt.InvalidTokenError:
            return "InvalidProviderToken"
        if claims["iat"] < time.time() - 3600:
            return "ExpiredProviderToken"
        return None


def _is_uuid(value: str) -> bool:
    """Apple wants the canonical 8-4-4-4-12 form."""
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


__all__ = ["ApnsFake", "ApnsRequest", "Reply", "device_token", "make_p8_key", "write_p8_key"]
