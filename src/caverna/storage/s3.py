"""Objects in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO) through obstore.

obstore errors are translated here and nowhere else:

    FileNotFoundError (404)                   -> ObjectNotFound (or None from head())
    NoSuchBucket in a 404                     -> StorageUnavailable: the bucket is missing
    AlreadyExistsError / PreconditionError    -> ObjectExists (conditional put lost)
    any other obstore error or OSError        -> StorageUnavailable (connection refused,
                                                 timeouts, 5xx after retries, bad credentials)

``if_absent`` is a conditional PUT (``If-None-Match: *``), which AWS S3, R2 and MinIO honour.
obstore sends conditional puts as one request rather than a multipart upload, so objects written
that way are limited to S3's single-PUT size (5 GiB); ordinary puts switch to multipart above 5 MiB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError
from obstore.store import S3Store as ObstoreS3Store

from caverna.storage.base import (
    ListedObject,
    ObjectExists,
    ObjectNotFound,
    StorageUnavailable,
    StoredObject,
    check_expiry,
)
from caverna.storage.keys import check_content_type, validate_key, validate_prefix

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

# S3's bucket naming rules, which R2 and MinIO also follow: 3-63 characters, lower-case letters,
# digits, dots and hyphens, starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")
_LIST_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Everything needed to reach one bucket; validated on construction so mistakes fail at boot.

    ``path_style=None`` picks the usual choice: path-style requests when a custom endpoint is set
    (MinIO, R2, test servers), virtual-hosted requests against AWS itself. ``endpoint`` is always
    the service endpoint; for virtual-hosted requests the bucket is prepended to its host name.
    Credentials left as ``None`` come from ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
    ``AWS_SESSION_TOKEN``, or from the instance or container role when those are unset too.
    """

    bucket: str
    endpoint: str | None = None
    region: str = "us-east-1"
    path_style: bool | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    public_base_url: str | None = None
    presign_expiry: int = 3600
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    max_retries: int = 3
    retry_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not _BUCKET.fullmatch(self.bucket) or ".." in self.bucket:
            raise ValueError(
                f"bucket name {self.bucket!r} is not valid: use 3-63 lower-case letters, digits, "
                "'.' or '-', starting and ending with a letter or digit"
            )
        if _IP_ADDRESS.fullmatch(self.bucket):
            raise ValueError(f"bucket name {self.bucket!r} looks like an IP address")
        if self.endpoint is not None:
            _check_base_url(self.endpoint, "endpoint")
        if self.public_base_url is not None:
            _check_base_url(self.public_base_url, "public_base_url")
        if not self.region or not re.fullmatch(r"[a-z0-9-]+", self.region):
            raise ValueError(f"region {self.region!r} is not valid, e.g. 'us-east-1' or 'auto'")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        check_expiry(self.presign_expiry)
        for name in ("connect_timeout", "request_timeout", "retry_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must be zero or more")

    @property
    def uses_path_style(self) -> bool:
        """Path-style when asked, or by default whenever a custom endpoint is configured."""
        return self.endpoint is not None if self.path_style is None else self.path_style


class S3Store:
    """One bucket, addressed with the validated keys of ``caverna.storage.keys``."""

    kind: str = "s3"

    def __init__(self, settings: S3Settings) -> None:
        self._settings = settings
        self._public_base = (
            settings.public_base_url.rstrip("/") if settings.public_base_url else None
        )
        self._store = ObstoreS3Store(
            settings.bucket,
            config=_s3_config(settings),
            client_options=_client_options(settings),
            retry_config=_retry_config(settings),
        )

    @property
    def settings(self) -> S3Settings:
        """The configuration in use; secrets are left out of its repr."""
        return self._settings

    async def put(
        self, key: str, data: bytes, *, content_type: str, if_absent: bool = False
    ) -> None:
        check_content_type(validate_key(key), content_type)
        with self._translated("write", key):
            await obstore.put_async(
                self._store,
                key,
                data,
                attributes={"Content-Type": content_type},
                mode="create" if if_absent else "overwrite",
            )

    async def get(self, key: str) -> bytes:
        validate_key(key)
        with self._translated("read", key):
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())

    async def head(self, key: str) -> StoredObject | None:
        validate_key(key)
        try:
            with self._translated("inspect", key):
                # A HEAD through get() carries the object's attributes; obstore's head() does not.
                result = await obstore.get_async(self._store, key, options={"head": True})
        except ObjectNotFound:
            return None
        return StoredObject(
            key=key,
            size=result.meta["size"],
            content_type=result.attributes.get("Content-Type"),
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        try:
            with self._translated("delete", key):
                await obstore.delete_async(self._store, key)
        except ObjectNotFound:
            return

    async def list_keys(self, prefix: str) -> list[str]:
        return [listed.key for listed in await self.list_objects(prefix)]

    async def list_objects(self, prefix: str) -> list[ListedObject]:
        validate_prefix(prefix)
        # obstore lists whole path segments, so list the folder part and filter by string prefix.
        folder = prefix.rpartition("/")[0] or None
        found: list[ListedObject] = []
        try:
            with self._translated("list", prefix):
                async for chunk in obstore.list(self._store, folder, chunk_size=_LIST_CHUNK):
                    found.extend(
                        ListedObject(
                            key=meta["path"],
                            size=meta["size"],
                            last_modified=_aware(meta["last_modified"]),
                        )
                        for meta in chunk
                        if meta["path"].startswith(prefix) and _is_key(meta["path"])
                    )
        except ObjectNotFound:
            return []
        return sorted(found, key=lambda listed: listed.key)

    async def url(self, key: str, *, expires_in: int | None = None) -> str | None:
        validate_key(key)
        seconds = check_expiry(self._settings.presign_expiry if expires_in is None else expires_in)
        if self._public_base is not None:
            return f"{self._public_base}/{key}"
        with self._translated("sign", key):
            return await obstore.sign_async(self._store, "GET", key, timedelta(seconds=seconds))

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    async def close(self) -> None:
        # obstore pools connections inside the store object and frees them with it.
        return None

    @contextmanager
    def _translated(self, action: str, key: str) -> Iterator[None]:
        where = f"bucket {self._settings.bucket!r}"
        try:
            yield
        except (AlreadyExistsError, PreconditionError) as exc:
            raise ObjectExists(key) from exc
        except (BaseError, OSError) as exc:
            # Only the error body names a missing bucket: obstore reports it as a missing object
            # on reads and writes, and as a generic error on listings.
            if "NoSuchBucket" in str(exc):
                missing = f"cannot {action} {key!r}: {where} does not exist"
                raise StorageUnavailable(missing) from exc
            if isinstance(exc, FileNotFoundError):
                raise ObjectNotFound(key) from exc
            failed = f"cannot {action} {key!r} in {where}: {_first_line(exc)}"
            raise StorageUnavailable(failed) from exc


def _s3_config(settings: S3Settings) -> S3Config:
    config: S3Config = {
        "region": settings.region,
        "virtual_hosted_style_request": not settings.uses_path_style,
    }
    if settings.endpoint is not None:
        endpoint = settings.endpoint.rstrip("/")
        if not settings.uses_path_style:
            parts = urlsplit(endpoint)
            endpoint = f"{parts.scheme}://{settings.bucket}.{parts.netloc}"
        # Set both names: obstore lets AWS_ENDPOINT_URL_S3 from the environment beat `endpoint`.
        config["endpoint"] = endpoint
        config["aws_endpoint_url_s3"] = endpoint
    if settings.access_key_id is not None and settings.secret_access_key is not None:
        config["access_key_id"] = settings.access_key_id
        config["secret_access_key"] = settings.secret_access_key
        if settings.session_token is not None:
            config["session_token"] = settings.session_token
    return config


def _client_options(settings: S3Settings) -> ClientConfig:
    return {
        "allow_http": bool(settings.endpoint and settings.endpoint.startswith("http://")),
        "connect_timeout": timedelta(seconds=settings.connect_timeout),
        "timeout": timedelta(seconds=settings.request_timeout),
    }


def _retry_config(settings: S3Settings) -> RetryConfig:
    return {
        "max_retries": settings.max_retries,
        "retry_timeout": timedelta(seconds=settings.retry_timeout),
    }


def _check_base_url(value: str, name: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL with a host name")
    if parts.username or parts.password:
        raise ValueError(f"{name} must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError(f"{name} must not have a query or fragment")
    if name == "endpoint" and parts.path not in ("", "/"):
        raise ValueError("endpoint must not have a path; the bucket is added to it")


def _is_key(name: str) -> bool:
    try:
        validate_key(name)
    except ValueError:
        return False
    return True


def _aware(moment: datetime) -> datetime:
    # obstore returns aware UTC times; a naive one (some S3 look-alikes) is read as UTC
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _first_line(exc: BaseException) -> str:
    # obstore appends multi-line debug dumps; the first line names the request and the cause.
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
