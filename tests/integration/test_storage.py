"""One contract for every object store, run against a folder, memory and an S3-protocol server.

The S3 backend talks to moto's server on loopback through obstore, exactly as it would talk to
MinIO, R2 or AWS; buckets are created with boto3 because obstore cannot create them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from caverna.storage import (
    CONTENT_TYPES,
    ObjectExists,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
    StoredObject,
    image_key,
    thumbnail_key,
)
from caverna.storage.factory import store_from_url
from caverna.storage.keys import MAX_KEY_LENGTH, MAX_SEGMENT_LENGTH
from caverna.storage.local import LocalStore
from caverna.storage.memory import MemoryStore
from caverna.storage.s3 import S3Settings, S3Store
from tests.integration.conftest import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3Server

WHEN = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
WEBP = "image/webp"
INVALID = "^object (key|prefix)"  # how the key scheme words every refusal


def s3_settings(server: S3Server, bucket: str, **overrides: object) -> S3Settings:
    values: dict[str, object] = {
        "bucket": bucket,
        "endpoint": server.endpoint,
        "access_key_id": S3_ACCESS_KEY_ID,
        "secret_access_key": S3_SECRET_ACCESS_KEY,
        **overrides,
    }
    return S3Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "memory", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    built: ObjectStore
    if request.param == "local":
        built = LocalStore(tmp_path / "media")
    elif request.param == "memory":
        built = MemoryStore()
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        built = S3Store(s3_settings(server, server.create_bucket()))
    yield built
    await built.close()


def new_key(extension: str = "webp") -> str:
    return image_key(uuid.uuid4(), WHEN, extension)


# --- the contract every backend keeps ---------------------------------------------------------


async def test_put_then_get_head_and_delete(store: ObjectStore) -> None:
    key = new_key()
    await store.put(key, b"RIFF-bytes", content_type=WEBP)

    assert await store.get(key) == b"RIFF-bytes"
    assert await store.head(key) == StoredObject(key=key, size=10, content_type=WEBP)
    assert await store.list_keys("images/") == [key]

    await store.delete(key)
    assert await store.head(key) is None
    assert await store.list_keys("images/") == []


async def test_kind_names_the_backend(store: ObjectStore) -> None:
    assert store.kind in {"local", "memory", "s3"}
    expected = {LocalStore: "local", MemoryStore: "memory", S3Store: "s3"}
    assert store.kind == expected[type(store)]


async def test_missing_key_reads_as_not_found(store: ObjectStore) -> None:
    key = new_key()
    with pytest.raises(ObjectNotFound) as caught:
        await store.get(key)
    assert caught.value.key == key
    assert await store.head(key) is None


async def test_put_overwrites_by_default(store: ObjectStore) -> None:
    key = new_key()
    await store.put(key, b"first", content_type=WEBP)
    await store.put(key, b"second!", content_type=WEBP)
    assert await store.get(key) == b"second!"
    head = await store.head(key)
    assert head is not None
    assert head.size == 7


async def test_if_absent_refuses_a_taken_key_and_keeps_the_original(store: ObjectStore) -> None:
    key = new_key()
    await store.put(key, b"original", content_type=WEBP, if_absent=True)
    with pytest.raises(ObjectExists) as caught:
        await store.put(key, b"intruder", content_type=WEBP, if_absent=True)
    assert caught.value.key == key
    assert await store.get(key) == b"original"


async def test_if_absent_succeeds_again_after_delete(store: ObjectStore) -> None:
    key = new_key()
    await store.put(key, b"one", content_type=WEBP, if_absent=True)
    await store.delete(key)
    await store.put(key, b"two", content_type=WEBP, if_absent=True)
    assert await store.get(key) == b"two"


async def test_concurrent_if_absent_writers_elect_exactly_one_winner(store: ObjectStore) -> None:
    key = new_key()

    async def attempt(writer: int) -> int | None:
        try:
            await store.put(key, f"writer-{writer}".encode(), content_type=WEBP, if_absent=True)
        except ObjectExists:
            return None
        return writer

    outcomes = await asyncio.gather(*(attempt(writer) for writer in range(10)))
    winners = [writer for writer in outcomes if writer is not None]
    assert len(winners) == 1
    assert outcomes.count(None) == 9
    assert await store.get(key) == f"writer-{winners[0]}".encode()


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    key = new_key()
    await store.delete(key)  # never existed
    await store.put(key, b"x", content_type=WEBP)
    await store.delete(key)
    await store.delete(key)  # already gone
    assert await store.head(key) is None


async def test_list_keys_matches_a_plain_string_prefix_sorted(store: ObjectStore) -> None:
    keys = [
        "images/2026/12/c.png",
        "images/2026/11/b.webp",
        "images/2026/01/a.webp",
        "images/2025/11/d.webp",
        "thumbs/2026/11/b.webp",
    ]
    for key in keys:
        await store.put(key, b"x", content_type=CONTENT_TYPES[key.rpartition(".")[2]])

    assert await store.list_keys("") == sorted(keys)
    assert await store.list_keys("images/2026/1") == [
        "images/2026/11/b.webp",
        "images/2026/12/c.png",
    ]
    assert await store.list_keys("images/2026/") == [
        "images/2026/01/a.webp",
        "images/2026/11/b.webp",
        "images/2026/12/c.png",
    ]
    assert await store.list_keys("images/2026/11/b.webp") == ["images/2026/11/b.webp"]
    assert await store.list_keys("thumbs") == ["thumbs/2026/11/b.webp"]
    assert await store.list_keys("exports/") == []


async def test_twelve_megabyte_object_round_trips(store: ObjectStore) -> None:
    key = new_key("png")
    payload = os.urandom(12 * 1024 * 1024)
    await store.put(key, payload, content_type="image/png")

    read = await store.get(key)
    assert len(read) == len(payload)
    assert hashlib.sha256(read).digest() == hashlib.sha256(payload).digest()
    assert await store.head(key) == StoredObject(
        key=key, size=len(payload), content_type="image/png"
    )


async def test_content_types_are_kept_for_every_extension(store: ObjectStore) -> None:
    for extension, content_type in CONTENT_TYPES.items():
        key = new_key(extension)
        await store.put(key, b"x", content_type=content_type)
        head = await store.head(key)
        assert head is not None
        assert head.content_type == content_type


async def test_longest_keys_work_everywhere(store: ObjectStore) -> None:
    segment = "s" * 100
    key = "/".join([segment] * 4) + "/" + "n" * (MAX_KEY_LENGTH - 404 - 5) + ".webp"
    longest_name = "images/" + "n" * (MAX_SEGMENT_LENGTH - 5) + ".webp"
    for long_key in (key, longest_name):
        await store.put(long_key, b"long", content_type=WEBP, if_absent=True)
        assert await store.get(long_key) == b"long"
    assert await store.list_keys("") == sorted([key, longest_name])


async def test_content_type_that_contradicts_the_key_is_refused(store: ObjectStore) -> None:
    key = new_key("webp")
    with pytest.raises(ValueError, match="does not match"):
        await store.put(key, b"x", content_type="image/png")
    assert await store.head(key) is None


@pytest.mark.parametrize(
    "bad_key",
    ["../outside.webp", "/etc/passwd.webp", "images/../../x.webp", "images\\x.webp", "a//b.webp"],
)
async def test_invalid_keys_are_refused_by_every_operation(
    store: ObjectStore, bad_key: str
) -> None:
    with pytest.raises(ValueError, match=INVALID):
        await store.put(bad_key, b"x", content_type=WEBP)
    with pytest.raises(ValueError, match=INVALID):
        await store.get(bad_key)
    with pytest.raises(ValueError, match=INVALID):
        await store.head(bad_key)
    with pytest.raises(ValueError, match=INVALID):
        await store.delete(bad_key)
    with pytest.raises(ValueError, match=INVALID):
        await store.url(bad_key)
    with pytest.raises(ValueError, match=INVALID):
        store.local_path(bad_key)
    with pytest.raises(ValueError, match=INVALID):
        await store.list_keys(bad_key.rpartition("/")[0] + "/")


async def test_url_expiry_is_validated_everywhere(store: ObjectStore) -> None:
    key = new_key()
    for bad in (0, -5, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError, match="expiry"):
            await store.url(key, expires_in=bad)


async def test_only_the_local_store_exposes_files(store: ObjectStore) -> None:
    key = thumbnail_key(uuid.uuid4(), WHEN)
    await store.put(key, b"thumb", content_type=WEBP)
    path = store.local_path(key)
    if store.kind == "local":
        assert path is not None
        assert path.read_bytes() == b"thumb"
        assert await store.url(key) is None
    elif store.kind == "memory":
        assert path is None
        assert await store.url(key) is None
    else:
        assert path is None
        assert await store.url(key) is not None


# --- local folder -------------------------------------------------------------------------------


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


async def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "media")
    key = new_key()
    await store.put(key, b"one", content_type=WEBP)
    await store.put(key, b"two", content_type=WEBP)
    with pytest.raises(ObjectExists):
        await store.put(key, b"three", content_type=WEBP, if_absent=True)
    raced = new_key()
    await asyncio.gather(
        *(store.put(raced, b"r", content_type=WEBP, if_absent=True) for _ in range(10)),
        return_exceptions=True,
    )
    assert files_under(store.root) == sorted([key, raced])


async def test_local_concurrent_writers_share_new_folders(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "media")
    keys = [new_key() for _ in range(30)]  # all in one month folder that does not exist yet
    await asyncio.gather(*(store.put(key, key.encode(), content_type=WEBP) for key in keys))
    assert await store.list_keys("") == sorted(keys)


async def test_local_root_is_created_and_paths_stay_under_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "deep" / "media")
    assert store.root == (tmp_path / "deep" / "media").resolve()
    key = new_key()
    await store.put(key, b"x", content_type=WEBP)
    path = store.local_path(key)
    assert path is not None
    assert path.is_relative_to(store.root)
    assert path == store.root.joinpath(*key.split("/"))


async def test_local_objects_outlive_the_store_instance(tmp_path: Path) -> None:
    key = new_key()
    await LocalStore(tmp_path / "media").put(key, b"kept", content_type=WEBP)
    assert await LocalStore(tmp_path / "media").get(key) == b"kept"


async def test_local_root_may_itself_be_a_link(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "media").symlink_to(tmp_path / "disk")
    key = new_key()
    await LocalStore(tmp_path / "media").put(key, b"x", content_type=WEBP)
    assert (tmp_path / "disk").joinpath(*key.split("/")).read_bytes() == b"x"


async def test_local_folder_link_cannot_reach_outside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.webp"
    secret.write_bytes(b"secret")
    store = LocalStore(tmp_path / "media")
    (store.root / "images").symlink_to(outside, target_is_directory=True)
    key = "images/secret.webp"

    with pytest.raises(ValueError, match="symbolic link"):
        await store.get(key)
    with pytest.raises(ValueError, match="symbolic link"):
        await store.head(key)
    with pytest.raises(ValueError, match="symbolic link"):
        await store.put(key, b"overwritten", content_type=WEBP)
    with pytest.raises(ValueError, match="symbolic link"):
        await store.put("images/new.webp", b"planted", content_type=WEBP)
    with pytest.raises(ValueError, match="symbolic link"):
        await store.delete(key)
    with pytest.raises(ValueError, match="symbolic link"):
        store.local_path(key)
    assert await store.list_keys("") == []
    assert await store.list_keys("images/") == []
    assert secret.read_bytes() == b"secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.webp"]


async def test_local_file_link_cannot_read_or_replace_its_target(tmp_path: Path) -> None:
    secret = tmp_path / "secret.webp"
    secret.write_bytes(b"secret")
    store = LocalStore(tmp_path / "media")
    key = "thumbs/2026/11/planted.webp"
    link = store.root.joinpath(*key.split("/"))
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)

    with pytest.raises(ValueError, match="symbolic link"):
        await store.get(key)
    with pytest.raises(ValueError, match="symbolic link"):
        await store.put(key, b"overwritten", content_type=WEBP)
    assert await store.list_keys("thumbs/") == []
    assert secret.read_bytes() == b"secret"


async def test_local_key_that_needs_an_object_as_folder_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "media")
    await store.put("a/b.webp", b"x", content_type=WEBP)
    with pytest.raises(ValueError, match="collides"):
        await store.put("a/b.webp/c.webp", b"y", content_type=WEBP)
    assert files_under(store.root) == ["a/b.webp"]


# --- S3 protocol --------------------------------------------------------------------------------


def fetch(url: str) -> bytes:
    # No proxy: the request must go straight to the loopback server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        body: bytes = response.read()
    return body


async def test_s3_presigned_url_serves_the_bytes(s3_server: S3Server) -> None:
    store = S3Store(s3_settings(s3_server, s3_server.create_bucket(), presign_expiry=900))
    key = new_key()
    await store.put(key, b"signed bytes", content_type=WEBP)

    url = await store.url(key, expires_in=120)
    assert url is not None
    assert url.startswith(f"{s3_server.endpoint}/")
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["120"]
    assert await asyncio.to_thread(fetch, url) == b"signed bytes"

    default = await store.url(key)
    assert default is not None
    assert parse_qs(urlsplit(default).query)["X-Amz-Expires"] == ["900"]


async def test_s3_public_base_url_gives_cdn_urls(s3_server: S3Server) -> None:
    settings = s3_settings(
        s3_server, s3_server.create_bucket(), public_base_url="https://cdn.example.com/media/"
    )
    key = new_key()
    assert await S3Store(settings).url(key) == f"https://cdn.example.com/media/{key}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def expect_unavailable(store: S3Store) -> None:
    key = new_key()
    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "put": lambda: store.put(key, b"x", content_type=WEBP),
        "put if_absent": lambda: store.put(key, b"x", content_type=WEBP, if_absent=True),
        "get": lambda: store.get(key),
        "head": lambda: store.head(key),
        "delete": lambda: store.delete(key),
        "list": lambda: store.list_keys("images/"),
        "url": lambda: store.url(key),  # signing needs no server: it must still work
    }
    outcomes: dict[str, str] = {}
    async with asyncio.timeout(20):
        for name, operation in operations.items():
            try:
                await operation()
            except StorageUnavailable as exc:
                named = store.settings.bucket in str(exc)
                outcomes[name] = "unavailable" if named else f"unavailable, unclear: {exc}"
            else:
                outcomes[name] = "succeeded"
    expected = dict.fromkeys(operations, "unavailable")
    expected["url"] = "succeeded"
    assert outcomes == expected


async def test_s3_unreachable_endpoint_is_unavailable_quickly() -> None:
    settings = S3Settings(
        bucket="unreachable",
        endpoint=f"http://127.0.0.1:{closed_port()}",
        access_key_id="dummy",
        secret_access_key="dummy",
        connect_timeout=1,
        request_timeout=2,
        max_retries=1,
        retry_timeout=2,
    )
    await expect_unavailable(S3Store(settings))


class _FailingS3(BaseHTTPRequestHandler):
    """Answers every request with 503, as an overloaded S3-compatible server would."""

    def _fail(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _fail  # noqa: N815 (stdlib's names)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def failing_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_s3_server_errors_are_unavailable_after_retries(failing_endpoint: str) -> None:
    settings = S3Settings(
        bucket="overloaded",
        endpoint=failing_endpoint,
        access_key_id="dummy",
        secret_access_key="dummy",
        max_retries=2,
        retry_timeout=2,
    )
    await expect_unavailable(S3Store(settings))


async def test_s3_missing_bucket_is_unavailable_not_missing_object(s3_server: S3Server) -> None:
    store = S3Store(s3_settings(s3_server, "caverna-no-such-bucket"))
    with pytest.raises(StorageUnavailable, match="does not exist"):
        await store.put(new_key(), b"x", content_type=WEBP)
    with pytest.raises(StorageUnavailable, match="does not exist"):
        await store.get(new_key())
    with pytest.raises(StorageUnavailable, match="does not exist"):
        await store.list_keys("images/")
    with pytest.raises(StorageUnavailable, match="does not exist"):
        await store.delete(new_key())
    # A HEAD answer has no body to say which is missing, so head() reports a free key.
    assert await store.head(new_key()) is None


async def test_s3_virtual_hosted_requests_put_the_bucket_in_the_host() -> None:
    store = S3Store(
        S3Settings(
            bucket="media",
            endpoint="https://minio.example.test",
            path_style=False,
            access_key_id="dummy",
            secret_access_key="dummy",
        )
    )
    key = new_key()
    url = await store.url(key)  # signing is local: no request is sent
    assert url is not None
    assert url.startswith(f"https://media.minio.example.test/{key}?")


# --- the factory builds working stores ----------------------------------------------------------


async def test_factory_default_is_a_media_folder_in_the_data_dir(tmp_path: Path) -> None:
    store = store_from_url("", data_dir=tmp_path / "data")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "data" / "media").resolve()
    assert store.root.is_dir()


async def test_factory_file_and_memory_urls(tmp_path: Path) -> None:
    local = store_from_url(f"file://{tmp_path}/files", data_dir=tmp_path)
    assert isinstance(local, LocalStore)
    assert local.root == (tmp_path / "files").resolve()
    assert isinstance(store_from_url("memory://", data_dir=tmp_path), MemoryStore)


async def test_factory_s3_url_round_trips_with_credentials_from_the_environment(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The s3_server fixture exports the dummy credentials as AWS_ACCESS_KEY_ID / ..._SECRET_...
    # Stray AWS_* settings in the environment must not override what the URL says.
    elsewhere = f"http://127.0.0.1:{closed_port()}"
    for name in ("AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(name, elsewhere)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true")
    bucket = s3_server.create_bucket()
    store = store_from_url(
        f"s3://{bucket}?endpoint={s3_server.endpoint}&region=us-east-1&path_style=true",
        data_dir=tmp_path,
    )
    assert isinstance(store, S3Store)
    key = new_key()
    await store.put(key, b"via url", content_type=WEBP, if_absent=True)
    assert await store.get(key) == b"via url"
    url = await store.url(key)
    assert url is not None
    assert url.startswith(f"{s3_server.endpoint}/{bucket}/{key}?")
    assert parse_qs(urlsplit(url).query)["X-Amz-Credential"][0].split("/")[2] == "us-east-1"
    assert await asyncio.to_thread(fetch, url) == b"via url"


async def test_factory_r2_url_signs_for_cloudflare(tmp_path: Path) -> None:
    account = "0123456789abcdef0123456789abcdef"
    store = store_from_url(f"r2://media?account_id={account}", data_dir=tmp_path)
    assert isinstance(store, S3Store)
    # Same settings plus dummy credentials, so signing (a local computation) needs no environment.
    signer = S3Store(replace(store.settings, access_key_id="dummy", secret_access_key="dummy"))
    key = new_key()
    url = await signer.url(key)
    assert url is not None
    assert url.startswith(f"https://{account}.r2.cloudflarestorage.com/media/{key}?")
    credential = parse_qs(urlsplit(url).query)["X-Amz-Credential"][0]
    assert credential.split("/")[2] == "auto"
