"""Downloading a message's attachment to disk (:meth:`ChatClient.download`, ``burrow
download``), safe whatever the server says.

The gateway's ``GET /v1/rooms/{room}/attachments/{id}`` answers the file's fields and a
short-lived signed ``url`` (docs/attachments.md); the bytes come from that URL, which
needs no token, so none is sent with it (it may redirect to object storage: a bearer
token has no business there). The file's name was chosen by another user: the gateway
cleans it, and it is cleaned again here (:func:`safe_name`), so that no name, whatever
a gateway or a proxy in between sends, makes a path outside the chosen directory.

The bytes go to a temporary file beside the target (created exclusively: a symlink
planted there is not followed) and take the target's name only once complete and of the
announced size; without ``overwrite`` through a hard link, which fails if the name
exists, so an existing file is never replaced, even by a race. A download cut short
leaves nothing but removes its temporary file.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from burrow.client.errors import ChatError
from burrow.core import tls

MAX_NAME_BYTES = 200  # well under the 255 bytes most file systems allow a name
FALLBACK_NAME = "attachment"
_SEPARATORS = re.compile(r"[/\\]")
_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "exists"}


@dataclass(frozen=True)
class Downloaded:
    """Where the file went, and the gateway's fields of it (id, name, type, size, ...)."""

    path: Path
    attachment: dict[str, Any]


def safe_name(raw: object) -> str:
    """A file name that is one plain component of a path: what follows the last ``/``
    or ``\\``, without control, format, surrogate or unassigned characters (NUL, newline,
    escape sequences, bidi overrides), trimmed of spaces and dots (so never ``.``,
    ``..`` nor a hidden file), at most :data:`MAX_NAME_BYTES` UTF-8 bytes with its
    extension kept; :data:`FALLBACK_NAME` when nothing is left."""
    text = raw if isinstance(raw, str) else ""
    name = _SEPARATORS.split(text)[-1]
    name = "".join(c for c in name if not unicodedata.category(c).startswith("C"))
    while name != (trimmed := name.strip().strip(".")):  # " . .. x" too
        name = trimmed
    if len(name.encode()) > MAX_NAME_BYTES:
        stem, dot, extension = name.rpartition(".")
        extension = extension if dot and stem and len(extension.encode()) <= 16 else ""
        room = MAX_NAME_BYTES - len(extension.encode()) - (1 if extension else 0)
        stem = (stem if extension else name).encode()[:room].decode(errors="ignore")
        name = stem.rstrip(" .") + (f".{extension}" if extension else "")
    return name or FALLBACK_NAME


def target_path(dest: str | os.PathLike[str] | None, name: str) -> Path:
    """Where the file goes: *name* in the current directory (no *dest*) or in *dest*
    when it is a directory (or ends with a separator); otherwise *dest* itself, a file
    name the user chose. *name* is :func:`safe_name`'s, and is checked again to be one
    component: the path is always directly inside the chosen directory."""
    if dest is None or Path(dest).is_dir() or str(dest).endswith(("/", os.sep)):
        directory, filename = Path(dest) if dest is not None else Path("."), name
    else:
        directory, filename = Path(dest).parent, Path(dest).name
    path = directory / filename
    if filename in ("", ".", "..") or path.parent != directory or path.name != filename:
        raise ChatError("cannot_write", f"{filename!r} is not a file name")
    return path


def http_base(ws_url: str) -> str:
    """``ws(s)://host[:port][/prefix]/v1/ws`` -> ``http(s)://host[:port][/prefix]``."""
    base = ws_url.removesuffix("/v1/ws")
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if base.startswith(ws):
            return http + base[len(ws):]
    return base


async def download(urls: Sequence[str], token: Callable[[], str], room: str,
                   attachment_id: str, dest: str | os.PathLike[str] | None = None, *,
                   overwrite: bool = False, ssl_context: ssl.SSLContext | None = None,
                   timeout: float = 30) -> Downloaded:
    """Fetch the file's fields from the first gateway of *urls* (WebSocket URLs, as
    ChatClient's) that answers, then its bytes from the signed URL, to
    :func:`target_path`. Refusals are :exc:`ChatError`: the server's code
    (``not_found``, ``forbidden``, ``unauthorized``, ``bad_link``...), ``unavailable``
    (no gateway, 5xx, a transfer cut short), ``exists`` (the file is there: give
    *overwrite*), ``cannot_write`` (the directory is missing or not writable)."""
    verify = ssl_context or tls.client_context(None)
    path = f"/v1/rooms/{quote(room, safe='')}/attachments/{quote(attachment_id, safe='')}"
    failures: list[str] = []
    for url in urls:
        base = http_base(url)
        async with httpx.AsyncClient(base_url=base, timeout=timeout, verify=verify) as http:
            try:
                response = await http.get(path, headers={
                    "Authorization": f"Bearer {token()}"})
            except httpx.TransportError as exc:
                failures.append(f"{base}: {exc or type(exc).__name__}")
                continue
            info = _answer(response)
            target = target_path(dest, safe_name(info.get("name")))
            if not overwrite and os.path.lexists(target):
                raise ChatError("exists", f"{target} exists (overwrite it with --force)")
            await _fetch(http, info, target, overwrite)
            return Downloaded(target, info)
    raise ChatError("unavailable", "cannot reach the gateway: " + "; ".join(failures))


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The gateway's JSON fields of the file, or its refusal as :exc:`ChatError`."""
    try:
        data = response.json() if response.content else None
    except ValueError:  # not JSON: a proxy's error page
        data = None
    if response.status_code >= 300:
        raise _refusal(response.status_code, data)
    if not (isinstance(data, dict) and isinstance(data.get("url"), str)
            and isinstance(data.get("size"), int) and data["size"] >= 0):
        raise ChatError("bad_answer", "the gateway's answer has no download url and size")
    return data


def _refusal(status: int, data: Any) -> ChatError:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return ChatError(error["code"], str(error.get("message", "")))
    code = "unavailable" if status >= 500 else _STATUS_CODES.get(status, "refused")
    return ChatError(code, f"HTTP {status}")


async def _fetch(http: httpx.AsyncClient, info: dict[str, Any], target: Path,
                 overwrite: bool) -> None:
    """Stream the signed URL (no token; redirects followed) into a temporary file
    beside *target*, at most the announced size, then give it *target*'s name."""
    size: int = info["size"]
    temporary = target.parent / f".burrow-download-{uuid.uuid4().hex}.part"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise ChatError("cannot_write", f"cannot write in {target.parent}: "
                        f"{exc.strerror or exc}") from None
    try:
        # the writes of a download's pieces to a local disk: short enough to make
        # from the event loop
        with open(fd, "wb") as file:  # noqa: ASYNC230
            try:
                async with http.stream("GET", info["url"], follow_redirects=True) as answer:
                    if answer.status_code != 200:
                        await answer.aread()
                        raise _refusal(answer.status_code, _json(answer))
                    written = 0
                    async for piece in answer.aiter_bytes():
                        written += len(piece)
                        if written > size:  # a server filling our disk
                            raise ChatError("bad_answer", f"more than the {size} bytes "
                                            "announced")
                        file.write(piece)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL,
                    httpx.TooManyRedirects) as exc:  # what the gateway said to fetch
                raise ChatError("bad_answer", f"cannot fetch the file's url: {exc}") \
                    from None
            except httpx.TransportError as exc:
                raise ChatError("unavailable", f"the download was cut short: "
                                f"{exc or type(exc).__name__}") from None
            if written != size:
                raise ChatError("unavailable", f"the download was cut short: {written} of "
                                f"{size} bytes")
        _place(temporary, target, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _place(temporary: Path, target: Path, overwrite: bool) -> None:
    """Give the complete file its name: replacing only with *overwrite*."""
    try:
        if overwrite:
            os.replace(temporary, target)
            return
        try:
            os.link(temporary, target)  # fails if the name exists, whatever it is
        except FileExistsError:
            raise ChatError("exists", f"{target} exists (overwrite it with --force)") \
                from None
        except OSError:  # a file system without hard links
            if os.path.lexists(target):
                raise ChatError("exists", f"{target} exists (overwrite it with --force)") \
                    from None
            os.rename(temporary, target)
    except OSError as exc:
        raise ChatError("cannot_write", f"cannot write {target}: {exc.strerror or exc}") \
            from None
