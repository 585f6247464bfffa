"""Metadata written into PNG and WebP containers at byte level, leaving the pixel data untouched.

Re-encoding a 1024x1024 WebP just to attach metadata costs over 100 ms and loses quality; both
containers are chunk lists, so adding a chunk (and, for WebP, the extended header that announces
it) is a copy of a few buffers. Chunk walking doubles as a structural check: a truncated file
fails here before any decoder sees it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from caverna.imaging.formats import (
    PNG_SIGNATURE,
    VP8X_FLAG_ALPHA,
    VP8X_FLAG_XMP,
    ImageRejected,
    webp_header,
)

XMP_KEYWORD = "XML:com.adobe.xmp"
_PNG_TEXT_KINDS = (b"tEXt", b"iTXt", b"zTXt")
# A metadata chunk larger than this is not ours; inflating it further would only invite a bomb.
_MAX_TEXT_BYTES = 8 * 2**20


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk's kind and its byte span in the file: [start, end) includes header and trailer."""

    kind: bytes
    start: int
    end: int
    body_start: int
    body_end: int


def png_chunks(data: bytes) -> list[Chunk]:
    """Every chunk from IHDR to IEND; anything truncated or out of order is a corrupt image."""
    if not data.startswith(PNG_SIGNATURE):
        raise ImageRejected("corrupt_image", "the PNG signature is missing")
    chunks: list[Chunk] = []
    offset = len(PNG_SIGNATURE)
    length = len(data)
    while offset + 12 <= length:
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        end = offset + 12 + size
        if size > 0x7FFFFFFF or end > length:
            raise ImageRejected("corrupt_image", "the PNG is truncated")
        chunks.append(Chunk(kind, offset, end, offset + 8, offset + 8 + size))
        offset = end
        if kind == b"IEND":
            break
    if not chunks or chunks[0].kind != b"IHDR":
        raise ImageRejected("corrupt_image", "the PNG does not start with IHDR")
    if chunks[-1].kind != b"IEND":
        raise ImageRejected("corrupt_image", "the PNG is truncated (no IEND)")
    if not any(chunk.kind == b"IDAT" for chunk in chunks):
        raise ImageRejected("corrupt_image", "the PNG has no image data")
    return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_text_chunk(keyword: str, text: str) -> bytes:
    """tEXt when the text is Latin-1 (the widest support), otherwise uncompressed UTF-8 iTXt."""
    key = keyword.encode("latin-1")
    try:
        latin = text.encode("latin-1")
    except UnicodeEncodeError:
        return png_itxt_chunk(keyword, text)
    if b"\x00" in latin:
        return png_itxt_chunk(keyword, text)
    return _png_chunk(b"tEXt", key + b"\x00" + latin)


def png_itxt_chunk(keyword: str, text: str) -> bytes:
    # keyword, NUL, compression flag 0, method 0, empty language tag, NUL, empty translation, NUL
    body = keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")
    return _png_chunk(b"iTXt", body)


def _png_keyword(data: bytes, chunk: Chunk) -> str:
    body = data[chunk.body_start : min(chunk.body_end, chunk.body_start + 80)]
    return body.split(b"\x00", 1)[0].decode("latin-1")


def png_with_chunks(
    data: bytes, new_chunks: Sequence[bytes], replace_keywords: Iterable[str]
) -> bytes:
    """The same PNG with `new_chunks` before the first IDAT; text under `replace_keywords` goes.

    Before IDAT rather than just before IEND, because many readers (Pillow's `info` before
    load(), quick metadata scanners) stop at the image data. Replacing rather than appending
    keeps a file that passes through twice from carrying two conflicting descriptions.
    """
    chunks = png_chunks(data)
    replaced = set(replace_keywords)
    view = memoryview(data)
    parts: list[bytes | memoryview] = [view[: len(PNG_SIGNATURE)]]
    inserted = False
    for chunk in chunks:
        if chunk.kind in _PNG_TEXT_KINDS and _png_keyword(data, chunk) in replaced:
            continue
        if chunk.kind == b"IDAT" and not inserted:
            parts.extend(new_chunks)
            inserted = True
        parts.append(view[chunk.start : chunk.end])
    return b"".join(parts)


def png_texts(data: bytes) -> dict[str, str]:
    """Keyword to text for every tEXt, zTXt and iTXt chunk (the first one wins on duplicates)."""
    texts: dict[str, str] = {}
    for chunk in png_chunks(data):
        if chunk.kind not in _PNG_TEXT_KINDS:
            continue
        body = data[chunk.body_start : chunk.body_end]
        keyword, _, rest = body.partition(b"\x00")
        key = keyword.decode("latin-1")
        if key in texts:
            continue
        if chunk.kind == b"tEXt":
            texts[key] = rest.decode("latin-1")
        elif chunk.kind == b"zTXt":
            texts[key] = _inflate(rest[1:]).decode("latin-1")
        else:
            compressed = rest[:1] == b"\x01"
            _language, _, rest = rest[2:].partition(b"\x00")
            _translated, _, text = rest.partition(b"\x00")
            texts[key] = (_inflate(text) if compressed else text).decode("utf-8", "replace")
    return texts


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, _MAX_TEXT_BYTES)
    except zlib.error as exc:
        raise ImageRejected("corrupt_image", "a compressed PNG text chunk is corrupt") from exc
    if inflater.unconsumed_tail:
        raise ImageRejected("image_too_large", "a compressed PNG text chunk is too large")
    return out


def riff_chunks(data: bytes) -> list[Chunk]:
    """The chunks inside a WebP RIFF container, checked against the declared RIFF size."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ImageRejected("corrupt_image", "the WebP RIFF header is missing")
    total = int.from_bytes(data[4:8], "little") + 8
    if total > len(data):
        raise ImageRejected("corrupt_image", "the WebP is truncated")
    chunks: list[Chunk] = []
    offset = 12
    while offset + 8 <= total:
        kind = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        body_end = offset + 8 + size
        end = body_end + (size & 1)
        if body_end > total:
            raise ImageRejected("corrupt_image", "a WebP chunk runs past the end of the file")
        chunks.append(Chunk(kind, offset, min(end, total), offset + 8, body_end))
        offset = end
    if not chunks:
        raise ImageRejected("corrupt_image", "the WebP file holds no chunks")
    if not any(chunk.kind in (b"VP8 ", b"VP8L", b"ANMF") for chunk in chunks):
        raise ImageRejected("corrupt_image", "the WebP file holds no image data")
    return chunks


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    pad = b"\x00" if len(body) & 1 else b""
    return kind + struct.pack("<I", len(body)) + body + pad


# The order the WebP container specification prescribes; unknown chunks come after these.
_WEBP_KNOWN = (b"VP8X", b"ICCP", b"ANIM", b"ANMF", b"ALPH", b"VP8 ", b"VP8L", b"EXIF")


def webp_with_xmp(data: bytes, xmp: bytes) -> bytes:
    """The same WebP with `xmp` as its XMP chunk, promoted to the extended (VP8X) form if simple.

    The image chunk's bytes are copied verbatim; only the header chunk and RIFF size change.
    """
    chunks = riff_chunks(data)
    width, height, alpha = webp_header(data)
    view = memoryview(data)
    first = chunks[0]
    if first.kind == b"VP8X":
        header = bytearray(data[first.body_start : first.body_end])
        if len(header) < 10:
            raise ImageRejected("corrupt_image", "the VP8X header is too short")
        header[0] |= VP8X_FLAG_XMP
        rest = chunks[1:]
    elif first.kind in (b"VP8 ", b"VP8L"):
        flags = VP8X_FLAG_XMP | (VP8X_FLAG_ALPHA if alpha else 0)
        header = bytearray(
            bytes((flags, 0, 0, 0))
            + (width - 1).to_bytes(3, "little")
            + (height - 1).to_bytes(3, "little")
        )
        rest = chunks
    else:
        raise ImageRejected("corrupt_image", "the WebP file starts with an unexpected chunk")
    kept = [chunk for chunk in rest if chunk.kind != b"XMP "]
    insert_at = max((i + 1 for i, c in enumerate(kept) if c.kind in _WEBP_KNOWN), default=0)
    parts: list[bytes | memoryview] = [b"WEBP", _riff_chunk(b"VP8X", bytes(header))]
    parts.extend(view[chunk.start : chunk.end] for chunk in kept[:insert_at])
    parts.append(_riff_chunk(b"XMP ", xmp))
    parts.extend(view[chunk.start : chunk.end] for chunk in kept[insert_at:])
    body = b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_xmp(data: bytes) -> bytes | None:
    for chunk in riff_chunks(data):
        if chunk.kind == b"XMP ":
            return data[chunk.body_start : chunk.body_end]
    return None


_JPEG_XMP_PREFIX = b"http://ns.adobe.com/xap/1.0/\x00"


def jpeg_xmp(data: bytes) -> bytes | None:
    """The XMP packet of a JPEG's APP1 segment, if any (scanning stops at the image data)."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker in (0xD9, 0xDA):
            break
        size = int.from_bytes(data[offset + 2 : offset + 4], "big")
        body = data[offset + 4 : offset + 2 + size]
        if marker == 0xE1 and body.startswith(_JPEG_XMP_PREFIX):
            return body[len(_JPEG_XMP_PREFIX) :]
        offset += 2 + size
    return None
