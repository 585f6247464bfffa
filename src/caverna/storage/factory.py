"""One storage URL (``CAVERNA_STORAGE_URL``) picks and configures the object store.

Parsing is separate from building so that a bad URL is reported, with every accepted form, before
anything touches the disk or the network. Credentials are refused in the URL: URLs end up in logs,
so keys come from the standard ``AWS_*`` environment variables or the instance role instead.
Error messages never repeat the URL, for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from caverna.storage.base import ObjectStore
from caverna.storage.local import LocalStore
from caverna.storage.memory import MemoryStore
from caverna.storage.s3 import S3Settings, S3Store

ACCEPTED_FORMS = (
    "accepted storage URLs: '' (a 'media' folder in the data dir), "
    "file:///absolute/path, file://relative/path, memory://, "
    "s3://bucket?endpoint=https://host&region=us-east-1&path_style=true|false"
    "&public_base_url=https://cdn.example.com&presign_expiry=3600, "
    "r2://bucket?account_id=<32 hex digits>&public_base_url=...&presign_expiry=..."
)

_S3_PARAMETERS = ("endpoint", "region", "path_style", "public_base_url", "presign_expiry")
_R2_PARAMETERS = ("account_id", "public_base_url", "presign_expiry")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True, slots=True)
class LocalSpec:
    """A folder of files; relative paths are relative to the working directory."""

    root: Path


@dataclass(frozen=True, slots=True)
class MemorySpec:
    """Objects held in the process, lost on exit."""


StorageSpec = LocalSpec | MemorySpec | S3Settings


def store_from_url(url: str, *, data_dir: Path) -> ObjectStore:
    """Build the store a storage URL names (see :data:`ACCEPTED_FORMS`); ValueError when bad."""
    spec = parse_storage_url(url, data_dir=data_dir)
    if isinstance(spec, LocalSpec):
        return LocalStore(spec.root)
    if isinstance(spec, MemorySpec):
        return MemoryStore()
    return S3Store(spec)


def parse_storage_url(url: str, *, data_dir: Path) -> StorageSpec:
    """Turn a storage URL into validated settings without any I/O."""
    url = url.strip()
    if not url:
        return LocalSpec(data_dir / "media")
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise _invalid("the URL has no scheme; a bare path is written file:///absolute/path")
    scheme = scheme.lower()
    if scheme == "file":
        return _parse_file(rest)
    if scheme == "memory":
        if rest:
            raise _invalid("memory:// takes nothing after the scheme")
        return MemorySpec()
    if scheme in ("s3", "r2"):
        return _parse_bucket_url(scheme, rest)
    raise _invalid(f"unknown scheme {scheme!r}")


def _parse_file(rest: str) -> LocalSpec:
    if not rest:
        raise _invalid("file:// needs a folder path")
    if "?" in rest or "#" in rest:
        raise _invalid("file:// URLs take no query or fragment")
    return LocalSpec(Path(unquote(rest)))


def _parse_bucket_url(scheme: str, rest: str) -> S3Settings:
    try:
        parts = urlsplit(f"{scheme}://{rest}")
    except ValueError:
        raise _invalid(f"malformed {scheme}:// URL") from None
    if "@" in parts.netloc:
        raise _invalid(
            "credentials are refused in storage URLs; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None:
        raise _invalid(f"{scheme}:// names a bucket, not a host; put the server in endpoint=")
    if not parts.netloc:
        raise _invalid(f"{scheme}:// needs a bucket name")
    if parts.path not in ("", "/"):
        raise _invalid(f"{scheme}:// URLs name a whole bucket; a path inside it is not supported")
    if parts.fragment:
        raise _invalid(f"{scheme}:// URLs take no fragment")
    params = _query(parts.query, _S3_PARAMETERS if scheme == "s3" else _R2_PARAMETERS, scheme)
    presign_expiry = _integer(params.pop("presign_expiry", "3600"), "presign_expiry")
    public_base_url = params.get("public_base_url")
    if scheme == "r2":
        account_id = params.get("account_id", "")
        if not account_id:
            raise _invalid("r2:// needs account_id=<your Cloudflare account id>")
        if len(account_id) != 32 or any(c not in "0123456789abcdefABCDEF" for c in account_id):
            raise _invalid(
                "account_id must be the 32 hexadecimal digits of the Cloudflare account id"
            )
        endpoint: str | None = f"https://{account_id.lower()}.r2.cloudflarestorage.com"
        region = "auto"
        path_style: bool | None = True
    else:
        endpoint = params.get("endpoint")
        region = params.get("region", "us-east-1")
        style = params.get("path_style")
        path_style = None if style is None else _boolean(style, "path_style")
    try:
        return S3Settings(
            bucket=parts.netloc,
            endpoint=endpoint,
            region=region,
            path_style=path_style,
            public_base_url=public_base_url,
            presign_expiry=presign_expiry,
        )
    except ValueError as exc:
        raise _invalid(str(exc)) from None


def _query(query: str, allowed: tuple[str, ...], scheme: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _invalid("malformed query string; write name=value pairs joined by '&'") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise _invalid(f"unknown {scheme}:// parameter {name!r}; allowed: {', '.join(allowed)}")
        if name in params:
            raise _invalid(f"parameter {name!r} is given twice")
        if not value:
            raise _invalid(f"parameter {name!r} is empty")
        params[name] = value
    return params


def _boolean(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _invalid(f"{name} must be true or false")


def _integer(value: str, name: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise _invalid(f"{name} must be a whole number of seconds")
    return int(value)


def _invalid(problem: str) -> ValueError:
    return ValueError(f"invalid storage URL: {problem}. {ACCEPTED_FORMS}")
