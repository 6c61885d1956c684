"""A local FCM HTTP v1 server with Google's OAuth2 token endpoint, for firebase-admin.

Wire API served (https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send):

- ``POST /v1/projects/{project}/messages:send`` with ``Authorization: Bearer <token>`` and
  ``{"message": {...}}`` → ``200 {"name": "projects/{project}/messages/{n}"}``, or an error in
  FCM v1's shape ``{"error": {"code", "message", "status", "details": [{"@type":
  "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": ...}]}}``. A bearer the
  fake did not issue gets Google's plain ``401 UNAUTHENTICATED``.
- ``POST /token`` (``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT``):
  the service-account flow. The assertion's RS256 signature is verified against the public
  key of a service account written by :meth:`FcmFake.write_service_account`; its ``aud`` must
  be ``https://oauth2.googleapis.com/token`` (google-auth always sends that, whatever the
  ``token_uri``), its lifetime at most an hour, its scopes must allow FCM. Refusals are
  ``400 {"error": "invalid_grant", ...}`` as Google's.

HTTP/2 over TLS, as against Google: firebase-admin's httpx client (``http2=True``) offers
``h2`` by ALPN and gets it (each record says ``http_version``); google-auth fetches tokens
through requests, which offers only ``http/1.1``, and gets HTTP/1.1 on the same port. The real
SDK trusts the fake's CA through the environment, no patching: httpx reads ``SSL_CERT_FILE``
and requests reads ``REQUESTS_CA_BUNDLE`` when their clients are built (the messaging
client: when :class:`burrow.push.fcm.FcmSender` is constructed) — :meth:`FcmFake.client_env`.
Both files hold only the fake's CA, so a process given them cannot reach the real Google.

Without scripting, a request is answered as FCM would: ``200``; ``404 UNREGISTERED`` for a
token passed to :meth:`FcmFake.unregister`; ``400 INVALID_ARGUMENT`` "The registration token
is not a valid FCM registration token" for a target that is not token-shaped; ``400`` about
the field for a data value that is not a string; ``403 PERMISSION_DENIED`` for another
project. ``script(token, [503, Reply(429, retry_after="7"), 200])`` overrides, per request,
after authentication; a bare status gets FCM's usual error for it (see ``_ERRORS``).
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes import FakeServer, HttpRequest, HttpResponse, Reply

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPES = frozenset({"https://www.googleapis.com/auth/firebase.messaging",
                        "https://www.googleapis.com/auth/cloud-platform"})
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

# status -> (canonical status, FCM errorCode, message), as FCM answers them.
_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("INVALID_ARGUMENT", "INVALID_ARGUMENT",
          "The registration token is not a valid FCM registration token"),
    401: ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "Auth error from APNS or Web Push Service"),
    403: ("PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
    404: ("NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED",
          "Quota exceeded for quota metric 'Messages' and limit 'Messages per minute'."),
    500: ("INTERNAL", "INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
}
_TARGET_SHAPE = re.compile(r"[A-Za-z0-9_:.\-]+")
_SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")
_TARGETS = ("token", "fid", "topic", "condition")


@dataclass(frozen=True)
class FcmRequest:
    """One ``messages:send`` call as the fake saw it."""

    target: str  # the token, fid, topic or condition ("" when not exactly one)
    target_kind: str  # "token", "fid", "topic", "condition" or ""
    title: str | None
    body: str | None
    data: dict[str, Any]
    android_collapse_key: str | None
    apns_collapse_id: str | None
    message: dict[str, Any]  # the whole "message" object as sent
    bearer: str | None
    headers: dict[str, str]
    http_version: str
    status: int  # what the fake answered (decided on arrival, sent after any hold)


@dataclass(frozen=True)
class TokenRequest:
    """One OAuth2 token request: who asked, and whether the fake granted it."""

    client_email: str | None
    granted: bool
    error: str
    http_version: str


@dataclass(frozen=True)
class _Account:
    key_id: str
    public_key: rsa.RSAPublicKey


class FcmFake(FakeServer[FcmRequest]):
    """FCM and its token endpoint; ``require_auth=False`` accepts requests without a bearer
    (for a sender on anonymous credentials)."""

    def __init__(self, project_id: str = "burrow-test", *, require_auth: bool = True,
                 token_lifetime: int = 3600) -> None:
        super().__init__()
        self.project_id = project_id
        self.require_auth = require_auth
        self.token_lifetime = token_lifetime
        self._accounts: dict[str, _Account] = {}
        self._issued: dict[str, float] = {}  # access token -> monotonic expiry
        self._token_requests: list[TokenRequest] = []
        self._unregistered: set[str] = set()
        self._sent = 0
        self._account_count = 0

    @property
    def base_url(self) -> str:
        """What :class:`burrow.push.fcm.FcmSender` takes as ``endpoint``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def write_service_account(self, path: Path, *, known: bool = True) -> Path:
        """Write a service-account JSON (fresh RSA key, ``token_uri`` = this fake) to *path*.

        ``known=False``: the fake holds a *different* public key for that account (a rotated
        or revoked key), so its token requests fail with "Invalid JWT Signature."
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with self._lock:
            self._account_count += 1
            number = self._account_count
        email = f"fcm-sender-{number}@{self.project_id}.iam.gserviceaccount.com"
        key_id = secrets.token_hex(20)
        public = key.public_key() if known else rsa.generate_private_key(
            public_exponent=65537, key_size=2048).public_key()
        with self._lock:
            self._accounts[email] = _Account(key_id, public)
        info = {
            "type": "service_account", "project_id": self.project_id,
            "private_key_id": key_id,
            "private_key": key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode(),
            "client_email": email, "client_id": str(10**20 + number),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }
        path.write_text(json.dumps(info))
        return path

    def unregister(self, token: str) -> None:
        """From now on, sends to *token* get ``404 UNREGISTERED`` (the app was uninstalled)."""
        with self._lock:
            self._unregistered.add(token)

    def revoke_access_tokens(self) -> None:
        """Forget every issued bearer: the next send gets 401 until the client refreshes."""
        with self._lock:
            self._issued.clear()

    @property
    def token_requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._token_requests)

    # -- server side --

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path == "/token":
            return self._token(request)
        match = _SEND_PATH.fullmatch(request.path)
        if request.method != "POST" or match is None:
            return _error(404, "NOT_FOUND", "Requested entity was not found.")
        bearer = _bearer(request.headers.get("authorization", ""))
        try:
            body = json.loads(request.body)
            message = body["message"]
            if not isinstance(message, dict):
                raise TypeError("message is not an object")
        except (ValueError, KeyError, TypeError):
            message = {}
        targets = [k for k in _TARGETS if k in message]
        kind = targets[0] if len(targets) == 1 else ""
        target = str(message.get(kind, "")) if kind else ""
        response = self._decide(match.group(1), bearer, message, kind, target)
        notification = message.get("notification") or {}
        self.record(FcmRequest(
            target=target, target_kind=kind, title=notification.get("title"),
            body=notification.get("body"), data=dict(message.get("data") or {}),
            android_collapse_key=(message.get("android") or {}).get("collapse_key"),
            apns_collapse_id=((message.get("apns") or {}).get("headers") or {}).get(
                "apns-collapse-id"),
            message=message, bearer=bearer, headers=request.headers,
            http_version=request.http_version, status=response.status))
        await self.wait_while_held(target)
        return response

    def _decide(self, project: str, bearer: str | None, message: dict[str, Any], kind: str,
                target: str) -> HttpResponse:
        if self.require_auth and not self._valid_bearer(bearer):
            return HttpResponse.json(401, {"error": {
                "code": 401, "status": "UNAUTHENTICATED",
                "message": "Request had invalid authentication credentials. Expected OAuth 2 "
                           "access token, login cookie or other valid authentication "
                           "credential."}})
        if project != self.project_id:
            return _error(403, "PERMISSION_DENIED",
                          f"Permission 'cloudmessaging.messages.create' denied on resource "
                          f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or "
                          f"it may not exist).", fcm_code=None)
        if not kind:
            return _error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        scripted = self.next_reply(target)
        if scripted is not None:
            return self._scripted(scripted)
        with self._lock:
            unregistered = target in self._unregistered
        if unregistered:
            return self._scripted(Reply(404))
        if kind in ("token", "fid") and not _TARGET_SHAPE.fullmatch(target):
            return self._scripted(Reply(400))
        data = message.get("data") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return _error(400, "INVALID_ARGUMENT",
                          "Invalid value at 'message.data' (type.googleapis.com/"
                          "google.protobuf.Struct), a data value is not a string")
        with self._lock:
            self._sent += 1
            number = self._sent
        return HttpResponse.json(200, {"name": f"projects/{self.project_id}/messages/{number}"})

    def _scripted(self, reply: Reply) -> HttpResponse:
        if reply.status == 200:
            with self._lock:
                self._sent += 1
                number = self._sent
            return HttpResponse.json(
                200, {"name": f"projects/{self.project_id}/messages/{number}"})
        status, code, message = _ERRORS.get(reply.status, ("UNKNOWN", "UNSPECIFIED_ERROR",
                                                           "Unknown error."))
        headers = (("retry-after", reply.retry_after),) if reply.retry_after else ()
        return _error(reply.status, status, reply.message or message,
                      fcm_code=reply.reason or code, headers=headers)

    def _valid_bearer(self, bearer: str | None) -> bool:
        with self._lock:
            expiry = self._issued.get(bearer or "")
        return expiry is not None and expiry > time.monotonic()

    def _token(self, request: HttpRequest) -> HttpResponse:
        form = urllib.parse.parse_qs(request.body.decode())
        assertion = form.get("assertion", [""])[0]
        email: str | None = None
        try:
            if form.get("grant_type", [""])[0] != JWT_BEARER:
                raise _Refusal("unsupported_grant_type", "Invalid grant_type.")
            email = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
            with self._lock:
                account = self._accounts.get(email or "")
            if account is None:
                raise _Refusal("invalid_grant", "Invalid grant: account not found")
            if jwt.get_unverified_header(assertion).get("kid") != account.key_id:
                raise _Refusal("invalid_grant", "Invalid JWT Signature.")
            claims = jwt.decode(assertion, account.public_key, algorithms=["RS256"],
                                audience=GOOGLE_TOKEN_AUDIENCE, issuer=email, leeway=30,
                                options={"require": ["iss", "aud", "iat", "exp", "scope"]})
            if claims["exp"] - claims["iat"] > 3600:
                raise _Refusal("invalid_grant", "Invalid JWT: Token must be a short-lived "
                               "token (60 minutes) and in a reasonable timeframe.")
            if not FCM_SCOPES & set(str(claims["scope"]).split()):
                raise _Refusal("invalid_scope", "The scopes do not allow FCM.")
        except jwt.InvalidSignatureError:
            return self._refuse(email, "invalid_grant", "Invalid JWT Signature.", request)
        except jwt.InvalidTokenError as error:
            return self._refuse(email, "invalid_grant", f"Invalid JWT: {error}", request)
        except _Refusal as refusal:
            return self._refuse(email, refusal.error, refusal.description, request)
        token = f"ya29.fake-{secrets.token_urlsafe(24)}"
        with self._lock:
            self._issued[token] = time.monotonic() + self.token_lifetime
            self._token_requests.append(TokenRequest(email, True, "", request.http_version))
            self._lock.notify_all()
        return HttpResponse.json(200, {"access_token": token, "expires_in": self.token_lifetime,
                                       "token_type": "Bearer"})

    def _refuse(self, email: str | None, error: str, description: str,
                request: HttpRequest) -> HttpResponse:
        with self._lock:
            self._token_requests.append(
                TokenRequest(email, False, f"{error}: {description}", request.http_version))
            self._lock.notify_all()
        return HttpResponse.json(400, {"error": error, "error_description": description})


class _Refusal(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _bearer(authorization: str) -> str | None:
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _error(code: int, status: str, message: str, *, fcm_code: str | None = "",
           headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    """FCM v1's error body; *fcm_code* ``""`` = the same as *status*, ``None`` = no FcmError."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if fcm_code is not None:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code or status}]
    return HttpResponse.json(code, {"error": error}, headers)
