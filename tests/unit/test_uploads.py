"""The pure upload decisions (burrow/core/uploads.py): image headers read right from
hand-made PNG, JPEG, GIF and WebP files, truncated and malformed headers refused with
the parser's own error and nothing else (fuzzed), names cleaned, URLs signed."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burrow.core import uploads
from burrow.core.uploads import NotAnImage


def png(width: int, height: int) -> bytes:
    """A valid PNG (8-bit greyscale, zero pixels), CRCs and all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    rows = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def jpeg(width: int, height: int) -> bytes:
    """SOI, a JFIF APP0, a comment, a baseline frame header, EOI: what the parser reads."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    comment = b"made by hand"
    sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    return (b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0
            + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
            + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9")


def gif(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b",\x00\x00\x00\x00" + struct.pack("<HH", width, height) + b"\x00\x02\x02L\x01\x00;")


def webp(width: int, height: int, kind: str = "VP8X") -> bytes:
    if kind == "VP8X":
        data = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (
            height - 1).to_bytes(3, "little")
    elif kind == "VP8L":
        data = b"\x2f" + struct.pack("<I", (width - 1) | ((height - 1) << 14)) + b"\x00"
    else:
        data = b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 4
    body = b"WEBP" + kind.encode() + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


SAMPLES = {"image/png": png(3, 2), "image/jpeg": jpeg(640, 480), "image/gif": gif(17, 5),
           "image/webp": webp(1920, 1080)}
SIZES = {"image/png": (3, 2), "image/jpeg": (640, 480), "image/gif": (17, 5),
         "image/webp": (1920, 1080)}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_each_format_gives_its_type_and_dimensions(kind: str) -> None:
    info = uploads.image_info(SAMPLES[kind])
    assert (info.type, info.width, info.height) == (kind, *SIZES[kind])
    assert uploads.check_content(kind, SAMPLES[kind]) == info


@pytest.mark.parametrize("kind", ["VP8 ", "VP8L", "VP8X"])
def test_every_webp_kind(kind: str) -> None:
    info = uploads.image_info(webp(300, 7, kind))
    assert (info.width, info.height) == (300, 7)


def test_a_jpeg_with_fill_bytes_and_restart_markers_before_its_frame() -> None:
    data = jpeg(5, 9)
    data = data[:2] + b"\xff\xd0" + b"\xff" + data[2:]  # a standalone marker, a fill byte
    assert uploads.image_info(data).width == 5


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_truncation_is_refused_with_the_parsers_error(kind: str) -> None:
    whole = SAMPLES[kind]
    needed = len(whole) - (2 if kind == "image/jpeg" else 0)  # a JPEG's EOI is not read
    for cut in range(needed):
        try:
            uploads.image_info(whole[:cut])
        except NotAnImage:
            continue
        # a prefix may already hold the whole header: then it must read the same
        assert uploads.image_info(whole[:cut]).width == SIZES[kind][0]


@pytest.mark.parametrize("data", [
    b"", b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00" * 8,  # 0x0
    b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIDAT" + b"\x00\x00\x00\x01" * 2,  # no IHDR
    b"\xff\xd8\xff\xda\x00\x02",  # scan data before a frame
    b"\xff\xd8\xff\xe0\x00\x01",  # a segment shorter than its length field
    b"\xff\xd8\xff\xd9", b"\xff\xd8\x00",
    b"RIFF\x00\x00\x00\x00WEBPVP8 \x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    b"RIFF\x00\x00\x00\x00WEBPABCD" + b"\x00" * 20,
    b"GIF89a\x00\x00\x05\x00",  # zero width
    b"%PDF-1.7", b"plain text"])
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(NotAnImage):
        uploads.image_info(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), st.binary(max_size=64), st.integers(0, 80),
       st.integers(0, 80))
def test_fuzzed_headers_raise_nothing_but_the_parsers_error(
        kind: str, noise: bytes, cut: int, at: int) -> None:
    """A real header with bytes overwritten, cut short, or followed by noise."""
    real = SAMPLES[kind]
    for data in (real[:at] + noise + real[at + len(noise):], real[:cut], real[:cut] + noise,
                 noise):
        try:
            info = uploads.image_info(data)
        except NotAnImage:
            continue
        assert 0 < info.width <= uploads.MAX_SIDE and 0 < info.height <= uploads.MAX_SIDE


def test_the_declared_type_must_be_what_the_bytes_are() -> None:
    with pytest.raises(NotAnImage, match="bytes are image/gif"):
        uploads.check_content("image/png", SAMPLES["image/gif"])
    with pytest.raises(NotAnImage):
        uploads.check_content("image/png", b"<html><script>alert(1)</script>")
    with pytest.raises(NotAnImage, match="not a PDF"):
        uploads.check_content("application/pdf", b"<html>")
    with pytest.raises(NotAnImage, match="bytes are image/png"):
        uploads.check_content("text/plain", SAMPLES["image/png"])
    assert uploads.check_content("application/pdf", b"%PDF-1.7\n") is None
    assert uploads.check_content("text/plain", b"hello") is None


@pytest.mark.parametrize(("raw", "clean"), [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\x\\report.pdf", "report.pdf"),
    ("a\r\nb\x00c.png", "abc.png"), ("\u202egnp.exe", "gnp.exe"), ("  ..  ", "file"),
    ("", "file"), ("résumé.txt", "résumé.txt"), ("dir/", "file")])
def test_names_are_cleaned(raw: str, clean: str) -> None:
    assert uploads.clean_name(raw) == clean


def test_long_names_are_cut_keeping_the_extension_and_huge_ones_refused() -> None:
    name = uploads.clean_name("x" * 500 + ".jpeg")
    assert len(name) <= uploads.SHOWN_NAME_CHARS and name.endswith(".jpeg")
    with pytest.raises(ValueError):
        uploads.clean_name("x" * 10_000)


def test_signatures_name_the_id_and_the_expiry() -> None:
    key, other = b"k" * 32, b"o" * 32
    sig = uploads.sign(key, "a" * 24, 2000)
    assert uploads.verify(key, "a" * 24, "2000", sig, now=1999)
    assert not uploads.verify(key, "a" * 24, "2000", sig, now=2000)  # expired
    assert not uploads.verify(key, "b" * 24, "2000", sig, now=1000)  # another file
    assert not uploads.verify(key, "a" * 24, "2001", sig, now=1000)  # another expiry
    assert not uploads.verify(other, "a" * 24, "2000", sig, now=1000)  # another key
    assert not uploads.verify(key, "a" * 24, "2000", sig[:-1] + "A", now=1000)
    assert not uploads.verify(key, "a" * 24, "2000", "é", now=1000)
    assert not uploads.verify(key, "a" * 24, "-1", sig, now=1000)
