"""The object key scheme: keys come from ids and dates the service owns, never from user input.

A key is a relative, slash-separated name such as ``images/2026/11/<uuid>.webp``. The alphabet is
deliberately small (ASCII letters, digits and ``-_./``) so that the same key is a safe file path on
every operating system, a valid S3 key on every S3-compatible service, and a URL path that needs
no escaping behind a CDN. The extension decides the content type, which keeps every backend
answering ``head()`` the same way, including the local folder that has nowhere else to store it.

Every store calls :func:`validate_key` (or :func:`validate_prefix`) before any I/O, so a bug that
builds a key from something else fails loudly instead of reaching the disk or the bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

MAX_KEY_LENGTH = 512
# File systems cap a name at 255 bytes; the local store also needs room for its temporary names.
MAX_SEGMENT_LENGTH = 200

CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "webp": "image/webp",
        "png": "image/png",
        "avif": "image/avif",
        "jpg": "image/jpeg",
        "zip": "application/zip",
    }
)
EXTENSIONS: frozenset[str] = frozenset(CONTENT_TYPES)

_KEY_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./")
_ALLOWED = "ASCII letters, digits and '-', '_', '.', '/'"
_SLUG_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def image_key(image_id: uuid.UUID, created_at: datetime, extension: str) -> str:
    """Key of a generated image; the month folder keeps listings and backups cheap to slice."""
    return _dated_key("images", image_id, created_at, _known_extension(extension))


def thumbnail_key(image_id: uuid.UUID, created_at: datetime) -> str:
    """Key of an image's thumbnail: always WebP, so it is derivable from the image row alone."""
    return _dated_key("thumbs", image_id, created_at, "webp")


def export_key(export_id: uuid.UUID, created_at: datetime) -> str:
    """Key of a bulk download archive, kept apart from images so lifecycle rules can expire it."""
    return _dated_key("exports", export_id, created_at, "zip")


def preview_key(template_version: str, kind: str, option_id: str, size: int) -> str:
    """Key of a catalogue option's picker preview.

    The pack's template version leads the key, so editing the pack files its previews under a new
    folder instead of serving stale ones, and the old folder can be dropped with one prefix.
    """
    parts = (("template version", template_version), ("kind", kind), ("option", option_id))
    for name, value in parts:
        if not value or not set(value) <= _SLUG_ALPHABET:
            raise ValueError(f"preview {name} {value!r} must be ASCII letters, digits and '-'")
    if not 16 <= size <= 1024:
        raise ValueError(f"preview size {size} is outside 16..1024")
    return validate_key(f"previews/{template_version}/{kind}/{option_id}-{size}.webp")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged, or raise ValueError naming the rule it breaks."""
    _check_path(key, what="key")
    name = key.rpartition("/")[2]
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        raise ValueError(
            f"object key {key!r} has no '<name>.<extension>' last segment; "
            f"extensions: {', '.join(sorted(EXTENSIONS))}"
        )
    if extension not in EXTENSIONS:
        raise ValueError(
            f"object key {key!r} has extension {extension!r}; "
            f"allowed: {', '.join(sorted(EXTENSIONS))}"
        )
    return key


def validate_prefix(prefix: str) -> str:
    """Return a listing prefix unchanged (``""`` lists everything), or raise ValueError."""
    if prefix:
        _check_path(prefix, what="prefix")
    return prefix


def content_type_for(key: str) -> str:
    """The content type a key's extension implies; the single source for every backend."""
    return CONTENT_TYPES[validate_key(key).rpartition(".")[2]]


def check_content_type(key: str, content_type: str) -> None:
    """Refuse a content type that disagrees with the key, so no backend can store a lie."""
    expected = content_type_for(key)
    if content_type != expected:
        raise ValueError(
            f"content type {content_type!r} does not match object key {key!r}; "
            f"its extension implies {expected!r}"
        )


def _dated_key(folder: str, object_id: uuid.UUID, created_at: datetime, extension: str) -> str:
    # Naive datetimes are read as UTC: that is how the database stores them, and reading them as
    # local time would move an object to another month folder when the server's zone changes.
    moment = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at
    moment = moment.astimezone(UTC)
    return validate_key(f"{folder}/{moment:%Y/%m}/{object_id}.{extension}")


def _known_extension(extension: str) -> str:
    if extension not in EXTENSIONS:
        raise ValueError(
            f"unknown extension {extension!r}; allowed: {', '.join(sorted(EXTENSIONS))}"
        )
    return extension


def _check_path(value: str, *, what: str) -> None:
    label = f"object {what} {value!r}"
    if not value:
        raise ValueError(f"object {what} is empty")
    if len(value) > MAX_KEY_LENGTH:
        raise ValueError(f"{label} is {len(value)} characters long; the limit is {MAX_KEY_LENGTH}")
    if "\\" in value:
        raise ValueError(f"{label} contains a backslash; use '/' between segments")
    bad = sorted(set(value) - _KEY_ALPHABET)
    if bad:
        raise ValueError(f"{label} contains {''.join(bad)!r}; allowed: {_ALLOWED}")
    if value.startswith("/"):
        raise ValueError(f"{label} starts with '/'; keys are relative to the store")
    segments = value.split("/")
    longest = max(len(segment) for segment in segments)
    if longest > MAX_SEGMENT_LENGTH:
        raise ValueError(
            f"{label} has a {longest}-character segment; the limit is {MAX_SEGMENT_LENGTH}"
        )
    # A prefix may end with '/', which leaves one empty last segment; nothing else may be empty.
    inner = segments[:-1] if what == "prefix" else segments
    for segment in inner:
        if segment in ("", ".", ".."):
            raise ValueError(f"{label} has an empty, '.' or '..' segment")
    if segments[-1] in (".", ".."):
        raise ValueError(f"{label} has an empty, '.' or '..' segment")
