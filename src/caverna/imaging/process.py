"""Provider bytes in, a delivered image with its metadata and thumbnail out.

Every function here is pure and CPU-bound; callers run it in a worker thread or process so the
event loop keeps serving requests. An image already in the delivery format is never re-encoded:
its pixels are final, and the metadata goes into the container at byte level.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

from PIL import Image, PngImagePlugin

from caverna.imaging.containers import (
    XMP_KEYWORD,
    png_chunks,
    png_itxt_chunk,
    png_text_chunk,
    png_with_chunks,
    riff_chunks,
    webp_with_xmp,
)
from caverna.imaging.formats import (
    CONTENT_TYPES,
    EXTENSIONS,
    DeliveryFormat,
    ImageRejected,
    SniffedFormat,
    header_size,
    sniff_format,
)
from caverna.imaging.metadata import PARAMETERS_KEYWORD, ImageMetadata, infotext, xmp_packet

THUMBNAIL_CONTENT_TYPE = "image/webp"
# Fixed encoder settings: identical input must always produce identical bytes.
_ENCODER_OPTIONS: dict[DeliveryFormat, dict[str, Any]] = {
    "webp": {"quality": 85, "method": 4},
    "png": {"optimize": False, "compress_level": 6},
    "avif": {"quality": 60, "speed": 6},
}
# method 2 halves the encode time of method 4 at 256 px for a file within 1% of its size.
_THUMBNAIL_OPTIONS: dict[str, Any] = {"quality": 80, "method": 2}
_PILLOW_FORMATS: dict[SniffedFormat, str] = {
    "png": "PNG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "avif": "AVIF",
}
_ACCEPTED_INPUT: tuple[SniffedFormat, ...] = ("png", "jpeg", "webp")
# 128x128 is processed in about a millisecond: less than a round trip to another process.
TINY_PIXELS = 128 * 128
_TINY_BYTES = 256 * 1024


@dataclass(frozen=True)
class ProcessedImage:
    """The image exactly as it will be stored and served, plus what the gallery shows."""

    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    sha256: str
    # None when the thumbnail is left to the derivatives pass (see caverna.imaging.derivatives)
    thumbnail: bytes | None
    thumbnail_content_type: str
    reencoded: bool


def process_image(
    raw: bytes,
    *,
    delivery: DeliveryFormat,
    metadata: ImageMetadata,
    thumbnail_size: int = 256,
    max_pixels: int = 40_000_000,
    max_bytes: int = 50 * 2**20,
    with_thumbnail: bool = True,
) -> ProcessedImage:
    """Validate provider bytes, deliver them in `delivery` with `metadata` embedded, thumbnail them.

    Without `with_thumbnail`, an image already in the delivery format is never decoded: its
    header, container structure and frame count are checked, and the pixels are left to the
    derivatives pass, which decodes them once for the thumbnail and every analysis. That decode
    is most of the cost of a large image, so completing a job does not wait for it.

    Raises ImageRejected: unsupported_image_format (not PNG/JPEG/WebP, or animated),
    image_too_large (bytes or header-declared pixels over the limits, checked before decoding),
    corrupt_image (truncated or undecodable). Pillow's own process-wide bomb limit (about
    179 MP) still applies on top of `max_pixels`, and is reported as image_too_large.
    """
    if len(raw) > max_bytes:
        raise ImageRejected("image_too_large", f"{len(raw)} bytes exceeds the {max_bytes} limit")
    fmt = sniff_format(raw)
    if fmt not in _ACCEPTED_INPUT:
        raise ImageRejected("unsupported_image_format", f"{fmt} input is not accepted")
    width, height = header_size(raw, fmt)
    if width * height > max_pixels:
        raise ImageRejected(
            "image_too_large", f"{width}x{height} exceeds the {max_pixels} pixel limit"
        )
    _check_structure(raw, fmt)
    passthrough = fmt == delivery
    image = _decode(raw, fmt, (width, height), load=with_thumbnail or not passthrough)

    if passthrough:
        data = _embed_in_container(raw, delivery, metadata, width, height)
        reencoded = False
    else:
        data = encode_image(image, delivery, metadata=metadata)
        reencoded = True

    return ProcessedImage(
        data=data,
        content_type=CONTENT_TYPES[delivery],
        extension=EXTENSIONS[delivery],
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        thumbnail=make_thumbnail(image, thumbnail_size) if with_thumbnail else None,
        thumbnail_content_type=THUMBNAIL_CONTENT_TYPE,
        reencoded=reencoded,
    )


def is_tiny_image(raw: bytes, max_pixels: int = TINY_PIXELS) -> bool:
    """Whether the header promises so few pixels that the work is cheaper than shipping it away.

    Only the header is read. Anything unreadable counts as not tiny, so `process_image` rejects
    it wherever it would have anyway.
    """
    if len(raw) > _TINY_BYTES:
        return False
    try:
        fmt = sniff_format(raw)
        if fmt not in _ACCEPTED_INPUT:
            return False
        width, height = header_size(raw, fmt)
    except ImageRejected:
        return False
    return width * height <= max_pixels


def _check_structure(raw: bytes, fmt: SniffedFormat) -> None:
    """Container-level truncation checks that do not depend on Pillow's global leniency switch."""
    if fmt == "png":
        png_chunks(raw)
    elif fmt == "webp":
        riff_chunks(raw)


def decode_image(raw: bytes, *, max_pixels: int = 40_000_000) -> Image.Image:
    """Every pixel of a stored or provider image, with the same checks as `process_image`."""
    fmt = sniff_format(raw)
    if fmt not in _ACCEPTED_INPUT:
        raise ImageRejected("unsupported_image_format", f"{fmt} input is not accepted")
    width, height = header_size(raw, fmt)
    if width * height > max_pixels:
        raise ImageRejected(
            "image_too_large", f"{width}x{height} exceeds the {max_pixels} pixel limit"
        )
    _check_structure(raw, fmt)
    return _decode(raw, fmt, (width, height))


def _decode(
    raw: bytes, fmt: SniffedFormat, declared: tuple[int, int], *, load: bool = True
) -> Image.Image:
    """Open and check the image; `load` decodes the pixels (the costly part) too."""
    try:
        image = Image.open(io.BytesIO(raw), formats=[_PILLOW_FORMATS[fmt]])
        if image.size != declared:
            raise ImageRejected("corrupt_image", "the decoder disagrees with the header size")
        if getattr(image, "n_frames", 1) > 1:
            raise ImageRejected("unsupported_image_format", "animated images are not accepted")
        if load:
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageRejected("image_too_large", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt_image", f"the {fmt} image cannot be decoded: {exc}") from exc
    return image


def _embed_in_container(
    raw: bytes, delivery: DeliveryFormat, metadata: ImageMetadata, width: int, height: int
) -> bytes:
    xmp = xmp_packet(metadata)
    if delivery == "png":
        chunks = [
            png_text_chunk(PARAMETERS_KEYWORD, infotext(metadata, width, height)),
            png_itxt_chunk(XMP_KEYWORD, xmp.decode("utf-8")),
        ]
        return png_with_chunks(raw, chunks, (PARAMETERS_KEYWORD, XMP_KEYWORD))
    if delivery == "webp":
        return webp_with_xmp(raw, xmp)
    raise ImageRejected("unsupported_image_format", f"{delivery} input cannot pass through")


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA"):
        return image
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


def encode_image(
    image: Image.Image, delivery: DeliveryFormat, *, metadata: ImageMetadata | None = None
) -> bytes:
    """Encode with the fixed delivery settings; `metadata` goes in through the encoder options."""
    icc = image.info.get("icc_profile")
    pixels = _rgb_or_rgba(image)
    options: dict[str, Any] = dict(_ENCODER_OPTIONS[delivery])
    if icc:
        options["icc_profile"] = icc
    if metadata is not None:
        xmp = xmp_packet(metadata)
        if delivery == "png":
            info = PngImagePlugin.PngInfo()
            info.add_text(PARAMETERS_KEYWORD, infotext(metadata, *pixels.size))
            info.add_itxt(XMP_KEYWORD, xmp.decode("utf-8"))
            options["pnginfo"] = info
        else:
            options["xmp"] = xmp
    out = io.BytesIO()
    pixels.save(out, format=_PILLOW_FORMATS[delivery], **options)
    return out.getvalue()


def make_thumbnail(image: Image.Image, size: int = 256) -> bytes:
    """A WebP whose longest side is at most `size` (never enlarged), alpha kept when present."""
    width, height = image.size
    scale = size / max(width, height)
    thumb = _rgb_or_rgba(image)
    if scale < 1:
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        factor = width // target[0]
        if factor > 1 and (width, height) == (target[0] * factor, target[1] * factor):
            # an exact ratio (1024 -> 256): the mean of each block is already a clean downscale,
            # at a fifth of the cost of the recipe below
            thumb = thumb.reduce(factor)
        else:
            # Pillow's thumbnail() recipe: a cheap integer box reduction first, then bicubic for
            # the rest; three times faster than a full-size Lanczos, indistinguishable at 256 px.
            thumb = thumb.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, format="WEBP", **_THUMBNAIL_OPTIONS)
    return out.getvalue()
