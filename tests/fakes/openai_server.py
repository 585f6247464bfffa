"""A local stand-in for the OpenAI Images API, speaking its wire protocol over real HTTP.

It validates requests the way the service does (unknown parameters, sizes per model, the key),
answers with the same body shapes and headers, draws random-noise images in the format asked
for (at the `output_compression` asked for, 100 by default, as the service does), records every
request for assertions, and can be scripted to misbehave on the next calls. `/v1/moderations`
answers too, flagging inputs that contain MODERATION_MARKER.

Run it for a local demo (serves on loopback until Ctrl-C)::

    python -m tests.fakes.openai_server --port 9101 --api-key sk-fake

then point the application at it with OPENAI_BASE_URL=http://127.0.0.1:9101/v1 and
OPENAI_API_KEY=sk-fake. Other options: `--image-size WxH|requested`, `--latency SECONDS` (every
normal answer waits that long, as a render does), `--distinct-images N` (serve N noise images
per format, encoded once at start and reused, so the fake's own CPU stays out of a benchmark's
way: a fresh 1024 px WebP costs it about 0.2 s), and `--port 0` for a free port (the banner
line names it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email.utils
import io
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web
from multidict import CIMultiDict, CIMultiDictProxy
from PIL import Image

from tests.fakes.base import Fault as Fault  # re-exported: tests script faults from here
from tests.fakes.base import ScriptedFaults, serve_main

API_PREFIX = "/v1"
DEFAULT_API_KEY = "sk-fake"
DEFAULT_IMAGE_SIZE = (64, 64)
DEFAULT_MODELS = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2")
FIXED_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
QUALITIES = ("low", "medium", "high", "auto")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
DEFAULT_COMPRESSION = 100  # the service's default `output_compression` for JPEG and WebP
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
GENERATION_PARAMS = frozenset(
    {
        "prompt",
        "model",
        "n",
        "size",
        "quality",
        "background",
        "output_format",
        "output_compression",
        "moderation",
        "stream",
        "partial_images",
        "user",
        "safety_identifier",
    }
)
EDIT_PARAMS = frozenset(
    (GENERATION_PARAMS - {"moderation"}) | {"input_fidelity", "image", "image[]", "mask"}
)
MAX_REFERENCE_IMAGES = 16
MODERATION_MODELS = ("omni-moderation-latest", "omni-moderation-2024-09-26")
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# an input containing this word is flagged for FLAGGED_CATEGORIES; anything else passes
MODERATION_MARKER = "flagme"
FLAGGED_CATEGORIES = ("violence", "violence/graphic")


@dataclass(frozen=True)
class RecordedPart:
    """One multipart part as the server parsed it."""

    name: str
    filename: str | None
    content_type: str | None
    value: bytes

    @property
    def text(self) -> str:
        return self.value.decode()


@dataclass(frozen=True)
class RecordedRequest:
    """Everything a test may want to assert about one request that reached the server."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    content_type: str
    json: Any = None
    parts: tuple[RecordedPart, ...] = ()

    def fields(self) -> dict[str, str]:
        """The text (non-file) parts by name; repeated names keep the last value."""
        return {part.name: part.text for part in self.parts if part.filename is None}

    def files(self) -> list[RecordedPart]:
        return [part for part in self.parts if part.filename is not None]


class FakeOpenAI(ScriptedFaults):
    """The Images API on 127.0.0.1, on a free port unless one is given."""

    # a client that gave up must not keep the slow-answer handlers alive
    handler_cancellation = True
    url_suffix = API_PREFIX

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE,
        models: tuple[str, ...] = DEFAULT_MODELS,
        organization: str = "org-fake",
        latency: float = 0.0,
        distinct_images: int = 0,
    ) -> None:
        """`image_size` None draws the size asked for; a small fixed size keeps tests fast.

        `latency` delays every normal answer, as a render would. `distinct_images` > 0 encodes
        that many images per (size, format, compression) once and serves them in turn, so a
        benchmark measures the client, not the fake's encoder.
        """
        super().__init__()
        self.api_key = api_key
        self.image_size = image_size
        self.models = models
        self.organization = organization
        self.latency = latency
        self.distinct_images = distinct_images
        self.requests: list[RecordedRequest] = []
        self._prepared: dict[tuple[tuple[int, int], str, int], list[bytes]] = {}
        self._served = 0

    async def on_started(self) -> None:
        if self.distinct_images and self.image_size is not None:
            for output_format in OUTPUT_FORMATS:
                self._encoded_images(self.image_size, output_format, DEFAULT_COMPRESSION)

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(f"{API_PREFIX}/images/generations", self._generations)
        app.router.add_post(f"{API_PREFIX}/images/edits", self._edits)
        app.router.add_get(f"{API_PREFIX}/models/{{model}}", self._model)
        app.router.add_post(f"{API_PREFIX}/moderations", self._moderations)
        return app

    # --- handlers ---------------------------------------------------------------------------

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        recorded = self._record(request, json_body=body)
        fault = await self._next_fault()
        if fault is not None:
            return fault
        if (denied := self._authorise(recorded)) is not None:
            return denied
        if not isinstance(body, dict):
            return _error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly.)",
                "invalid_request_error",
            )
        await self._render_delay()
        return self._answer(body, GENERATION_PARAMS, references=0)

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        parts: list[RecordedPart] = []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if isinstance(part, BodyPartReader):
                    parts.append(
                        RecordedPart(
                            name=part.name or "",
                            filename=part.filename,
                            content_type=part.headers.get("Content-Type"),
                            value=bytes(await part.read()),
                        )
                    )
        recorded = self._record(request, parts=tuple(parts))
        fault = await self._next_fault()
        if fault is not None:
            return fault
        if (denied := self._authorise(recorded)) is not None:
            return denied
        if request.content_type != "multipart/form-data":
            return _error(400, "Invalid Content-Type header, expected multipart/form-data.")
        for recorded_part in parts:
            if recorded_part.name not in EDIT_PARAMS:
                return _error(
                    400,
                    f"Unknown parameter: '{recorded_part.name}'.",
                    param=recorded_part.name,
                    code="unknown_parameter",
                )
        images = [p for p in parts if p.name in ("image", "image[]")]
        if not images:
            return _error(400, "Missing required parameter: 'image'.", param="image")
        if len(images) > MAX_REFERENCE_IMAGES:
            return _error(400, "Too many images: at most 16.", param="image", code="invalid_value")
        for image in images:
            if image.content_type not in ("image/png", "image/jpeg", "image/webp"):
                return _error(
                    400,
                    f"Invalid file '{image.filename}': unsupported mimetype "
                    f"('{image.content_type}'). Supported file formats are 'image/jpeg', "
                    "'image/png', and 'image/webp'.",
                    param="image",
                    code="unsupported_file_mimetype",
                )
        fields: dict[str, Any] = recorded.fields()
        if fields.get("model") == "gpt-image-1-mini" and "input_fidelity" in fields:
            return _error(
                400,
                "Invalid value for 'input_fidelity': not supported by this model.",
                param="input_fidelity",
                code="invalid_value",
            )
        if "n" in fields:
            try:
                fields["n"] = int(fields["n"])
            except ValueError:
                return _error(400, "Invalid type for 'n': expected an integer.", param="n")
        await self._render_delay()
        return self._answer(fields, EDIT_PARAMS, len(images))

    async def _model(self, request: web.Request) -> web.StreamResponse:
        recorded = self._record(request)
        fault = await self._next_fault()
        if fault is not None:
            return fault
        if (denied := self._authorise(recorded)) is not None:
            return denied
        model = request.match_info["model"]
        if model not in self.models:
            return _model_not_found(model)
        return web.json_response(
            {"id": model, "object": "model", "created": 1_745_000_000, "owned_by": "system"},
            headers=self._headers(),
        )

    # --- behaviour --------------------------------------------------------------------------

    async def _render_delay(self) -> None:
        if self.latency > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.latency)

    def _encoded_images(
        self, size: tuple[int, int], output_format: str, compression: int
    ) -> list[bytes]:
        key = (size, output_format, compression)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = [
                base64.b64encode(noise_image(size, output_format, compression))
                for _ in range(self.distinct_images)
            ]
        return prepared

    def _image_b64(self, size: tuple[int, int], output_format: str, compression: int) -> bytes:
        if not self.distinct_images:
            return base64.b64encode(noise_image(size, output_format, compression))
        self._served += 1
        prepared = self._encoded_images(size, output_format, compression)
        return prepared[self._served % len(prepared)]

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        """Flags inputs containing MODERATION_MARKER (any case), as the service's body shape."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        recorded = self._record(request, json_body=body)
        fault = await self._next_fault()
        if fault is not None:
            return fault
        if (denied := self._authorise(recorded)) is not None:
            return denied
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        for key in body:
            if key not in ("model", "input"):
                return _error(
                    400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter"
                )
        model = body.get("model", "omni-moderation-latest")
        if model not in MODERATION_MODELS:
            return _model_not_found(str(model))
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else given
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(text, str) for text in inputs)
        ):
            return _error(400, "Invalid 'input': expected a string or an array of strings.")
        results = []
        for text in inputs:
            flagged = MODERATION_MARKER in text.lower()
            chosen = FLAGGED_CATEGORIES if flagged else ()
            results.append(
                {
                    "flagged": flagged,
                    "categories": {name: name in chosen for name in MODERATION_CATEGORIES},
                    "category_scores": {
                        name: 0.91 if name in chosen else 0.0001 for name in MODERATION_CATEGORIES
                    },
                    "category_applied_input_types": {
                        name: ["text"] for name in MODERATION_CATEGORIES
                    },
                }
            )
        answer = {"id": f"modr-{uuid.uuid4().hex[:24]}", "model": model, "results": results}
        return web.json_response(answer, headers=self._headers())

    def _record(
        self,
        request: web.Request,
        *,
        json_body: Any = None,
        parts: tuple[RecordedPart, ...] = (),
    ) -> RecordedRequest:
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            content_type=request.content_type,
            json=json_body,
            parts=parts,
        )
        self.requests.append(recorded)
        return recorded

    def fault_headers(self) -> dict[str, str]:
        return self._headers()

    def _authorise(self, recorded: RecordedRequest) -> web.StreamResponse | None:
        given = recorded.headers.get("Authorization", "")
        if given == f"Bearer {self.api_key}":
            return None
        shown = given.removeprefix("Bearer ")
        masked = f"{shown[:3]}*****{shown[-4:]}" if len(shown) > 8 else "*****"
        message = (
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
            if given
            else "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return _error(401, message, code="invalid_api_key" if given else None)

    def _answer(
        self, body: Mapping[str, Any], known: frozenset[str], references: int
    ) -> web.StreamResponse:
        for key in body:
            if key not in known:
                return _error(
                    400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter"
                )
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return _error(400, "Missing required parameter: 'prompt'.", param="prompt")
        if len(prompt) > 32_000:
            return _error(
                400, "Invalid 'prompt': string too long.", param="prompt", code="string_above_max"
            )
        model = body.get("model", "dall-e-2")
        if model not in self.models:
            return _model_not_found(str(model))
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
            return _invalid_value("n", n, "an integer between 1 and 10")
        size = body.get("size", "auto")
        dimensions = _parse_size(str(model), size)
        if dimensions is None:
            return _invalid_value("size", size, "a size supported by this model")
        quality = body.get("quality", "auto")
        if quality not in QUALITIES:
            return _invalid_value("quality", quality, ", ".join(QUALITIES))
        output_format = body.get("output_format", "png")
        if output_format not in OUTPUT_FORMATS:
            return _invalid_value("output_format", output_format, ", ".join(OUTPUT_FORMATS))
        compression = body.get("output_compression", DEFAULT_COMPRESSION)
        if isinstance(compression, str) and compression.isdigit():  # multipart fields are text
            compression = int(compression)
        if not isinstance(compression, int) or not 0 <= compression <= 100:
            return _invalid_value("output_compression", compression, "an integer from 0 to 100")
        started = time.perf_counter()
        image_size = self.image_size or dimensions
        # the base64 goes into the JSON text as it is: serialising megabytes of it through
        # json.dumps would cost the fake more CPU than the client it is measuring
        images = [self._image_b64(image_size, output_format, compression) for _ in range(n)]
        data = [{"b64_json": f"@image{index}@"} for index in range(n)]
        output_tokens = 272 if quality == "low" else 1056 if quality == "medium" else 4160
        answer = {
            "created": int(time.time()),
            "data": data,
            "background": "opaque",
            "output_format": output_format,
            "quality": "medium" if quality == "auto" else quality,
            "size": "1024x1024" if size == "auto" else size,
            "usage": {
                "input_tokens": len(prompt) // 4 + 323 * references,
                "output_tokens": output_tokens * n,
                "total_tokens": len(prompt) // 4 + 323 * references + output_tokens * n,
                "input_tokens_details": {
                    "text_tokens": len(prompt) // 4,
                    "image_tokens": 323 * references,
                },
            },
        }
        text = json.dumps(answer).encode()
        for index, image in enumerate(images):
            text = text.replace(f"@image{index}@".encode(), image, 1)
        elapsed = round((time.perf_counter() - started) * 1000)
        return web.Response(
            body=text,
            content_type="application/json",
            headers={**self._headers(), "openai-processing-ms": str(elapsed)},
        )

    def _headers(self) -> dict[str, str]:
        return {
            "x-request-id": f"req_{uuid.uuid4().hex}",
            "openai-organization": self.organization,
            "openai-version": "2020-10-01",
            "openai-processing-ms": "1",
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
        }


# --- answers and scripted faults ------------------------------------------------------------


def error_body(
    message: str,
    err_type: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
    **extra: Any,
) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": err_type, "param": param, "code": code, **extra}}
    ).encode()


def _error(
    status: int,
    message: str,
    err_type: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(message, err_type, param=param, code=code),
        content_type="application/json",
        headers={"x-request-id": f"req_{uuid.uuid4().hex}"},
    )


def _invalid_value(param: str, value: object, allowed: str) -> web.Response:
    return _error(
        400,
        f"Invalid value: '{value}'. Supported values are: {allowed}.",
        param=param,
        code="invalid_value",
    )


def _model_not_found(model: str) -> web.Response:
    return _error(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        code="model_not_found",
    )


def _parse_size(model: str, size: object) -> tuple[int, int] | None:
    if not isinstance(size, str):
        return None
    if size == "auto":
        return (1024, 1024)
    match = re.fullmatch(r"(\d+)x(\d+)", size)
    if match is None:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    if model.startswith("gpt-image-1"):
        return (width, height) if size in FIXED_SIZES else None
    # gpt-image-2 and later: multiples of 16, 1:3 to 3:1, at most 3840x2160 in area
    if width % 16 or height % 16 or width * 3 < height or height * 3 < width:
        return None
    if max(width, height) > 3840 or width * height > 3840 * 2160:
        return None
    return width, height


def noise_image(
    size: tuple[int, int], output_format: str, compression: int = DEFAULT_COMPRESSION
) -> bytes:
    """Random pixels: incompressible, so sizes and timings resemble a real render.

    `compression` is the service's `output_compression`: the quality of JPEG and WebP (a
    1024x1024 WebP at the default 100 is about 1.2 MB, as the service's are); PNG ignores it.
    """
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    options = {} if output_format == "png" else {"quality": compression}
    image.save(buffer, format=_PIL_FORMATS[output_format], **options)
    return buffer.getvalue()


def slow(seconds: float) -> Fault:
    """A normal answer, only late: for client timeouts."""
    return Fault(delay=seconds)


def rate_limited(
    *,
    retry_after: str | None = None,
    retry_after_ms: str | None = None,
    should_retry: bool | None = None,
) -> Fault:
    headers = {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "12s",
    }
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return Fault(
        status=429,
        body=error_body(
            "Rate limit reached for gpt-image-2 in organization org-fake on images per minute "
            "(IPM): Limit 5, Used 5, Requested 1. Please try again in 12s.",
            "requests",
            code="rate_limit_exceeded",
        ),
        headers=headers,
    )


def insufficient_quota(*, retry_after: str | None = "20") -> Fault:
    """Out of credit; a Retry-After is included to show it must be ignored."""
    return Fault(
        status=429,
        body=error_body(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            code="insufficient_quota",
        ),
        headers={"retry-after": retry_after} if retry_after is not None else {},
    )


def moderation_blocked() -> Fault:
    return Fault(
        status=400,
        body=error_body(
            "Your request was rejected by the safety system. If you believe this is an error, "
            "contact us at help.openai.com and include the request ID req_fake. "
            "safety_violations=[violence].",
            "image_generation_user_error",
            code="moderation_blocked",
            moderation_details={"moderation_stage": "input", "categories": ["violence"]},
        ),
    )


def content_policy_violation() -> Fault:
    return Fault(
        status=400,
        body=error_body(
            "Your request was rejected as a result of our safety system.",
            code="content_policy_violation",
        ),
    )


def invalid_value(param: str = "size") -> Fault:
    return Fault(
        status=400,
        body=error_body(f"Invalid value for '{param}'.", param=param, code="invalid_value"),
    )


def unprocessable() -> Fault:
    return Fault(status=422, body=error_body("The request could not be processed."))


def forbidden_region() -> Fault:
    return Fault(
        status=403,
        body=error_body(
            "Country, region, or territory not supported",
            "request_forbidden",
            code="unsupported_country_region_territory",
        ),
    )


def server_error(status: int = 500, *, retry_after: str | None = None) -> Fault:
    """500 as the API words it; 502/504 as a gateway's HTML page; 503 as the overload notice."""
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    if status == 500:
        body = error_body(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )
        return Fault(status=status, body=body, headers=headers)
    if status == 503:
        body = error_body(
            "The engine is currently overloaded, please try again later.", "server_error"
        )
        return Fault(status=status, body=body, headers=headers)
    page = f"<html><head><title>{status}</title></head><body>{status} Gateway</body></html>"
    return Fault(status=status, body=page.encode(), content_type="text/html", headers=headers)


def malformed_json() -> Fault:
    """A 200 whose JSON is cut off mid-way, as from a dropped proxy connection."""
    return Fault(status=200, body=b'{"created": 1745000000, "data": [{"b64_json": "iVBORw0KGgo')


def wrong_content_type() -> Fault:
    return Fault(
        status=200,
        body=b"<html><body>Welcome to the captive portal</body></html>",
        content_type="text/html",
    )


def _image_answer(b64_json: str) -> bytes:
    return json.dumps(
        {"created": 1_745_000_000, "data": [{"b64_json": b64_json}], "output_format": "png"}
    ).encode()


def not_an_image() -> Fault:
    """Valid base64 of bytes that are no image format."""
    return Fault(status=200, body=_image_answer(base64.b64encode(os.urandom(512)).decode()))


def bad_base64() -> Fault:
    return Fault(status=200, body=_image_answer("this is *not* base64!"))


def no_image() -> Fault:
    return Fault(status=200, body=json.dumps({"created": 1_745_000_000, "data": []}).encode())


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


# --- command line -------------------------------------------------------------------------------


def _size_arg(text: str) -> tuple[int, int] | None:
    if text == "requested":
        return None
    width, _, height = text.partition("x")
    return int(width), int(height)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds every normal answer waits"
    )
    parser.add_argument(
        "--distinct-images",
        type=int,
        default=0,
        help="serve this many images per format, encoded once (0: a fresh one per call)",
    )
    parser.add_argument(
        "--image-size",
        type=_size_arg,
        default="1024x1024",
        help="WxH of the images drawn, or 'requested' for the size each request asks for",
    )


def main(argv: list[str] | None = None) -> None:
    serve_main(
        lambda args: FakeOpenAI(
            api_key=args.api_key,
            image_size=args.image_size,
            latency=args.latency,
            distinct_images=args.distinct_images,
        ),
        default_port=9101,
        description="Serve a fake OpenAI Images API on loopback.",
        add_arguments=_add_arguments,
        banner=lambda server, args: (
            f"Fake OpenAI Images API on {server.base_url} (key {args.api_key}); Ctrl-C stops it"
        ),
        argv=argv,
    )


if __name__ == "__main__":
    main()
