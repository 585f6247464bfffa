"""Stability AI v2beta Stable Image: one synchronous multipart POST per image.

The service rejects anything but multipart/form-data, even when no file is sent, so every
request is multipart. A 200 is not always a success: `finish-reason: CONTENT_FILTERED` comes with
a blurred image that must never reach a user. The answer may be raw bytes with the verdict in
headers, or JSON carrying base64; both are read, whichever the service chose to send.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from caverna.imaging import CONTENT_TYPES, ImageRejected, SniffedFormat, sniff_format
from caverna.providers.base import (
    ErrorKind,
    GenerationRequest,
    ProgressCallback,
    ProviderError,
    ProviderImage,
    provider_error,
    require_dialect,
)
from caverna.providers.http import kind_for_status, parse_retry_after, transport_errors
from caverna.providers.intake import admit_image, call_deadline
from caverna.providers.pricing import DEFAULT_PRICES, PriceTable

NAME = "stability"
GENERATE_PATH = "/v2beta/stable-image/generate"
_NATIVE_FORMATS: frozenset[str] = frozenset({"png", "jpeg", "webp"})
_ENDPOINT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Used for the price when the sd3 endpoint is left to pick its model: the endpoint's documented
# default (not confirmed in the copies of the reference that were read).
SD3_DEFAULT_MODEL = "sd3.5-large"
_MAX_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class StabilityConfig:
    """Connection settings; `client_id` goes out as `stability-client-id` to attribute usage."""

    api_key: str
    base_url: str = "https://api.stability.ai"
    client_id: str | None = "caverna"
    timeout: float = 300.0


class StabilityProvider:
    """Ultra, Core and the SD3.5 family, all through the generate endpoints."""

    name: str = NAME

    def __init__(
        self,
        config: StabilityConfig,
        session: aiohttp.ClientSession,
        prices: PriceTable = DEFAULT_PRICES,
    ) -> None:
        self._config = config
        self._session = session
        self._prices = prices
        self._base_url = config.base_url.rstrip("/")

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        compiled = request.compiled
        require_dialect(compiled, NAME, "Stability")
        endpoint = compiled.payload.get("endpoint")
        form = compiled.payload.get("form")
        if not isinstance(endpoint, str) or not _ENDPOINT.match(endpoint):
            raise provider_error(
                ErrorKind.INVALID_REQUEST, f"{NAME}: no usable endpoint in the payload"
            )
        if not isinstance(form, Mapping) or not form.get("prompt"):
            raise provider_error(ErrorKind.INVALID_REQUEST, f"{NAME}: the payload has no prompt")
        fields = {str(key): _form_value(value) for key, value in form.items() if value is not None}
        fields["output_format"] = request.delivery if request.delivery in _NATIVE_FORMATS else "png"
        model = fields.get("model") if endpoint == "sd3" else None
        url = f"{self._base_url}{GENERATE_PATH}/{endpoint}"

        await progress(0.05)
        started = time.perf_counter()
        try:
            data, headers, content_type = await self._post(url, fields, request)
        except ProviderError as exc:
            # An older copy of the sd3 schema lists only jpeg and png. If the service says so,
            # ask for PNG once and let the pipeline encode the delivery format itself.
            if not (
                exc.code == ErrorKind.INVALID_REQUEST
                and fields["output_format"] != "png"
                and "output_format" in exc.message
            ):
                raise
            fields["output_format"] = "png"
            data, headers, content_type = await self._post(url, fields, request)
        latency_ms = (time.perf_counter() - started) * 1000

        image, finish_reason, seed = _read_answer(data, headers, content_type)
        if finish_reason == "CONTENT_FILTERED":
            # the blurred image is dropped here, so it can never be stored or delivered
            raise provider_error(
                ErrorKind.CONTENT_BLOCKED,
                f"{NAME}: the image was filtered by content moderation (CONTENT_FILTERED)"
                + _request_suffix(headers),
            )
        if finish_reason not in (None, "SUCCESS"):
            raise provider_error(
                ErrorKind.BAD_RESPONSE, f"{NAME}: unexpected finish reason {finish_reason!r}"
            )
        image_format = _sniff(image, content_type)
        if seed is None:
            seed = _requested_seed(fields.get("seed"))
        await progress(1.0)
        return ProviderImage(
            data=image,
            content_type=CONTENT_TYPES[image_format],
            model=model or endpoint,
            seed=seed,
            # only successful generations are charged
            cost_usd=self._prices.price(
                NAME, model or (SD3_DEFAULT_MODEL if endpoint == "sd3" else endpoint)
            ),
            latency_ms=latency_ms,
        )

    async def health(self) -> bool | None:
        """The API documents no free probe: health is known only from real calls (passive)."""
        return None

    async def _post(
        self, url: str, fields: Mapping[str, str], request: GenerationRequest
    ) -> tuple[bytes, Mapping[str, str], str]:
        # always multipart: the service answers 400 to urlencoded or JSON bodies
        form = aiohttp.FormData(default_to_multipart=True)
        for key, value in fields.items():
            form.add_field(key, value)
        # our deadline rather than aiohttp's total: an intake wait before the body is left out
        async with (
            transport_errors(NAME),
            call_deadline(self._config.timeout),
            self._session.post(
                url, data=form, headers=self._headers(), timeout=self._timeout()
            ) as response,
        ):
            if response.status >= 300:
                raise _classify(response.status, response.headers, await response.read())
            await admit_image(request)
            raw = await response.read()
            return raw, response.headers, response.content_type

    def _headers(self) -> dict[str, str]:
        headers = {"authorization": f"Bearer {self._config.api_key}", "accept": "image/*"}
        if self._config.client_id:
            headers["stability-client-id"] = self._config.client_id[:256]
        return headers

    def _timeout(self) -> aiohttp.ClientTimeout:
        # a per-request timeout replaces the session's wholesale: keep its connect limits
        base = self._session.timeout
        return aiohttp.ClientTimeout(
            total=None,
            connect=base.connect,
            sock_connect=base.sock_connect,
            sock_read=base.sock_read,
        )


def _form_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_answer(
    raw: bytes, headers: Mapping[str, str], content_type: str
) -> tuple[bytes, str | None, int | None]:
    """(image bytes, finish reason, seed) from either answer shape the API may send."""
    if content_type == "application/json" or content_type.endswith("+json"):
        return _read_json_answer(raw)
    finish = headers.get("finish-reason")
    return raw, finish.strip().upper() if finish else None, _seed(headers.get("seed"))


def _read_json_answer(raw: bytes) -> tuple[bytes, str | None, int | None]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: the answer is not valid JSON: {_snippet(raw)}"
        ) from exc
    encoded = body.get("image") if isinstance(body, dict) else None
    if not isinstance(encoded, str) or not encoded:
        raise provider_error(ErrorKind.BAD_RESPONSE, f"{NAME}: the JSON answer holds no image")
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: the image is not valid base64 ({exc})"
        ) from exc
    finish = body.get("finish_reason")
    return (
        image,
        finish.strip().upper() if isinstance(finish, str) else None,
        _seed(body.get("seed")),
    )


def _seed(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _requested_seed(value: str | None) -> int | None:
    """Without an echo the seed sent is the truth, except 0, which the API treats as random."""
    seed = _seed(value)
    return seed if seed else None


def _sniff(data: bytes, content_type: str) -> SniffedFormat:
    try:
        return sniff_format(data)
    except ImageRejected as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE,
            f"{NAME}: the answer ({content_type or 'no content type'}) is not an image: "
            f"{exc.message}",
        ) from exc


def _classify(status: int, headers: Mapping[str, str], raw: bytes) -> ProviderError:
    """By status, except that moderation has its own name and must never be read as auth."""
    body = _error_body(raw)
    name = body.get("name") if body else None
    kind = kind_for_status(status)
    if name == "content_moderation" and 400 <= status < 500:
        kind = ErrorKind.CONTENT_BLOCKED
    retry_after = parse_retry_after(headers) if kind != ErrorKind.QUOTA_EXHAUSTED else None
    return provider_error(kind, _describe(status, headers, raw, body), retry_after=retry_after)


def _error_body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _describe(
    status: int, headers: Mapping[str, str], raw: bytes, body: Mapping[str, Any] | None
) -> str:
    label = f"{NAME}: HTTP {status}"
    name = body.get("name") if body else None
    if isinstance(name, str) and name:
        label += f" {name}"
    errors = body.get("errors") if body else None
    if isinstance(errors, list) and errors:
        detail = "; ".join(str(item) for item in errors)
    elif body and isinstance(body.get("message"), str):
        detail = str(body["message"])
    else:
        detail = _snippet(raw)
    request_id = body.get("id") if body and isinstance(body.get("id"), str) else None
    suffix = f" [request {request_id}]" if request_id else _request_suffix(headers)
    return f"{label}: {detail}{suffix}"


def _request_suffix(headers: Mapping[str, str]) -> str:
    request_id = headers.get("x-request-id")
    return f" [request {request_id}]" if request_id else ""


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return "(empty body)"
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "..."
