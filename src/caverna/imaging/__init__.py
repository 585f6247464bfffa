"""Image intake and delivery: format sniffing, bomb checks, metadata embedding, thumbnails."""

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
    "DeliveryFormat",
    "ImageMetadata",
    "ImageRejected",
    "ProcessedImage",
    "RejectionCode",
    "SniffedFormat",
    "encode_image",
    "is_tiny_image",
    "make_thumbnail",
    "process_image",
    "read_metadata",
    "sniff_format",
]
