"""OpenAI Images: one synchronous HTTP call per image, base64 in a JSON answer.

The API has no job to poll, so progress can only say "sent" and "received". Errors are classified
from the status *and* the body's `error.code`, because one status means different things: a 429
is either "slow down" (retry later) or "out of credit" (retrying only burns attempts), and a 400
is either a bad field or a moderation refusal (re-prompt, never fail over).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
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

NAME = "openai"
HEALTH_TIMEOUT = 10.0
# what GPT image models encode themselves; anything else is asked as PNG and converted later
_NATIVE_FORMATS: frozenset[str] = frozenset({"png", "jpeg", "webp"})
_MODERATION_CODES: frozenset[str] = frozenset({"content_policy_violation", "moderation_blocked"})
_MODERATION_TYPE = "image_generation_user_error"
_QUOTA_CODES: frozenset[str] = frozenset({"insufficient_quota"})
_MAX_MESSAGE_CHARS = 500
# unescaped quotes exist only around keys and values, so this can only match a `b64_json` key
_IMAGE_FIELD = re.compile(rb'"b64_json"\s*:\s*"')


@dataclass(frozen=True)
class OpenAIConfig:
    """Connection settings; field names follow the official SDK's OPENAI_API_KEY/OPENAI_BASE_URL.

    `probe_model` is only what `health()` asks about: each request names its own model.
    """

    api_key: str
    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None
    project: str | None = None
    timeout: float = 300.0
    probe_model: str = "gpt-image-2"


def supports_input_fidelity(model: str) -> bool:
    """`input_fidelity` is documented for gpt-image-1 and 1.5+, explicitly not for the mini."""
    return model.startswith(("gpt-image-", "chatgpt-image")) and not model.startswith(
        "gpt-image-1-mini"
    )


def end_user_id(job_id: str) -> str:
    """OpenAI wants a stable id per end user for abuse reports, never the identifier itself."""
    return hashlib.sha256(f"caverna-job:{job_id}".encode()).hexdigest()


class OpenAIProvider:
    """Text-to-image through /images/generations; with reference images, /images/edits."""

    name: str = NAME

    def __init__(
        self,
        config: OpenAIConfig,
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
        require_dialect(compiled, NAME, "OpenAI")
        fields = dict(compiled.payload)
        references = fields.pop("reference_images", None)
        model = str(fields.get("model") or "")
        if not model:
            # the API's historical default was dall-e-2; never let it choose silently
            raise provider_error(ErrorKind.INVALID_REQUEST, f"{NAME}: the payload names no model")
        # DALL-E, the only family without `output_format`, is retired: every model takes it
        fields["output_format"] = request.delivery if request.delivery in _NATIVE_FORMATS else "png"
        fields["n"] = 1
        fields["user"] = end_user_id(request.job_id)

        body: aiohttp.BytesPayload | aiohttp.FormData
        if references is None:
            url, body = f"{self._base_url}/images/generations", _json_body(fields)
        else:
            if supports_input_fidelity(model):
                fields["input_fidelity"] = "high"
            url, body = f"{self._base_url}/images/edits", _edit_form(fields, references)

        await progress(0.05)
        started = time.perf_counter()
        # the deadline is ours rather than aiohttp's total, so a wait for an intake slot between
        # the headers and the body can be left out of it
        async with (
            transport_errors(NAME),
            call_deadline(self._config.timeout),
            self._session.post(
                url, data=body, headers=self._headers(), timeout=self._timeout(None)
            ) as response,
        ):
            if response.status >= 300:
                raise _classify(response.status, response.headers, await response.read())
            await admit_image(request)
            raw = await response.read()
        latency_ms = (time.perf_counter() - started) * 1000
        data = _decode_image(raw)
        image_format = _sniff(data)
        await progress(1.0)
        return ProviderImage(
            data=data,
            # the format asked for, unless the bytes prove the service sent another one
            content_type=CONTENT_TYPES[image_format],
            model=model,
            seed=None,  # OpenAI takes no seed: the image cannot be reproduced
            cost_usd=self._prices.price(
                NAME,
                model,
                quality=_optional_str(fields.get("quality")),
                size=_optional_str(fields.get("size")),
            ),
            latency_ms=latency_ms,
        )

    async def health(self) -> bool | None:
        """Reading one model's card is free, needs the key, and fails when the service does."""
        url = f"{self._base_url}/models/{self._config.probe_model}"
        try:
            async with self._session.get(
                url,
                headers=self._headers(),
                timeout=self._timeout(min(HEALTH_TIMEOUT, self._config.timeout)),
            ) as response:
                raw = await response.read()
                if response.status == 200:
                    return True
                if response.status == 429:
                    # throttled means reachable and authorised, unless the credit is gone
                    return _classify(response.status, response.headers, raw).code != (
                        ErrorKind.QUOTA_EXHAUSTED
                    )
                return False
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._config.api_key}",
            "Accept": "application/json",
        }
        if self._config.organization:
            headers["OpenAI-Organization"] = self._config.organization
        if self._config.project:
            headers["OpenAI-Project"] = self._config.project
        return headers

    def _timeout(self, total: float | None) -> aiohttp.ClientTimeout:
        # a per-request timeout replaces the session's wholesale: keep its connect limits
        base = self._session.timeout
        return aiohttp.ClientTimeout(
            total=total,
            connect=base.connect,
            sock_connect=base.sock_connect,
            sock_read=base.sock_read,
        )


def _json_body(fields: Mapping[str, Any]) -> aiohttp.BytesPayload:
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return aiohttp.BytesPayload(text.encode(), content_type="application/json")


def _edit_form(fields: Mapping[str, Any], references: object) -> aiohttp.FormData:
    """Multipart as the official SDK builds it: arrays of files become repeated `image[]`."""
    images = _reference_images(references)
    form = aiohttp.FormData(default_to_multipart=True)
    for key, value in fields.items():
        if value is None:
            continue
        form.add_field(key, _form_value(value))
    for filename, data in images:
        try:
            content_type = CONTENT_TYPES[sniff_format(data)]
        except ImageRejected as exc:
            raise provider_error(
                ErrorKind.INVALID_REQUEST, f"{NAME}: reference image {filename!r}: {exc.message}"
            ) from exc
        form.add_field("image[]", data, filename=filename, content_type=content_type)
    return form


def _reference_images(references: object) -> list[tuple[str, bytes]]:
    if not isinstance(references, Sequence) or isinstance(references, str | bytes):
        raise provider_error(ErrorKind.INVALID_REQUEST, f"{NAME}: reference_images must be a list")
    images: list[tuple[str, bytes]] = []
    for item in references:
        if (
            isinstance(item, Sequence)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], bytes | bytearray)
            and item[1]
        ):
            images.append((item[0] or f"reference-{len(images) + 1}", bytes(item[1])))
            continue
        raise provider_error(
            ErrorKind.INVALID_REQUEST,
            f"{NAME}: each reference image must be a (filename, bytes) pair",
        )
    if not images:
        raise provider_error(ErrorKind.INVALID_REQUEST, f"{NAME}: reference_images is empty")
    return images


def _form_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _decode_image(raw: bytes) -> bytes:
    """The first image of the answer, decoded straight from the bytes received.

    The base64 text is nearly all of the answer (megabytes): it is cut out and decoded where it
    lies, and only the rest goes through the JSON parser, which also proves the cut-out value
    was `data[0].b64_json`. Parsing it whole would copy the megabytes into a str first.
    """
    skeleton, image = _cut_out_image(raw)
    first = _first_result(skeleton, raw)
    if image is not None and (first is None or first.get("b64_json") != ""):
        first, image = _first_result(raw, raw), None  # the cut was elsewhere: parse it all
    if image is None:
        encoded = first.get("b64_json") if first is not None else None
        if not isinstance(encoded, str) or not encoded:
            has_url = first is not None and "url" in first
            hint = " (only a URL: a DALL-E style answer)" if has_url else ""
            raise provider_error(ErrorKind.BAD_RESPONSE, f"{NAME}: the answer holds no image{hint}")
    try:
        text = image if image is not None else str(encoded).encode("ascii")
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: the image is not valid base64 ({exc})"
        ) from exc


def _first_result(text: bytes, raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: the answer is not JSON: {_snippet(raw)}"
        ) from exc
    data = body.get("data") if isinstance(body, dict) else None
    first = data[0] if isinstance(data, list) and data else None
    return first if isinstance(first, dict) else None


def _cut_out_image(raw: bytes) -> tuple[bytes, memoryview | None]:
    """The answer with the first `b64_json` value emptied, and that value (None: not found).

    A value holding a backslash (an escaped character, which base64 never needs) is left to
    the JSON parser, as is any answer where the cut cannot be made.
    """
    found = _IMAGE_FIELD.search(raw)
    if found is None:
        return raw, None
    start = found.end()
    end = raw.find(b'"', start)
    if end <= start or raw.find(b"\\", start, end) != -1:
        return raw, None
    return raw[:start] + raw[end:], memoryview(raw)[start:end]


def _sniff(data: bytes) -> SniffedFormat:
    try:
        return sniff_format(data)
    except ImageRejected as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: the answer is not an image: {exc.message}"
        ) from exc


def _classify(status: int, headers: Mapping[str, str], raw: bytes) -> ProviderError:
    """Status first, refined by `error.type`/`error.code`, then the server's retry verdict."""
    error = _error_object(raw)
    err_type = _optional_str(error.get("type")) if error else None
    code = _optional_str(error.get("code")) if error else None
    kind = kind_for_status(status)
    if status == 400 and _is_moderation(error, err_type, code):
        kind = ErrorKind.CONTENT_BLOCKED
    elif status == 429 and (code in _QUOTA_CODES or err_type in _QUOTA_CODES):
        # the SDK would retry this; no amount of waiting brings credit back
        kind = ErrorKind.QUOTA_EXHAUSTED
    elif status == 409:
        kind = ErrorKind.TRANSIENT  # a conflicting request in flight; the SDK retries it
    message = _describe(status, headers, raw, error, err_type, code)
    retry_after = parse_retry_after(headers) if kind != ErrorKind.QUOTA_EXHAUSTED else None
    failure = provider_error(kind, message, retry_after=retry_after)
    if headers.get("x-should-retry", "").strip().lower() == "false":
        # the service knows better than the status: the SDK stops here too
        failure.retryable = False
    return failure


def _is_moderation(error: Mapping[str, Any] | None, err_type: str | None, code: str | None) -> bool:
    """A safety refusal: by its code, or by the GPT image type unless a code says otherwise."""
    if code in _MODERATION_CODES:
        return True
    if err_type != _MODERATION_TYPE:
        return False
    return code is None or "moderation" in code or bool(error and error.get("moderation_details"))


def _error_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _describe(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    error: Mapping[str, Any] | None,
    err_type: str | None,
    code: str | None,
) -> str:
    parts = [f"{NAME}: HTTP {status}"]
    label = "/".join(p for p in (err_type, code) if p)
    if label:
        parts.append(label)
    param = _optional_str(error.get("param")) if error else None
    if param:
        parts.append(f"(param {param})")
    text = _optional_str(error.get("message")) if error else None
    detail = text if text else _snippet(raw)
    request_id = headers.get("x-request-id")
    suffix = f" [request {request_id}]" if request_id else ""
    return f"{' '.join(parts)}: {detail}{suffix}"


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return "(empty body)"
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "..."
