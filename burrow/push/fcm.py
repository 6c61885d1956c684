"""FCM HTTP v1 through firebase-admin 7: one message per device, up to 500 per call.

Each device's answer becomes an :class:`~burrow.push.Outcome` (LIBRARY-NOTES §7):

=============================================================  ==========
success                                                        ``SENT``
UNREGISTERED; SENDER_ID_MISMATCH (the token is another
project's); INVALID_ARGUMENT about the registration token       ``INVALID``
QUOTA_EXCEEDED/429, UNAVAILABLE, INTERNAL, other 5xx, timeouts,
transport errors, an unreachable token endpoint                ``RETRY``
THIRD_PARTY_AUTH_ERROR, 401/403, a refused OAuth grant, any
other INVALID_ARGUMENT (the payload's fault)                   ``FAILED``
=============================================================  ==========

Measured behaviour of the SDK this relies on: ``send_each_async`` sends each message as its
own HTTP/2 request, concurrently, and reports per-message exceptions; it retries 500 and 503
itself (up to 4 more attempts, backing off 0, 1, 2, 4 s, ignoring ``Retry-After``), so a
RETRY for those means FCM failed five times; it never retries 429. A 401 makes it refresh
the OAuth token twice, synchronously, before it gives up.

The OAuth token is fetched by google-auth through ``requests``, synchronously, inside the
SDK's httpx auth flow — which blocks the event loop. So the sender refreshes an expired
token itself first, in a worker thread (``asyncio.to_thread``); the auth flow then finds it
valid. TLS trust follows the environment: ``SSL_CERT_FILE`` for the FCM client (httpx, read
when the sender is built) and ``REQUESTS_CA_BUNDLE`` for the token endpoint (requests).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

import firebase_admin
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import httpx
import requests
from firebase_admin import credentials as firebase_credentials
from firebase_admin import exceptions, messaging

from burrow.push import Device, Notification, Outcome, Platform, Result
from burrow.push.apns import collapse_id

MAX_BATCH = 500  # send_each_async refuses more ("messages must not contain more than 500")
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
# FCM's INVALID_ARGUMENT covers the token and the payload alike; only the message tells them
# apart ("The registration token is not a valid FCM registration token").
_ABOUT_TARGET = re.compile(r"registration token|installation id|\bfid\b", re.IGNORECASE)
_RETRY_ERRORS = (exceptions.ResourceExhaustedError, exceptions.UnavailableError,
                 exceptions.InternalError, exceptions.DeadlineExceededError)
_TRANSPORT_ERRORS = (httpx.TransportError, google.auth.exceptions.TransportError,
                     requests.RequestException)


class _Anonymous(firebase_credentials.Base):  # type: ignore[misc]
    """No credentials at all: no token fetch, no Authorization header (local servers only)."""

    def get_credential(self) -> google.auth.credentials.Credentials:
        # google-auth leaves this constructor unannotated.
        return google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]


class FcmSender:
    """Sends notifications through FCM for *project_id*.

    *credentials* is the path of a service-account JSON file, or ``None`` for anonymous
    requests — only with an *endpoint*, a local server. *endpoint* replaces
    ``https://fcm.googleapis.com`` (e.g. ``https://127.0.0.1:8443``); *timeout* bounds each
    HTTP attempt and the token fetch. Call :meth:`close` when done.
    """

    platform: Platform = "fcm"

    def __init__(self, project_id: str, credentials: str | os.PathLike[str] | None, *,
                 endpoint: str | None = None, timeout: float = 10.0) -> None:
        if credentials is None and endpoint is None:
            raise ValueError("anonymous FCM requests only make sense against a local endpoint")
        credential: firebase_credentials.Base = (
            _Anonymous() if credentials is None
            else firebase_credentials.Certificate(os.fspath(credentials)))
        # A uniquely named app per sender: firebase-admin keeps apps in a process-wide
        # registry, and two senders (or tests) must not share one.
        self._app = firebase_admin.initialize_app(
            credential, {"projectId": project_id, "httpTimeout": timeout},
            name=f"burrow-fcm-{uuid.uuid4().hex}")
        try:
            self._google_credential: google.auth.credentials.Credentials = (
                credential.get_credential())
            # Building the messaging service now fixes its httpx client (and TLS trust).
            self._service: Any = messaging._get_messaging_service(self._app)
        except BaseException:
            firebase_admin.delete_app(self._app)  # no service yet: nothing for it to close
            raise
        if endpoint is not None:
            # Private, and pinned by the tests: firebase-admin has no FCM emulator setting and
            # formats FCM_URL into the service when it is built (LIBRARY-NOTES §7).
            self._service._fcm_url = (
                f"{endpoint.rstrip('/')}/v1/projects/{project_id}/messages:send")
        self._timeout = timeout
        self._token_session = requests.Session()
        self._refreshing = asyncio.Lock()  # one token fetch at a time, however many sends
        self._closed = False

    async def send(self, notification: Notification, devices: Sequence[Device]) -> list[Result]:
        """One :class:`Result` per device, in order; never raises for a device."""
        results: list[Result] = []
        for start in range(0, len(devices), MAX_BATCH):
            results += await self._send_batch(notification, devices[start:start + MAX_BATCH])
        return results

    async def _send_batch(self, notification: Notification,
                          devices: Sequence[Device]) -> list[Result]:
        if not devices:
            return []
        refused = await self._refresh_token()
        if refused is not None:
            verdict, reason = refused
            return [Result(device, verdict, reason) for device in devices]
        results: list[Result | None] = [None] * len(devices)
        messages: list[messaging.Message] = []
        sent: list[int] = []
        for index, device in enumerate(devices):
            if not device.token:
                results[index] = Result(device, Outcome.INVALID, "empty token")
                continue
            messages.append(_message(notification, device))
            sent.append(index)
        if messages:
            try:
                batch = await messaging.send_each_async(messages, app=self._app)
            except exceptions.FirebaseError as error:
                # The whole call failed (e.g. the 401 path's own token refresh raised).
                for index in sent:
                    results[index] = _result(devices[index], error)
            except ValueError as error:
                # The SDK validates messages when it encodes them, all before sending; what
                # differs per device (the token) is checked above, so this is the
                # notification's fault, the same for every device.
                for index in sent:
                    results[index] = Result(devices[index], Outcome.FAILED, f"invalid: {error}")
            else:
                for index, response in zip(sent, batch.responses):
                    results[index] = (Result(devices[index], Outcome.SENT) if response.success
                                      else _result(devices[index], response.exception))
        return [r for r in results if r is not None]

    async def _refresh_token(self) -> tuple[Outcome, str] | None:
        """Fetch an access token off the event loop if needed; an outcome if that failed."""
        credential = self._google_credential
        if isinstance(credential, google.auth.credentials.AnonymousCredentials):
            return None
        async with self._refreshing:
            if credential.valid:
                return None
            return await self._fetch_token(credential)

    async def _fetch_token(self, credential: google.auth.credentials.Credentials
                           ) -> tuple[Outcome, str] | None:
        request = google.auth.transport.requests.Request(self._token_session)
        try:
            await asyncio.wait_for(asyncio.to_thread(credential.refresh, request),
                                   self._timeout)
        except TimeoutError:
            return Outcome.RETRY, f"token endpoint: no answer in {self._timeout}s"
        except google.auth.exceptions.RefreshError as error:
            reason = f"token endpoint: {error.args[0] if error.args else error}"
            return (Outcome.RETRY if error.retryable else Outcome.FAILED), reason
        except google.auth.exceptions.TransportError as error:
            return Outcome.RETRY, f"token endpoint: {type(error.__cause__ or error).__name__}"
        except google.auth.exceptions.GoogleAuthError as error:
            return Outcome.FAILED, f"credentials: {error}"
        return None

    async def close(self) -> None:
        """Close the HTTP clients and delete the firebase app."""
        if self._closed:
            return
        self._closed = True
        # Close httpx in the loop that used it: delete_app closes it with asyncio.run in a
        # fresh loop (and raises inside a running one), which then finds it closed already.
        await self._service._async_client.aclose()
        await asyncio.to_thread(firebase_admin.delete_app, self._app)
        self._token_session.close()


def _message(notification: Notification, device: Device) -> messaging.Message:
    collapse = notification.collapse_key
    fields: dict[str, Any] = {
        "notification": messaging.Notification(title=notification.title,
                                               body=notification.body),
        "data": {**notification.data, "notification_id": notification.id},
        # collapse_key replaces an undelivered message; the tag replaces a shown one.
        "android": messaging.AndroidConfig(
            collapse_key=collapse, priority="high",
            notification=messaging.AndroidNotification(
                tag=collapse, notification_count=notification.badge)),
        "apns": messaging.APNSConfig(
            headers={"apns-collapse-id": collapse_id(collapse)},
            payload=(messaging.APNSPayload(aps=messaging.Aps(badge=notification.badge))
                     if notification.badge is not None else None)),
    }
    if device.token_kind == "fid":
        return messaging.Message(fid=device.token, **fields)
    # firebase-admin 7 deprecates Message.token for Message.fid, but a registration token is
    # not a Firebase installation id: devices that registered a token must be sent with
    # token= until their apps move to FIDs. The suite turns warnings into errors, so this one
    # warning is silenced here, for this call only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Message\.token is deprecated",
                                category=DeprecationWarning)
        return messaging.Message(token=device.token, **fields)


def _result(device: Device, error: object) -> Result:
    """The outcome of one message's exception (a ``FirebaseError``)."""
    if not isinstance(error, exceptions.FirebaseError):
        return Result(device, Outcome.FAILED, repr(error))
    response = error.http_response
    code = _fcm_error_code(response) or error.code
    retry_after = _retry_after(response)
    if isinstance(error, (messaging.UnregisteredError, messaging.SenderIdMismatchError)):
        return Result(device, Outcome.INVALID, code)
    if isinstance(error, exceptions.InvalidArgumentError):
        about_target = _ABOUT_TARGET.search(str(error)) is not None
        return Result(device, Outcome.INVALID if about_target else Outcome.FAILED, code)
    if isinstance(error, _RETRY_ERRORS):
        return Result(device, Outcome.RETRY, _with_cause(code, error), retry_after)
    cause = error.cause
    if isinstance(cause, google.auth.exceptions.RefreshError):
        verdict = Outcome.RETRY if cause.retryable else Outcome.FAILED
        return Result(device, verdict, f"token endpoint: {cause.args[0] if cause.args else ''}")
    if isinstance(cause, _TRANSPORT_ERRORS) or (
            response is not None and response.status_code >= 500):
        return Result(device, Outcome.RETRY, _with_cause(code, error), retry_after)
    return Result(device, Outcome.FAILED, code)


def _with_cause(code: str, error: exceptions.FirebaseError) -> str:
    """A transport failure names its exception; an HTTP answer its code alone."""
    if error.http_response is None and error.cause is not None:
        return f"{code}: {type(error.cause).__name__}"
    return code


def _fcm_error_code(response: httpx.Response | None) -> str | None:
    if response is None:
        return None
    try:
        details = json.loads(response.content)["error"]["details"]
        return next(str(d["errorCode"]) for d in details if d.get("@type") == _FCM_ERROR_TYPE)
    except (ValueError, KeyError, TypeError, StopIteration):
        return None


def _retry_after(response: httpx.Response | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
