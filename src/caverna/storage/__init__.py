"""Object storage for images, thumbnails and exports: one interface, three backends.

Only the interface, its errors and the key scheme are exported here, so code that merely uses a
store does not import obstore or any backend. Backends are built by
``caverna.storage.factory.store_from_url`` in the composition root.
"""

from caverna.storage.base import (
    ObjectExists,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
    StoredObject,
)
from caverna.storage.keys import (
    CONTENT_TYPES,
    EXTENSIONS,
    content_type_for,
    export_key,
    image_key,
    thumbnail_key,
    validate_key,
    validate_prefix,
)

__all__ = [
    "CONTENT_TYPES",
    "EXTENSIONS",
    "ObjectExists",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "StorageUnavailable",
    "StoredObject",
    "content_type_for",
    "export_key",
    "image_key",
    "thumbnail_key",
    "validate_key",
    "validate_prefix",
]
