"""Uploading a file to attach to a message (:meth:`ChatClient.upload
<burrow.client.ChatClient.upload>`, ``burrow upload``), whichever way the gateway
stores files (docs/attachments.md).

A GridFS gateway takes the bytes itself: ``POST /v1/rooms/{room}/attachments``. An S3
one never sees them: ``POST .../attachments/uploads`` hands out a presigned POST policy,
the file goes straight to the bucket as a multipart form (the policy's fields, then the
file: S3 ignores fields after it), and ``POST .../attachments/{id}/complete`` has the
gateway check it. Each gateway route answers 409 ``use_presigned_upload`` or
``use_direct_upload`` when the other one is the gateway's.

:class:`Uploader` remembers which flow the gateway wanted and goes straight to it next
time. Knowing nothing yet, it asks for a grant first: a grant refused with
``use_direct_upload`` costs one small request, while a direct upload refused with
``use_presigned_upload`` would have sent the whole file to the gateway for nothing
(the gateway reads and drops the body), which is what S3 storage is there to avoid.
Either way the answer is the gateway's ``{id, name, type, size, width, height}``.
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from burrow.client.errors import ChatError
from burrow.client.files import http_base
from burrow.core import tls

DIRECT, PRESIGNED = "direct", "presigned"
Source = bytes | str | os.PathLike[str] | BinaryIO  # what ChatClient.upload takes
_S3_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found",
                 413: "too_large"}


class _Elsewhere(Exception):
    """The gateway wants the other flow (its 409 ``use_*_upload``)."""

    def __init__(self, flow: str) -> None:
        super().__init__(flow)
        self.flow = flow


class _Unreachable(Exception):
    """A gateway that could not be reached: the next one is tried."""


@dataclass
class Uploader:
    """Uploads for one client; :attr:`flow` is what its gateways last wanted
    (:data:`DIRECT`, :data:`PRESIGNED`, or None before the first upload)."""

    flow: str | None = None

    async def upload_file(self, urls: Sequence[str], token: Callable[[], str], room: str,
                          file: Source, *, name: str | None = None,
                          media_type: str | None = None,
                          ssl_context: ssl.SSLContext | None = None) -> dict[str, Any]:
        """:meth:`upload` of bytes, a path (``cannot_read`` when it cannot be opened) or
        a binary file; *name* defaults to the path's last part, *media_type* to a
        guess from the name (``application/octet-stream`` when there is none)."""
        def kind(of: str) -> str:
            return media_type or mimetypes.guess_type(of)[0] or "application/octet-stream"

        if isinstance(file, bytes):
            name = name or "file"
            return await self.upload(urls, token, room, io.BytesIO(file), name, kind(name),
                                     ssl_context=ssl_context)
        if isinstance(file, (str, os.PathLike)):
            name = name or os.path.basename(file)
            try:
                opened = open(file, "rb")  # noqa: ASYNC230, SIM115 - closed below
            except OSError as exc:  # missing, unreadable, a directory
                raise ChatError("cannot_read", f"cannot read {os.fsdecode(file)}: "
                                f"{exc.strerror or exc}") from None
            with opened:
                return await self.upload(urls, token, room, opened, name, kind(name),
                                         ssl_context=ssl_context)
        name = name or os.path.basename(str(getattr(file, "name", "") or "file"))
        return await self.upload(urls, token, room, file, name, kind(name),
                                 ssl_context=ssl_context)

    async def upload(self, urls: Sequence[str], token: Callable[[], str], room: str,
                     source: BinaryIO, name: str, media_type: str, *,
                     ssl_context: ssl.SSLContext | None = None,
                     timeout: float = 30) -> dict[str, Any]:
        """Upload all of *source* (a seekable binary file, read from its start) to
        *room* through the first gateway of *urls* (WebSocket URLs, as ChatClient's)
        that answers. Refusals are :exc:`ChatError`: the gateway's code (``too_large``,
        ``type_not_allowed``, ``wrong_type``, ``too_many_pending``, ``forbidden``...),
        the bucket's refusal as ``too_large`` or ``refused``, ``unavailable`` (no
        gateway, no bucket, a 5xx), ``bad_answer`` (an answer that makes no sense)."""
        size = source.seek(0, 2)
        verify = ssl_context or tls.client_context(None)
        failures: list[str] = []
        for url in urls:
            base = http_base(url)
            def blocking(base: str = base) -> httpx.Client:
                return httpx.Client(base_url=base, timeout=timeout, verify=verify)

            async with httpx.AsyncClient(base_url=base, timeout=timeout,
                                         verify=verify) as http:
                try:
                    return await self._on(http, blocking, token, room, source, size, name,
                                          media_type)
                except _Unreachable as exc:
                    failures.append(f"{base}: {exc}")
        raise ChatError("unavailable", "cannot reach the gateway: " + "; ".join(failures))

    async def _on(self, http: httpx.AsyncClient, blocking: Callable[[], httpx.Client],
                  token: Callable[[], str], room: str, source: BinaryIO, size: int,
                  name: str, media_type: str) -> dict[str, Any]:
        flow = self.flow or PRESIGNED
        for _ in range(2):  # the flow tried, then the one the gateway named
            source.seek(0)
            try:
                if flow == PRESIGNED:
                    done = await _presigned(http, token, room, source, size, name,
                                            media_type)
                else:
                    done = await asyncio.to_thread(_direct, blocking, token(), room,
                                                   source, size, name, media_type)
            except _Elsewhere as other:
                flow = other.flow
                continue
            self.flow = flow
            return done
        raise ChatError("bad_answer", "the gateway refuses both ways of uploading")


def _room_path(room: str, rest: str) -> str:
    return f"/v1/rooms/{quote(room, safe='')}/attachments{rest}"


async def _gateway(http: httpx.AsyncClient, path: str, token: Callable[[], str],
                   **kwargs: Any) -> dict[str, Any]:
    """POST to the gateway: its JSON object, or its refusal as :exc:`ChatError`
    (:exc:`_Elsewhere` for a ``use_*_upload``)."""
    headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {token()}"}
    try:
        response = await http.post(path, headers=headers, **kwargs)
    except httpx.TransportError as exc:
        raise _Unreachable(str(exc) or type(exc).__name__) from None
    return _answer(response)


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The gateway's JSON object, or its refusal (see :func:`_gateway`)."""
    try:
        data = response.json() if response.content else None
    except ValueError:  # not JSON: a proxy's error page
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if response.status_code >= 300:
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            code = error["code"]
            if response.status_code == 409 and code == "use_direct_upload":
                raise _Elsewhere(DIRECT)
            if response.status_code == 409 and code == "use_presigned_upload":
                raise _Elsewhere(PRESIGNED)
            raise ChatError(code, str(error.get("message", "")))
        raise ChatError(_status_code(response.status_code), f"HTTP {response.status_code}")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ChatError("bad_answer", "the gateway's answer has no upload id")
    return data


def _status_code(status: int) -> str:
    return "unavailable" if status >= 500 else _STATUS_CODES.get(status, "refused")


def _direct(blocking: Callable[[], httpx.Client], bearer: str, room: str,
            source: BinaryIO, size: int, name: str, media_type: str) -> dict[str, Any]:
    """The bytes to the gateway (GridFS), streamed, by httpx's blocking client (in a
    thread). A gateway answers 413 at a ``Content-Length`` over its limit and closes
    while the file is still coming: the blocking client still reads that answer after
    its write fails, where asyncio's transport drops it with the connection."""
    path = _room_path(room, f"?name={quote(name, safe='')}")
    headers = {"Content-Type": media_type, "Content-Length": str(size),
               "Authorization": f"Bearer {bearer}"}
    try:
        with blocking() as http:
            return _answer(http.post(path, content=source, headers=headers))
    except httpx.TransportError as exc:
        raise _Unreachable(str(exc) or type(exc).__name__) from None


async def _presigned(http: httpx.AsyncClient, token: Callable[[], str], room: str,
                     source: BinaryIO, size: int, name: str,
                     media_type: str) -> dict[str, Any]:
    """Grant, the bytes to the bucket, completion (S3)."""
    grant = await _gateway(http, _room_path(room, "/uploads"), token,
                           json={"name": name, "type": media_type, "size": size})
    upload = grant.get("upload")
    if not (isinstance(upload, dict) and isinstance(upload.get("url"), str)
            and upload["url"].startswith(("https://", "http://"))
            and isinstance(upload.get("fields"), dict)
            and all(isinstance(v, str) for v in upload["fields"].values())):
        raise ChatError("bad_answer", "the gateway's upload grant has no url and fields")
    try:
        # an absolute URL; the client sends no token by itself (only _gateway adds it)
        sent = await http.post(upload["url"], data=upload["fields"],
                               files={"file": ("file", source, media_type)})
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ChatError("bad_answer", f"cannot post to the grant's url: {exc}") from None
    except httpx.TransportError as exc:
        raise ChatError("unavailable", "cannot reach the file store: "
                        f"{exc or type(exc).__name__}") from None
    if not 200 <= sent.status_code < 300:
        raise _bucket_refusal(sent)
    file_id = quote(str(grant["id"]), safe="")
    return await _gateway(http, _room_path(room, f"/{file_id}/complete"), token)


def _bucket_refusal(response: httpx.Response) -> ChatError:
    """S3's XML error as :exc:`ChatError`: ``unavailable`` for a 5xx (try again),
    ``too_large`` past the policy's length, ``refused`` otherwise (an expired policy,
    a condition not met), S3's own code in the message."""
    found = _S3_CODE.search(response.content[:4096])
    s3_code = found.group(1).decode() if found else f"HTTP {response.status_code}"
    if response.status_code >= 500:
        code = "unavailable"
    elif s3_code == "EntityTooLarge" or response.status_code == 413:
        code = "too_large"
    else:
        code = "refused"
    return ChatError(code, f"the file store refused the upload: {s3_code}")
