"""AUTOMATIC1111 Stable Diffusion WebUI (and its API-compatible forks, Forge and reForge).

`POST /sdapi/v1/txt2img` is synchronous: it holds the connection until the image is done and
sends nothing before, so progress comes from a second connection polling
`GET /sdapi/v1/progress` for as long as the generation runs. The server runs one job at a time
behind a global lock and reports the running job only, so while our request waits behind another
client's, the progress seen is theirs; progress is forwarded only when it grows, which keeps the
bar from jumping back when our own job takes over.

Errors are mapped to the taxonomy at this boundary:

    400 "Sampler not found" ................. invalid_request
    401 (WWW-Authenticate: Basic) ........... auth (--api-auth credentials)
    404 ..................................... invalid_request (the server was started without --api)
    422 {"detail": [...]} ................... invalid_request (the body or an always-on script)
    500 CUDA out of memory .................. transient (retry, or ask for a smaller image)
    500 anything else ....................... transient
    502 / 503 / 504, connection refused ..... provider_down (model loading, restart)
    200 without a decodable image ........... bad_response

The images come back as base64 PNG (or the server's `samples_format`) and are passed on as
received: the pipeline owns any conversion.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from caverna.imaging import CONTENT_TYPES, ImageRejected, sniff_format
from caverna.providers.base import (
    ErrorKind,
    GenerationRequest,
    MonotonicProgress,
    ProgressCallback,
    ProviderError,
    ProviderImage,
    provider_error,
    require_dialect,
)
from caverna.providers.http import kind_for_status, parse_retry_after, transport_errors
from caverna.providers.intake import admit_image, call_deadline

NAME = "sdwebui"
TXT2IMG = "/sdapi/v1/txt2img"
PROGRESS = "/sdapi/v1/progress"
HEALTH_TIMEOUT = 5.0
# Progress stays below 1 until the image is decoded: 1.0 means "image in hand".
MAX_POLLED_PROGRESS = 0.99
# 50 MiB of image (the pipeline's intake ceiling) is about 67 MiB as base64, plus the JSON.
MAX_RESPONSE_BYTES = 96 * 2**20
_OOM_MARKERS = ("outofmemory", "out of memory")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SDWebUIConfig:
    """Where the WebUI is (CAVERNA_SDWEBUI_URL) and the --api-auth credentials, if it uses them.

    `timeout` bounds one whole txt2img call, including time spent queued behind other clients.
    """

    base_url: str
    username: str | None = None
    password: str | None = None
    progress_interval: float = 1.0
    timeout: float = 600.0

    def __post_init__(self) -> None:
        url = URL(self.base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"the WebUI URL must be http(s)://host[:port], not {url}")
        if self.password is not None and self.username is None:
            raise ValueError("a WebUI password needs its username (--api-auth user:pass)")
        if self.progress_interval <= 0 or self.timeout <= 0:
            raise ValueError("progress_interval and timeout must be positive")


@dataclass(frozen=True, slots=True)
class _Result:
    data: bytes
    content_type: str
    seed: int | None
    model: str


class SDWebUIProvider:
    """Stable Diffusion on the operator's own GPU through the WebUI API; no per-image cost."""

    name: str = NAME

    def __init__(self, config: SDWebUIConfig, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._session = session
        self._root = config.base_url.rstrip("/")
        self._headers = (
            # `--api-auth user:` is a valid, empty password
            {"Authorization": aiohttp.encode_basic_auth(config.username, config.password or "")}
            if config.username is not None
            else {}
        )
        shared = session.timeout
        # txt2img is silent until the image is done: the session's read timeout would cut a long
        # generation short, so this call relies on its own deadline instead.
        self._txt2img_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=shared.connect,
            sock_connect=shared.sock_connect,
            sock_read=None,
            ceil_threshold=shared.ceil_threshold,
        )

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        compiled = request.compiled
        require_dialect(compiled, NAME, "SD WebUI")
        started = time.perf_counter()
        report = MonotonicProgress(progress)
        poller = asyncio.create_task(self._poll_progress(report), name=f"{NAME}-progress")
        try:
            async with call_deadline(self._config.timeout):
                raw = await self._txt2img(compiled.payload, request)
        except TimeoutError as exc:
            raise provider_error(
                ErrorKind.TIMEOUT,
                f"{NAME}: no image within {self._config.timeout:g} s "
                "(the WebUI may still be working on it; POST /sdapi/v1/interrupt stops it)",
            ) from exc
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        result = await asyncio.to_thread(decode_response, raw, compiled.payload)
        await report(1.0)
        return ProviderImage(
            data=result.data,
            content_type=result.content_type,
            model=result.model,
            seed=result.seed,
            cost_usd=0.0,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def health(self) -> bool:
        """Whether the API is mounted and accepts our credentials; cheap even mid-generation."""
        try:
            async with (
                asyncio.timeout(HEALTH_TIMEOUT),
                self._session.get(
                    self._root + PROGRESS,
                    params={"skip_current_image": "true"},
                    headers=self._headers,
                    allow_redirects=False,
                ) as response,
            ):
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _txt2img(self, payload: Mapping[str, Any], request: GenerationRequest) -> bytes:
        async with (
            transport_errors(NAME),
            self._session.post(
                self._root + TXT2IMG,
                json=payload,
                headers=self._headers,
                timeout=self._txt2img_timeout,
                allow_redirects=False,
            ) as response,
        ):
            status, headers = response.status, response.headers
            if status == 200:  # the answer carries the image: it needs room first
                await admit_image(request)
            raw = await _read_capped(response, MAX_RESPONSE_BYTES)
        if status != 200:
            raise status_error(status, raw, retry_after=parse_retry_after(headers))
        return raw

    async def _poll_progress(self, report: MonotonicProgress) -> None:
        """Polls until cancelled; a failed poll only costs a progress update, never the job."""
        url = self._root + PROGRESS
        while True:
            await asyncio.sleep(self._config.progress_interval)
            try:
                async with self._session.get(
                    url,
                    params={"skip_current_image": "true"},
                    headers=self._headers,
                    allow_redirects=False,
                ) as response:
                    if response.status != 200:
                        continue
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.debug("%s: progress poll failed: %s", NAME, exc)
                continue
            fraction = polled_progress(body)
            if fraction is not None:
                await report(min(fraction, MAX_POLLED_PROGRESS))


# --- pure helpers --------------------------------------------------------------------------------


def polled_progress(body: object) -> float | None:
    """The running job's progress, or None when the server is idle or the answer is unusable."""
    if not isinstance(body, Mapping):
        return None
    value = body.get("progress")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    state = body.get("state")
    if isinstance(state, Mapping) and state.get("job_count") == 0:
        return None  # idle: the 0 says nothing about our job
    return min(max(float(value), 0.0), 1.0)


def status_error(status: int, raw: bytes, *, retry_after: float | None = None) -> ProviderError:
    """A non-200 txt2img answer, classified by status and, where it says more, by body."""
    detail = error_detail(raw)
    said = f": {detail}" if detail else ""
    if status == 401:
        return provider_error(
            ErrorKind.AUTH, f"{NAME}: the WebUI refused the credentials (--api-auth){said}"
        )
    if status == 404 and "sampler" not in detail.lower():
        return provider_error(
            ErrorKind.INVALID_REQUEST,
            f"{NAME}: the WebUI has no API at {TXT2IMG}; start it with --api (or --nowebui)",
        )
    if status >= 500 and any(marker in detail.lower() for marker in _OOM_MARKERS):
        return provider_error(
            ErrorKind.TRANSIENT,
            f"{NAME}: the GPU ran out of memory; retry later or ask for a smaller image{said}",
            retry_after=retry_after,
        )
    return provider_error(
        kind_for_status(status),
        f"{NAME}: txt2img answered HTTP {status}{said}",
        retry_after=retry_after,
    )


def error_detail(raw: bytes) -> str:
    """The readable part of an error body: the WebUI's {error, detail, errors} or FastAPI's 422."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:300].decode("utf-8", "replace").strip()
    if not isinstance(body, Mapping):
        return str(body)[:300]
    parts: list[str] = []
    for key in ("error", "detail", "errors"):
        value = body.get(key)
        if isinstance(value, list):
            parts.extend(_validation_item(item) for item in value)
        elif value:
            parts.append(str(value))
    return "; ".join(dict.fromkeys(parts))[:600]


def _validation_item(item: object) -> str:
    if not isinstance(item, Mapping):
        return str(item)
    location = item.get("loc")
    where = ".".join(str(part) for part in location) if isinstance(location, list) else ""
    message = str(item.get("msg") or item.get("type") or "invalid")
    return f"{where}: {message}" if where else message


def decode_response(raw: bytes, payload: Mapping[str, Any]) -> _Result:
    """The first real image of a txt2img answer, with the seed and model the WebUI used.

    Runs in a worker thread: the JSON and base64 of a large image take milliseconds each.
    """
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: txt2img answered malformed JSON ({exc})"
        ) from exc
    if not isinstance(body, Mapping):
        raise provider_error(ErrorKind.BAD_RESPONSE, f"{NAME}: txt2img answered no JSON object")
    info = _info(body.get("info"))
    images = body.get("images")
    first = info.get("index_of_first_image", 0)
    # a grid (when the server returns one) comes first, extension outputs (detect maps) last
    index = first if isinstance(first, int) and not isinstance(first, bool) and first >= 0 else 0
    if not isinstance(images, list) or len(images) <= index or not isinstance(images[index], str):
        raise provider_error(ErrorKind.BAD_RESPONSE, f"{NAME}: txt2img answered no image")
    data = _unbase64(images[index])
    try:
        content_type = CONTENT_TYPES[sniff_format(data)]
    except ImageRejected as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: the returned image is not an image ({exc.message})"
        ) from exc
    return _Result(data, content_type, _seed(info, payload), _model(info, payload))


def _info(value: object) -> Mapping[str, Any]:
    """`info` is a JSON string by contract; a dict is taken as is, anything else as empty.

    The image is usable without it, so a damaged `info` costs the seed and model name only.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            log.warning("%s: txt2img returned an unreadable info string", NAME)
            return {}
    return value if isinstance(value, Mapping) else {}


def _unbase64(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: the image is not valid base64 ({exc})"
        ) from exc


def _seed(info: Mapping[str, Any], payload: Mapping[str, Any]) -> int | None:
    for value in (info.get("seed"), payload.get("seed")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value  # the request's seed stands in only when it was fixed (not -1)
    return None


def _model(info: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    for key in ("sd_model_name", "sd_model_hash"):
        value = info.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    overrides = payload.get("override_settings")
    if isinstance(overrides, Mapping):
        checkpoint = overrides.get("sd_model_checkpoint")
        if isinstance(checkpoint, str) and checkpoint.strip():
            return checkpoint.strip()
    return NAME


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        raise provider_error(ErrorKind.BAD_RESPONSE, f"{NAME}: the answer is {declared} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(2**16):
        size += len(chunk)
        if size > limit:
            raise provider_error(
                ErrorKind.BAD_RESPONSE, f"{NAME}: the answer exceeds {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)
