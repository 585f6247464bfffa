"""What is derived from a stored image after its job completed: one decode, many uses.

Decoding a large image is the costliest step of the whole pipeline (about two thirds of the CPU
of a 1024x1024 WebP), and nothing on the way to "completed" needs the pixels when the provider
already answered in the delivery format. So the decode happens here, once, after completion, and
everything that needs pixels shares it: the gallery thumbnail, and any `Analyser` (a palette,
lighting or perceptual-hash check written as a pure function of a PIL image).

Everything here is pure and CPU-bound, and picklable (module-level functions and frozen
dataclasses), so callers can run it in the image process pool.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from caverna.imaging.formats import ImageRejected, sniff_format
from caverna.imaging.process import THUMBNAIL_CONTENT_TYPE, decode_image, make_thumbnail

THUMBNAIL_SIZE = 256

AnalyserFunction = Callable[[Image.Image], Mapping[str, Any]]
"""A pure function of the decoded pixels; it must not modify the image it is given."""


@dataclass(frozen=True, slots=True)
class Analyser:
    """A named analysis run on the shared decode; `name` keys its result."""

    name: str
    run: AnalyserFunction


@dataclass(frozen=True, slots=True)
class Derivatives:
    thumbnail: bytes
    thumbnail_content_type: str
    width: int
    height: int
    # analyser name -> its result; an analyser that raised is reported in `errors`, and never
    # costs the thumbnail
    analyses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


def make_derivatives(
    data: bytes,
    *,
    analysers: Sequence[Analyser] = (),
    thumbnail_size: int = THUMBNAIL_SIZE,
) -> Derivatives:
    """Decode a stored image once; thumbnail it and run every analyser on the same pixels.

    Raises ImageRejected when the stored bytes cannot be decoded (a corrupt pass-through image
    is only found here, since completion no longer decodes it).
    """
    image = decode_stored(data)
    analyses: dict[str, Mapping[str, Any]] = {}
    errors: dict[str, str] = {}
    for analyser in analysers:
        try:
            analyses[analyser.name] = dict(analyser.run(image))
        except Exception as exc:  # one analysis failing must not cost the others or the thumb
            errors[analyser.name] = f"{type(exc).__name__}: {exc}"[:500]
    return Derivatives(
        thumbnail=make_thumbnail(image, thumbnail_size),
        thumbnail_content_type=THUMBNAIL_CONTENT_TYPE,
        width=image.width,
        height=image.height,
        analyses=analyses,
        errors=errors,
    )


def decode_stored(data: bytes) -> Image.Image:
    """Every pixel of an image as the pipeline stored it (AVIF included: it is our own output)."""
    if sniff_format(data) != "avif":
        return decode_image(data)
    try:
        image = Image.open(io.BytesIO(data), formats=["AVIF"])
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageRejected("image_too_large", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt_image", f"the avif image cannot be decoded: {exc}") from exc
    return image
