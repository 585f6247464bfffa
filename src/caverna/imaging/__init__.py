"""Image intake and delivery: format sniffing, bomb checks, metadata embedding, thumbnails."""

from caverna.imaging.derivatives import (
    THUMBNAIL_SIZE,
    Analyser,
    Derivatives,
    make_derivatives,
)
from caverna.imaging.formats import (
    CONTENT_TYPES,
    DELIVERY_FORMATS,
    EXTENSIONS,
    DeliveryFormat,
    ImageRejected,
    RejectionCode,
    SniffedFormat,
    sniff_format,
)
from caverna.imaging.metadata import CAVERNA_NS, ImageMetadata, read_metadata
from caverna.imaging.process import (
    ProcessedImage,
    decode_image,
    encode_image,
    is_tiny_image,
    make_thumbnail,
    process_image,
)

__all__ = [
    "CAVERNA_NS",
    "CONTENT_TYPES",
    "DELIVERY_FORMATS",
    "EXTENSIONS",
    "THUMBNAIL_SIZE",
    "Analyser",
    "DeliveryFormat",
    "Derivatives",
    "ImageMetadata",
    "ImageRejected",
    "ProcessedImage",
    "RejectionCode",
    "SniffedFormat",
    "decode_image",
    "encode_image",
    "is_tiny_image",
    "make_derivatives",
    "make_thumbnail",
    "process_image",
    "read_metadata",
    "sniff_format",
]
