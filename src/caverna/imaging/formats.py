"""Which image formats come in and go out, recognised by their bytes and measured by their headers.

A provider's declared content type is only a claim; the magic bytes are the evidence. Dimensions
are read straight from the header, so an image that would expand to gigabytes of pixels is refused
before the decoder allocates anything.
"""

from __future__ import annotations

from typing import Literal

DeliveryFormat = Literal["webp", "png", "avif"]
SniffedFormat = Literal["png", "jpeg", "webp", "avif"]
RejectionCode = Literal["unsupported_image_format", "image_too_large", "corrupt_image"]

DELIVERY_FORMATS: tuple[DeliveryFormat, ...] = ("webp", "png", "avif")
CONTENT_TYPES: dict[SniffedFormat, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "avif": "image/avif",
}
EXTENSIONS: dict[SniffedFormat, str] = {"png": "png", "jpeg": "jpg", "webp": "webp", "avif": "avif"}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_AVIF_BRANDS = (b"avif", b"avis")
# Recognised only to say precisely what was refused; none of these is ever decoded.
_KNOWN_UNSUPPORTED: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
)


class ImageRejected(Exception):
    """An image refused with a stable code that clients and retry logic can branch on."""

    def __init__(self, code: RejectionCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: RejectionCode = code
        self.message = message

    def __reduce__(self) -> tuple[type[ImageRejected], tuple[RejectionCode, str]]:
        # Callers may run processing in a process pool: the error must survive pickling.
        return type(self), (self.code, self.message)


def sniff_format(data: bytes) -> SniffedFormat:
    """The container format according to the magic bytes, whatever the sender called it."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if _is_avif(data):
        return "avif"
    head = data[:64].lstrip()
    for magic, name in _KNOWN_UNSUPPORTED:
        if head.startswith(magic):
            raise ImageRejected("unsupported_image_format", f"{name} images are not accepted")
    raise ImageRejected(
        "unsupported_image_format", "the data is not a PNG, JPEG, WebP or AVIF image"
    )


def _is_avif(data: bytes) -> bool:
    if len(data) < 16 or data[4:8] != b"ftyp":
        return False
    box_size = int.from_bytes(data[0:4], "big")
    if data[8:12] in _AVIF_BRANDS:
        return True
    end = min(box_size, len(data), 256)
    return any(data[offset : offset + 4] in _AVIF_BRANDS for offset in range(16, end - 3, 4))


def header_size(data: bytes, fmt: SniffedFormat) -> tuple[int, int]:
    """Width and height as the header declares them, without touching the pixel data."""
    if fmt == "png":
        size = _png_size(data)
    elif fmt == "jpeg":
        size = _jpeg_size(data)
    elif fmt == "webp":
        size = webp_header(data)[:2]
    else:
        raise ImageRejected("unsupported_image_format", f"{fmt} headers are not inspected")
    if size[0] <= 0 or size[1] <= 0:
        raise ImageRejected("corrupt_image", "the image declares an empty size")
    return size


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 33 or data[12:16] != b"IHDR" or int.from_bytes(data[8:12], "big") != 13:
        raise ImageRejected("corrupt_image", "the PNG has no valid IHDR header")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    offset = 2
    length = len(data)
    while offset + 4 <= length:
        if data[offset] != 0xFF:
            raise ImageRejected("corrupt_image", "the JPEG marker stream is broken")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        if marker in (0xD9, 0xDA):
            break
        segment = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if marker in _JPEG_SOF:
            if segment < 7 or offset + 9 > length:
                break
            height = int.from_bytes(data[offset + 5 : offset + 7], "big")
            width = int.from_bytes(data[offset + 7 : offset + 9], "big")
            if data.rfind(b"\xff\xd9") < offset:
                raise ImageRejected("corrupt_image", "the JPEG is truncated (no end marker)")
            return width, height
        offset += 2 + segment
    raise ImageRejected("corrupt_image", "the JPEG has no frame header")


VP8X_FLAG_ICC = 0x20
VP8X_FLAG_ALPHA = 0x10
VP8X_FLAG_EXIF = 0x08
VP8X_FLAG_XMP = 0x04
VP8X_FLAG_ANIMATION = 0x02


def webp_header(data: bytes) -> tuple[int, int, bool]:
    """Canvas width, height and whether alpha is declared, from the first RIFF chunk."""
    if len(data) < 30:
        raise ImageRejected("corrupt_image", "the WebP file is too short")
    fourcc = data[12:16]
    if fourcc == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageRejected("corrupt_image", "the VP8 frame header is invalid")
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return width, height, False
    if fourcc == b"VP8L":
        if data[20] != 0x2F:
            raise ImageRejected("corrupt_image", "the VP8L signature is invalid")
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    if fourcc == b"VP8X":
        flags = data[20]
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height, bool(flags & VP8X_FLAG_ALPHA)
    raise ImageRejected("corrupt_image", "the WebP file starts with an unknown chunk")
