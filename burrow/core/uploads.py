"""Pure decisions about uploaded files: what an image's header says, whether the bytes are
the type the client named, a file name fit to show, and the signed download URLs.

No I/O and no image library: a header parser reads the first bytes of a PNG, JPEG, GIF or
WebP for its type and dimensions and raises :exc:`NotAnImage` (never anything else) for
truncated or malformed input (``tests/unit/test_uploads.py`` fuzzes it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import unicodedata
from dataclasses import dataclass
from typing import Final

HEAD_BYTES: Final = 262144
"""How much of a file's start the type check reads: a JPEG whose frame header comes
later (after more than 256 KiB of EXIF or ICC segments) is refused."""
IMAGE_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""The raster types whose header is checked and which are served inline; any other type
(an SVG included: it can carry script) is served as a download."""
MAX_SIDE: Final = 2**31 - 1
MAX_NAME_CHARS: Final = 1000  # a longer name is refused, not cut
SHOWN_NAME_CHARS: Final = 200  # what is kept of a name (its extension kept)


class NotAnImage(ValueError):
    """The bytes are not a well-formed header of the image type they were taken for."""


@dataclass(frozen=True)
class ImageInfo:
    type: str
    width: int
    height: int


def sniff(head: bytes) -> str | None:
    """The image type *head*'s magic bytes name, or None (never raises)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_info(head: bytes) -> ImageInfo:
    """Type and dimensions from the first bytes of an image; :exc:`NotAnImage` otherwise."""
    kind = sniff(head)
    if kind is None:
        raise NotAnImage("not a PNG, JPEG, GIF or WebP image")
    try:
        width, height = _READERS[kind](head)
    except (struct.error, IndexError) as exc:
        raise NotAnImage(f"truncated {kind} header") from exc
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise NotAnImage(f"{kind} of impossible size {width}x{height}")
    return ImageInfo(kind, width, height)


def _png(head: bytes) -> tuple[int, int]:
    length, chunk = struct.unpack_from(">I4s", head, 8)
    if chunk != b"IHDR" or length != 13:
        raise NotAnImage("a PNG must begin with its IHDR chunk")
    width, height = struct.unpack_from(">II", head, 16)
    return int(width), int(height)


def _gif(head: bytes) -> tuple[int, int]:
    width, height = struct.unpack_from("<HH", head, 6)
    return int(width), int(height)


_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length


def _jpeg(head: bytes) -> tuple[int, int]:
    at = 2  # past SOI
    while True:
        if head[at] != 0xFF:
            raise NotAnImage("a JPEG segment must begin with 0xFF")
        while head[at] == 0xFF:  # fill bytes
            at += 1
        marker = head[at]
        at += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA, 0x00):  # SOI again, EOI, scan data before a frame
            raise NotAnImage("a JPEG without a frame header before its data")
        (length,) = struct.unpack_from(">H", head, at)
        if length < 2:
            raise NotAnImage("a JPEG segment shorter than its length field")
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", head, at + 3)
            return int(width), int(height)
        at += length


def _webp(head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    data = head[20:]
    if chunk == b"VP8 ":
        if data[3:6] != b"\x9d\x01\x2a":
            raise NotAnImage("a lossy WebP without its start code")
        width, height = struct.unpack_from("<HH", data, 6)
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L":
        if data[0] != 0x2F:
            raise NotAnImage("a lossless WebP without its signature")
        (bits,) = struct.unpack_from("<I", data, 1)
        return (int(bits) & 0x3FFF) + 1, ((int(bits) >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        if len(data) < 10:
            raise NotAnImage("truncated WebP canvas header")
        width = int.from_bytes(data[4:7], "little") + 1
        height = int.from_bytes(data[7:10], "little") + 1
        return width, height
    raise NotAnImage("a WebP of an unknown kind")


_READERS = {"image/png": _png, "image/gif": _gif, "image/jpeg": _jpeg, "image/webp": _webp}


def media_type(header: str | None) -> str:
    """The ``type/subtype`` of a Content-Type header, lower case, parameters dropped."""
    return (header or "").split(";", 1)[0].strip().lower()


def check_content(declared: str, head: bytes) -> ImageInfo | None:
    """Whether *head* (the file's first :data:`HEAD_BYTES`) is what *declared* says.

    Images must have a well-formed header of that very type (their dimensions are
    returned); a PDF must start ``%PDF-``; a file that is not declared an image but
    whose bytes are one is refused too (a browser would show it as one). Raises
    :exc:`NotAnImage` with the reason.
    """
    if declared in IMAGE_TYPES:
        info = image_info(head)
        if info.type != declared:
            raise NotAnImage(f"declared {declared} but the bytes are {info.type}")
        return info
    if (found := sniff(head)) is not None:
        raise NotAnImage(f"declared {declared} but the bytes are {found}")
    if declared == "application/pdf" and not head.startswith(b"%PDF-"):
        raise NotAnImage("declared application/pdf but the bytes are not a PDF")
    return None


_SEPARATORS = re.compile(r"[/\\]")


def clean_name(raw: str) -> str:
    """A file name fit to store and show: its last path component, without control or
    format characters (no newline, no right-to-left override), trimmed, at most
    :data:`SHOWN_NAME_CHARS` characters with its extension kept; ``file`` when nothing is
    left. :exc:`ValueError` for a name over :data:`MAX_NAME_CHARS` characters."""
    if len(raw) > MAX_NAME_CHARS:
        raise ValueError(f"name longer than {MAX_NAME_CHARS} characters")
    name = _SEPARATORS.split(raw)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs",
                                                                        "Co", "Cn"))
    name = name.strip().strip(".").strip()
    if len(name) > SHOWN_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        extension = extension[:16] if dot and stem else ""
        name = name[:SHOWN_NAME_CHARS - len(extension) - 1].rstrip() + (
            f".{extension}" if extension else "")
    return name or "file"


def sign(key: bytes, file_id: str, expires: int) -> str:
    """The signature of a download URL: HMAC-SHA256 of the file id and expiry, base64url."""
    mac = hmac.new(key, f"{file_id}.{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(key: bytes, file_id: str, expires: str, signature: str, now: float) -> bool:
    """Whether *signature* is :func:`sign`'s for this id and expiry, and not expired.
    Constant-time in the signature."""
    if not expires.isdigit() or len(expires) > 12 or not signature.isascii():
        return False
    good = sign(key, file_id, int(expires))
    return hmac.compare_digest(good.encode(), signature.encode()) and int(expires) > now
