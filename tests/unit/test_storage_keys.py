"""The object key scheme and the storage URL grammar: pure functions, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import caverna.storage
from caverna.storage.factory import (
    ACCEPTED_FORMS,
    LocalSpec,
    MemorySpec,
    parse_storage_url,
)
from caverna.storage.keys import (
    CONTENT_TYPES,
    EXTENSIONS,
    MAX_KEY_LENGTH,
    MAX_SEGMENT_LENGTH,
    check_content_type,
    content_type_for,
    export_key,
    image_key,
    thumbnail_key,
    validate_key,
    validate_prefix,
)
from caverna.storage.s3 import S3Settings

IMAGE_ID = uuid.UUID("0b7c6f0e-5a8e-4d0a-9a7e-2f4f1c9d3e21")
WHEN = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
DATA_DIR = Path("caverna-data")


# --- keys ---------------------------------------------------------------------------------------


def test_image_key_is_month_folder_id_and_extension() -> None:
    assert image_key(IMAGE_ID, WHEN, "png") == f"images/2026/03/{IMAGE_ID}.png"


def test_thumbnail_and_export_keys_have_fixed_extensions() -> None:
    assert thumbnail_key(IMAGE_ID, WHEN) == f"thumbs/2026/03/{IMAGE_ID}.webp"
    assert export_key(IMAGE_ID, WHEN) == f"exports/2026/03/{IMAGE_ID}.zip"


def test_key_month_is_taken_in_utc() -> None:
    # 23:30 on 31 January in UTC-5 is already February in UTC.
    evening = datetime(2026, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert image_key(IMAGE_ID, evening, "webp").startswith("images/2026/02/")


def test_naive_datetimes_are_read_as_utc() -> None:
    naive = datetime(2026, 1, 31, 23, 30)
    assert image_key(IMAGE_ID, naive, "webp").startswith("images/2026/01/")


def test_keys_are_deterministic() -> None:
    assert image_key(IMAGE_ID, WHEN, "avif") == image_key(IMAGE_ID, WHEN, "avif")


@pytest.mark.parametrize("extension", ["gif", "WEBP", ".webp", "jpeg", "", "webp/../x", "exe"])
def test_unknown_extensions_are_refused(extension: str) -> None:
    with pytest.raises(ValueError, match="extension"):
        image_key(IMAGE_ID, WHEN, extension)


def test_every_generated_key_is_valid() -> None:
    for extension in EXTENSIONS:
        key = image_key(uuid.uuid4(), WHEN, extension)
        assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "images/2026/03/abc.webp",
        "a.png",
        "A-Z_0.9/x.y.jpg",
        ".hidden/x.zip",
        "/".join(["x" * 100] * 4) + "/" + "y" * (MAX_KEY_LENGTH - 404 - 5) + ".webp",
        "x" * (MAX_SEGMENT_LENGTH - 5) + ".webp",
    ],
)
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("/etc/passwd.webp", "starts with '/'"),
        ("/images/a.webp", "starts with '/'"),
        ("../a.webp", r"'\.\.' segment"),
        ("images/../../a.webp", r"'\.\.' segment"),
        ("images/..", r"'\.\.' segment"),
        ("images/./a.webp", r"'\.' or"),
        ("./a.webp", r"'\.' or"),
        ("images//a.webp", "empty"),
        ("images/a.webp/", "empty"),
        ("images\\a.webp", "backslash"),
        ("..\\..\\a.webp", "backslash"),
        ("C:/a.webp", "contains"),
        ("images/a b.webp", "contains"),
        ("images/ação.webp", "contains"),
        ("images/a.webp\x00.png", "contains"),
        ("images/a\n.webp", "contains"),
        ("%2e%2e/a.webp", "contains"),
        ("~/a.webp", "contains"),
        ("images/a.webp?x=1", "contains"),
        ("images/a.webp#frag", "contains"),
        ("/".join(["x" * 100] * 5) + "/" + "y" * 10 + ".webp", "characters long"),
        ("x" * (MAX_SEGMENT_LENGTH - 4) + ".webp", "201-character segment"),
        ("x" * 201 + "/a.webp", "201-character segment"),
        ("images/2026/03", "no '<name>.<extension>'"),
        ("images/.webp", "no '<name>.<extension>'"),
        ("images/a.gif", "extension 'gif'"),
        ("images/a.WEBP", "extension 'WEBP'"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(key: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_key(key)


@pytest.mark.parametrize("prefix", ["", "images/", "images/2026/1", "thumbs", "images/2026/03/a.w"])
def test_valid_prefixes_pass(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix", ["/", "/images", "../", "images/../", "images//", "images\\", "a b", "./", "images/."]
)
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"^object prefix"):
        validate_prefix(prefix)


def test_content_type_follows_the_extension() -> None:
    for extension, content_type in CONTENT_TYPES.items():
        assert content_type_for(f"a/b.{extension}") == content_type
    assert content_type_for("a/b.jpg") == "image/jpeg"


def test_content_type_must_agree_with_the_key() -> None:
    check_content_type("a/b.webp", "image/webp")
    with pytest.raises(ValueError, match="implies 'image/webp'"):
        check_content_type("a/b.webp", "image/png")
    with pytest.raises(ValueError, match="implies 'image/jpeg'"):
        check_content_type("a/b.jpg", "image/jpg")


def test_package_exports_only_the_interface_and_key_scheme() -> None:
    assert sorted(caverna.storage.__all__) == sorted(
        [
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
    )
    assert all(
        issubclass(getattr(caverna.storage, name), caverna.storage.StorageError)
        for name in ("ObjectExists", "ObjectNotFound", "StorageUnavailable")
    )


# --- storage URLs -------------------------------------------------------------------------------


def test_empty_url_is_a_media_folder_in_the_data_dir() -> None:
    assert parse_storage_url("", data_dir=DATA_DIR) == LocalSpec(DATA_DIR / "media")
    assert parse_storage_url("  ", data_dir=Path("/srv/c")) == LocalSpec(Path("/srv/c/media"))


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("file:///var/lib/caverna/media", Path("/var/lib/caverna/media")),
        ("file://media", Path("media")),
        ("file://./data/media", Path("data/media")),
        ("file:///srv/my%20media", Path("/srv/my media")),
        ("FILE:///srv/media", Path("/srv/media")),
    ],
)
def test_file_urls(url: str, root: Path) -> None:
    assert parse_storage_url(url, data_dir=DATA_DIR) == LocalSpec(root)


def test_memory_url() -> None:
    assert parse_storage_url("memory://", data_dir=DATA_DIR) == MemorySpec()


def test_minimal_s3_url_targets_aws_with_virtual_hosted_requests() -> None:
    spec = parse_storage_url("s3://caverna-media", data_dir=DATA_DIR)
    assert spec == S3Settings(bucket="caverna-media")
    assert isinstance(spec, S3Settings)
    assert spec.endpoint is None
    assert spec.region == "us-east-1"
    assert spec.uses_path_style is False
    assert spec.presign_expiry == 3600
    assert spec.public_base_url is None


def test_full_s3_url() -> None:
    spec = parse_storage_url(
        "s3://caverna-media?endpoint=http://127.0.0.1:9000&region=auto&path_style=true"
        "&public_base_url=https://cdn.example.com&presign_expiry=600",
        data_dir=DATA_DIR,
    )
    assert spec == S3Settings(
        bucket="caverna-media",
        endpoint="http://127.0.0.1:9000",
        region="auto",
        path_style=True,
        public_base_url="https://cdn.example.com",
        presign_expiry=600,
    )


def test_custom_endpoint_defaults_to_path_style_and_can_opt_out() -> None:
    minio = parse_storage_url("s3://media?endpoint=https://minio.internal", data_dir=DATA_DIR)
    assert isinstance(minio, S3Settings)
    assert minio.uses_path_style is True
    hosted = parse_storage_url(
        "s3://media?endpoint=https://minio.internal&path_style=false", data_dir=DATA_DIR
    )
    assert isinstance(hosted, S3Settings)
    assert hosted.uses_path_style is False


def test_r2_url_is_a_shortcut_for_cloudflare() -> None:
    account = "0123456789ABCDEF0123456789abcdef"
    spec = parse_storage_url(
        f"r2://caverna-media?account_id={account}&public_base_url=https://media.example.com",
        data_dir=DATA_DIR,
    )
    assert spec == S3Settings(
        bucket="caverna-media",
        endpoint=f"https://{account.lower()}.r2.cloudflarestorage.com",
        region="auto",
        path_style=True,
        public_base_url="https://media.example.com",
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("/var/lib/media", "no scheme"),
        ("media", "no scheme"),
        ("gs://bucket", "unknown scheme 'gs'"),
        ("https://bucket.s3.amazonaws.com", "unknown scheme 'https'"),
        ("file://", "needs a folder path"),
        ("file:///srv/media?mode=fast", "no query or fragment"),
        ("file:///srv/media#x", "no query or fragment"),
        ("memory://cache", "nothing after the scheme"),
        ("s3://", "needs a bucket name"),
        ("s3://?region=auto", "needs a bucket name"),
        ("s3://Bad_Bucket", "bucket name 'Bad_Bucket' is not valid"),
        ("s3://ab", "bucket name 'ab' is not valid"),
        ("s3://a..b", "is not valid"),
        ("s3://192.168.1.10", "looks like an IP address"),
        ("s3://bucket/some/prefix", "a path inside it is not supported"),
        ("s3://bucket:9000", "not a host"),
        ("s3://bucket:abc", "not a host"),
        ("s3://bucket#frag", "no fragment"),
        ("s3://bucket?colour=blue", "unknown s3:// parameter 'colour'"),
        ("s3://bucket?region=eu-west-1&region=us-east-1", "given twice"),
        ("s3://bucket?region=", "'region' is empty"),
        ("s3://bucket?region", "malformed query string"),
        ("s3://bucket?&&", "malformed query string"),
        ("s3://bucket?region=EU West", "region 'EU West' is not valid"),
        ("s3://bucket?path_style=maybe", "path_style must be true or false"),
        ("s3://bucket?presign_expiry=soon", "presign_expiry must be a whole number"),
        ("s3://bucket?presign_expiry=-5", "presign_expiry must be a whole number"),
        ("s3://bucket?presign_expiry=0", "expiry must be between 1 and 604800"),
        ("s3://bucket?presign_expiry=604801", "expiry must be between 1 and 604800"),
        ("s3://bucket?endpoint=ftp://files.example.com", "endpoint must be an http"),
        ("s3://bucket?endpoint=127.0.0.1:9000", "endpoint must be an http"),
        ("s3://bucket?endpoint=http://host:9000/minio", "endpoint must not have a path"),
        ("s3://bucket?public_base_url=cdn.example.com", "public_base_url must be an http"),
        ("s3://bucket?endpoint=https://u:p@host", "endpoint must not carry credentials"),
        ("r2://bucket", "r2:// needs account_id"),
        ("r2://bucket?account_id=abc", "32 hexadecimal digits"),
        ("r2://bucket?account_id=" + "g" * 32, "32 hexadecimal digits"),
        ("r2://bucket?account_id=" + "a" * 32 + "&endpoint=http://x", "unknown r2:// parameter"),
        ("r2://bucket?account_id=" + "a" * 32 + "&region=auto", "unknown r2:// parameter"),
    ],
)
def test_bad_urls_name_the_problem_and_the_accepted_forms(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid storage URL: ") as caught:
        parse_storage_url(url, data_dir=DATA_DIR)
    message = str(caught.value)
    assert problem in message
    assert message.endswith(ACCEPTED_FORMS)


@pytest.mark.parametrize(
    "url",
    ["s3://AKIAEXAMPLE:hunter2secret@bucket", "r2://AKIAEXAMPLE:hunter2secret@bucket"],
)
def test_credentials_in_urls_are_refused_without_being_repeated(url: str) -> None:
    with pytest.raises(ValueError, match="credentials are refused") as caught:
        parse_storage_url(url, data_dir=DATA_DIR)
    assert "hunter2secret" not in str(caught.value)
    assert "AKIAEXAMPLE" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_settings_keep_secrets_out_of_their_repr() -> None:
    settings = S3Settings(
        bucket="media",
        access_key_id="AKIAEXAMPLE",
        secret_access_key="hunter2",
        session_token="t0k",
    )
    assert "hunter2" not in repr(settings)
    assert "t0k" not in repr(settings)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"access_key_id": "a"}, "both access_key_id and secret_access_key"),
        ({"secret_access_key": "s"}, "both access_key_id and secret_access_key"),
        ({"session_token": "t"}, "session_token needs"),
        ({"connect_timeout": 0}, "connect_timeout must be positive"),
        ({"max_retries": -1}, "max_retries must be zero or more"),
    ],
)
def test_s3_settings_refuse_inconsistent_values(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        S3Settings(bucket="media", **fields)  # type: ignore[arg-type]
