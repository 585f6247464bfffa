"""Midjourney through a self-hosted proxy: novicezk/midjourney-proxy or trueai-org/midjourney-proxy.

Midjourney has no public API. The proxies drive a subscription through Discord and expose the same
submit-then-poll JSON routes under `/mj`, so one adapter serves both:

    POST /mj/submit/imagine {prompt, state}         -> task id (code 1, or 22 when queued)
    GET  /mj/task/{id}/fetch                        -> polled until SUCCESS or FAILURE
    POST /mj/submit/change {taskId, UPSCALE, index} -> one quadrant of the grid, polled the same way
    GET  <imageUrl>                                 -> the image, from the proxy's own origin only

An IMAGINE result is a 2x2 grid of candidates. With `upscale` set, Midjourney's own upscaler
renders the chosen quadrant (a second task, more subscription time, a better image); with
`upscale=None` the quadrant is cropped out of the grid here, which is faster but half the size.

Errors are mapped to the taxonomy at this boundary. Submits answer HTTP 200 almost always and put
the verdict in `code`:

    code 1 / 22 (accepted / queued) ........ poll        code 21 (task exists) ... poll that task
    code 23 (account queue full) ........... rate_limited
    code 24 (banned word) .................. content_blocked, naming the word
    code 3 (no usable Discord account) ..... provider_down
    code 4 (validation) .................... invalid_request
    code 9 (internal failure) .............. transient
    HTTP 401/403 (secret) .................. auth
    HTTP 404 {code: 3} (trueai) ............ invalid_request
    FAILURE, by failReason: banned / moderation -> content_blocked, timeout / 任务超时 -> timeout,
    "[Invalid parameter]" -> invalid_request, anything else -> transient

Images are downloaded from the proxy's own origin (scheme, host and port of `base_url`) and
nowhere else, redirects included. `imageUrl` comes from a task record this service does not
control and normally points at Discord's CDN: following it would let whoever writes that record
make this service fetch any URL, and would add a third-party host to the deployment's traffic.
Serve the images through the proxy instead: put the proxy and a reverse proxy of
cdn.discordapp.com behind one origin and point the proxy's CDN setting at it (novicezk:
`mj.ng-discord.cdn`; trueai: its image proxy / storage setting). An `imageUrl` on any other origin
is refused as bad_response.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from PIL import Image
from yarl import URL

from caverna.imaging import CONTENT_TYPES, DeliveryFormat, ImageRejected, encode_image, sniff_format
from caverna.imaging.formats import header_size
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

NAME = "midjourney"
SECRET_HEADER = "mj-api-secret"
# trueai caps `state` at 255 characters; novicezk accepts any length.
MAX_STATE_CHARS = 255
# Consecutive polls that may come back unusable (unknown task, dropped connection) before the
# task is given up: a proxy restart or a replicated task store can hide a task for a moment.
POLL_STRIKES = 3
# Same ceilings as the pipeline's intake: anything larger would be refused there anyway.
MAX_IMAGE_BYTES = 50 * 2**20
MAX_GRID_PIXELS = 40_000_000
HEALTH_TIMEOUT = 5.0
HEALTH_PATHS = ("/mj/task/queue", "/mj/task/list")  # trueai has no /queue route
QUADRANTS = range(1, 5)
# Progress shares: the grid is most of the work; the last step is reserved for "image in hand".
IMAGINE_SHARE_WITH_UPSCALE = 0.7
DOWNLOADED = 1.0
BEFORE_DOWNLOAD = 0.95

_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_VERSION_FLAG = re.compile(r"--(niji|v|version)\s+(\d[\w.]*)")
_BANNED_MARKERS = ("banned", "moderation")
_TIMEOUT_MARKERS = ("timeout", "timed out", "任务超时")
_INVALID_MARKER = "[invalid parameter]"


@dataclass(frozen=True)
class MidjourneyConfig:
    """Where the proxy is and how to use it (CAVERNA_MIDJOURNEY_URL, CAVERNA_MIDJOURNEY_SECRET).

    `base_url` is the proxy's root (e.g. http://proxy:8080); the `/mj` prefix belongs to the
    routes. `upscale` picks the quadrant Midjourney upscales after the grid (1..4, in U1..U4
    order); None skips the upscale and crops `grid_quadrant` out of the grid instead. `timeout`
    bounds the whole generation, queueing and upscale included.
    """

    base_url: str
    secret: str | None = None
    upscale: int | None = 1
    poll_interval: float = 2.0
    timeout: float = 600.0
    grid_quadrant: int = 1

    def __post_init__(self) -> None:
        url = URL(self.base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"the Midjourney proxy URL must be http(s)://host[:port], not {url}")
        if self.upscale is not None and self.upscale not in QUADRANTS:
            raise ValueError(f"upscale must be a quadrant 1..4 or None, not {self.upscale}")
        if self.grid_quadrant not in QUADRANTS:
            raise ValueError(f"grid_quadrant must be 1..4, not {self.grid_quadrant}")
        if self.poll_interval <= 0 or self.timeout <= 0:
            raise ValueError("poll_interval and timeout must be positive")


@dataclass(frozen=True, slots=True)
class _Span:
    """The part of the overall 0..1 progress one proxy task covers."""

    start: float
    end: float

    def at(self, fraction: float) -> float:
        return self.start + (self.end - self.start) * min(max(fraction, 0.0), 1.0)


class MidjourneyProvider:
    """Midjourney images through a proxy; cost is the subscription, so each image reports 0."""

    name: str = NAME

    def __init__(self, config: MidjourneyConfig, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._session = session
        self._root = config.base_url.rstrip("/")
        self._origin = _origin(URL(config.base_url))
        self._headers = {SECRET_HEADER: config.secret} if config.secret else {}

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        compiled = request.compiled
        require_dialect(compiled, NAME, "Midjourney")
        prompt = compiled.payload.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise provider_error(ErrorKind.INVALID_REQUEST, "the compiled payload has no prompt")
        started = time.perf_counter()
        tasks: list[str] = []
        try:
            async with call_deadline(self._config.timeout):
                data, content_type, seed = await self._run(
                    prompt, request, MonotonicProgress(progress), tasks
                )
        except TimeoutError as exc:
            where = f" (proxy task {tasks[-1]})" if tasks else ""
            raise provider_error(
                ErrorKind.TIMEOUT,
                f"{NAME}: no finished image within {self._config.timeout:g} s{where}",
            ) from exc
        return ProviderImage(
            data=data,
            content_type=content_type,
            model=model_name(prompt),
            seed=seed,
            cost_usd=0.0,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def health(self) -> bool:
        """Whether the proxy answers an authenticated read; no Discord traffic is caused."""
        for path in HEALTH_PATHS:
            try:
                async with (
                    asyncio.timeout(HEALTH_TIMEOUT),
                    self._session.get(
                        self._root + path, headers=self._headers, allow_redirects=False
                    ) as response,
                ):
                    if response.status == 200:
                        return True
                    if response.status != 404:
                        return False
            except (aiohttp.ClientError, TimeoutError):
                return False
        return False

    # --- one generation ------------------------------------------------------------------------

    async def _run(
        self, prompt: str, request: GenerationRequest, report: MonotonicProgress, tasks: list[str]
    ) -> tuple[bytes, str, int | None]:
        upscale = self._config.upscale
        grid_span = _Span(0.0, IMAGINE_SHARE_WITH_UPSCALE if upscale else BEFORE_DOWNLOAD)
        body = {"prompt": prompt, "state": request.job_id[:MAX_STATE_CHARS]}
        grid_id = await self._submit("/mj/submit/imagine", body)
        tasks.append(grid_id)
        await report(0.0)
        grid = await self._await_task(grid_id, grid_span, report)
        if upscale is None:
            raw = await self._download(grid, request)
            data, content_type = await asyncio.to_thread(
                crop_quadrant, raw, self._config.grid_quadrant, request.delivery
            )
            seed = task_seed(grid)
        else:
            change = {
                "taskId": grid_id,
                "action": "UPSCALE",
                "index": upscale,
                "state": request.job_id[:MAX_STATE_CHARS],
            }
            upscale_id = await self._submit("/mj/submit/change", change)
            tasks.append(upscale_id)
            upscaled = await self._await_task(
                upscale_id, _Span(IMAGINE_SHARE_WITH_UPSCALE, BEFORE_DOWNLOAD), report
            )
            data = await self._download(upscaled, request)
            content_type = _content_type(data)
            seed = task_seed(upscaled)
            if seed is None:
                seed = task_seed(grid)
        await report(DOWNLOADED)
        return data, content_type, seed

    async def _submit(self, path: str, body: Mapping[str, Any]) -> str:
        """The id of the task a submit created (or found), or the submit's error, classified."""
        async with (
            transport_errors(NAME),
            self._session.post(
                self._root + path, json=body, headers=self._headers, allow_redirects=False
            ) as response,
        ):
            raw = await response.read()
            status, headers = response.status, response.headers
        reply = _json_object(raw)
        if status != 200:
            kind = kind_for_status(status)
            detail = _describe(reply) or raw[:200].decode("utf-8", "replace").strip()
            raise provider_error(
                kind,
                f"{NAME}: {path} answered HTTP {status}" + (f": {detail}" if detail else ""),
                retry_after=parse_retry_after(headers),
            )
        if reply is None or not isinstance(reply.get("code"), int):
            raise provider_error(ErrorKind.BAD_RESPONSE, f"{NAME}: {path} answered no result code")
        return _accepted(path, reply)

    async def _await_task(
        self, task_id: str, span: _Span, report: MonotonicProgress
    ) -> dict[str, Any]:
        strikes = 0
        while True:
            await asyncio.sleep(self._config.poll_interval)
            try:
                task = await self._fetch(task_id)
            except ProviderError as exc:
                if not exc.retryable:
                    raise
                strikes += 1
                if strikes >= POLL_STRIKES:
                    raise
                continue
            if task is None:
                strikes += 1
                if strikes >= POLL_STRIKES:
                    raise provider_error(
                        ErrorKind.BAD_RESPONSE,
                        f"{NAME}: the proxy does not know task {task_id} "
                        f"({strikes} polls answered nothing)",
                    )
                continue
            strikes = 0
            status = str(task.get("status") or "")
            if status == "SUCCESS":
                await report(span.end)
                return task
            if status == "FAILURE":
                raise failure_error(task_id, task.get("failReason"))
            if status == "CANCEL":
                raise provider_error(
                    ErrorKind.TRANSIENT, f"{NAME}: task {task_id} was cancelled on the proxy"
                )
            if status == "MODAL":
                # Remix mode makes Midjourney wait for a dialog nobody will answer; only the
                # account's settings can fix that, so let the breaker send work elsewhere.
                raise provider_error(
                    ErrorKind.PROVIDER_DOWN,
                    f"{NAME}: task {task_id} waits for a remix dialog; "
                    "turn remix mode off for the proxy's accounts",
                )
            fraction = parse_progress(task.get("progress"))
            if fraction is not None:
                await report(span.at(fraction))

    async def _fetch(self, task_id: str) -> dict[str, Any] | None:
        """The task record, or None when the proxy answers nothing (it does not know the id)."""
        url = f"{self._root}/mj/task/{task_id}/fetch"
        async with (
            transport_errors(NAME),
            self._session.get(url, headers=self._headers, allow_redirects=False) as response,
        ):
            raw = await response.read()
            status, headers = response.status, response.headers
        if status == 204 or (status == 200 and raw.strip() in (b"", b"null")):
            # novicezk answers an unknown id with an empty 200, trueai with 204 (a null task)
            return None
        if status != 200:
            raise provider_error(
                kind_for_status(status),
                f"{NAME}: polling task {task_id} answered HTTP {status}",
                retry_after=parse_retry_after(headers),
            )
        task = _json_object(raw)
        if task is None:
            raise provider_error(
                ErrorKind.BAD_RESPONSE, f"{NAME}: task {task_id} came back as no JSON object"
            )
        return task

    async def _download(self, task: Mapping[str, Any], request: GenerationRequest) -> bytes:
        url = self.trusted_image_url(task.get("imageUrl"))
        async with (
            transport_errors(NAME),
            self._session.get(url, headers=self._headers, allow_redirects=False) as response,
        ):
            status = response.status
            if status != 200:
                kind = kind_for_status(status)
                if kind is ErrorKind.INVALID_REQUEST:
                    # a 4xx here is the proxy's own link that does not work, not our request
                    kind = ErrorKind.BAD_RESPONSE
                raise provider_error(kind, f"{NAME}: the image at {url} answered HTTP {status}")
            await admit_image(request)
            return await _read_capped(response, MAX_IMAGE_BYTES)

    def trusted_image_url(self, value: object) -> URL:
        """`value` resolved against the proxy, if it stays on the proxy's origin."""
        if not isinstance(value, str) or not value.strip():
            raise provider_error(ErrorKind.BAD_RESPONSE, f"{NAME}: the finished task has no image")
        try:
            url = URL(value.strip())
            if not url.is_absolute():
                url = URL(self._root + "/").join(url)
            origin = _origin(url)
        except (ValueError, TypeError) as exc:
            raise provider_error(
                ErrorKind.BAD_RESPONSE, f"{NAME}: unusable image URL {value!r}"
            ) from exc
        if origin != self._origin:
            raise provider_error(
                ErrorKind.BAD_RESPONSE,
                f"{NAME}: the image is at {url.scheme}://{url.host}, not on the proxy "
                f"({self._config.base_url}); serve images through the proxy's CDN setting",
            )
        return url


# --- pure helpers --------------------------------------------------------------------------------


def _accepted(path: str, reply: Mapping[str, Any]) -> str:
    code: int = reply["code"]
    description = str(reply.get("description") or "").strip()
    properties = reply.get("properties")
    props: Mapping[str, Any] = properties if isinstance(properties, Mapping) else {}
    said = f" ({description})" if description else ""
    if code in (1, 21, 22):
        result = reply.get("result")
        if isinstance(result, (str, int)) and not isinstance(result, bool) and str(result):
            return str(result)
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: {path} accepted (code {code}) but named no task"
        )
    if code == 23:
        raise provider_error(
            ErrorKind.RATE_LIMITED, f"{NAME}: the account's queue is full, try later{said}"
        )
    if code == 24:
        word = props.get("bannedWord")
        named = f" {str(word)!r}" if word else ""
        raise provider_error(
            ErrorKind.CONTENT_BLOCKED,
            f"{NAME}: the prompt contains the banned word{named}; rephrase it{said}",
        )
    if code == 3:
        raise provider_error(
            ErrorKind.PROVIDER_DOWN, f"{NAME}: no usable Discord account or task on the proxy{said}"
        )
    if code == 4:
        raise provider_error(ErrorKind.INVALID_REQUEST, f"{NAME}: the proxy refused {path}{said}")
    if code == 9:
        raise provider_error(ErrorKind.TRANSIENT, f"{NAME}: the proxy failed internally{said}")
    raise provider_error(
        ErrorKind.BAD_RESPONSE, f"{NAME}: {path} answered unknown code {code}{said}"
    )


def failure_error(task_id: str, reason: object) -> ProviderError:
    """A FAILURE task's reason, classified; the proxies only give free text."""
    text = str(reason or "").strip() or "no reason given"
    lowered = text.lower()
    message = f"{NAME}: task {task_id} failed: {text}"
    if any(marker in lowered for marker in _BANNED_MARKERS):
        return provider_error(ErrorKind.CONTENT_BLOCKED, message)
    if _INVALID_MARKER in lowered:
        return provider_error(ErrorKind.INVALID_REQUEST, message)
    if any(marker in lowered for marker in _TIMEOUT_MARKERS):
        return provider_error(ErrorKind.TIMEOUT, message)
    return provider_error(ErrorKind.TRANSIENT, message)


def parse_progress(value: object) -> float | None:
    """`"42%"` as 0.42; None for the empty or missing progress of a task not yet started."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return min(max(float(value) / 100, 0.0), 1.0)
    if not isinstance(value, str):
        return None
    match = _PERCENT.search(value)
    return min(float(match.group(1)) / 100, 1.0) if match else None


def task_seed(task: Mapping[str, Any]) -> int | None:
    """The seed trueai reports (top level or in properties); novicezk reports none."""
    properties = task.get("properties")
    candidates = [task.get("seed")]
    if isinstance(properties, Mapping):
        candidates.append(properties.get("seed"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
    return None


def model_name(prompt: str) -> str:
    """The model the prompt's own flags select (`--v 7` -> midjourney-v7, `--niji 6` -> niji-6)."""
    found = _VERSION_FLAG.findall(prompt)
    if not found:
        return NAME
    flag, version = found[-1]
    return f"niji-{version}" if flag == "niji" else f"{NAME}-v{version}"


def crop_quadrant(grid: bytes, quadrant: int, delivery: DeliveryFormat) -> tuple[bytes, str]:
    """One quadrant of the 2x2 grid (1 top-left .. 4 bottom-right, as U1..U4), in `delivery`.

    The crop must be encoded anyway, so it is encoded straight into the delivery format and the
    pipeline has nothing left to re-encode.
    """
    try:
        width, height = header_size(grid, sniff_format(grid))
        if width * height > MAX_GRID_PIXELS:
            raise provider_error(
                ErrorKind.BAD_RESPONSE, f"{NAME}: the grid is {width}x{height}, too large"
            )
        with Image.open(io.BytesIO(grid)) as image:
            half_w, half_h = image.width // 2, image.height // 2
            column, row = (quadrant - 1) % 2, (quadrant - 1) // 2
            tile = image.crop(
                (column * half_w, row * half_h, (column + 1) * half_w, (row + 1) * half_h)
            )
        return encode_image(tile, delivery), CONTENT_TYPES[delivery]
    except (ImageRejected, OSError, ValueError) as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: the grid is not a usable image ({exc})"
        ) from exc


def _content_type(data: bytes) -> str:
    try:
        return CONTENT_TYPES[sniff_format(data)]
    except ImageRejected as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: the proxy's image is not an image ({exc.message})"
        ) from exc


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme.lower(), (url.host or "").lower(), url.port


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _describe(reply: Mapping[str, Any] | None) -> str:
    if not reply:
        return ""
    parts = [f"code {reply['code']}"] if "code" in reply else []
    if reply.get("description"):
        parts.append(str(reply["description"]))
    return ", ".join(parts)


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        raise provider_error(ErrorKind.BAD_RESPONSE, f"{NAME}: the image is {declared} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(2**16):
        size += len(chunk)
        if size > limit:
            raise provider_error(ErrorKind.BAD_RESPONSE, f"{NAME}: the image exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
