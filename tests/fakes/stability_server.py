"""A local stand-in for Stability AI's v2beta Stable Image generate API, over real HTTP.

Like the service it insists on multipart/form-data (even with no file), checks the key and the
form fields, and answers with raw image bytes plus `finish-reason` and `seed` headers, or with
base64 JSON when asked for `application/json`. Images are random noise in the format asked for.
Every request is recorded with its multipart parts, and the next calls can be scripted to fail.

Run it for a local demo (serves on loopback until Ctrl-C)::

    python -m tests.fakes.stability_server --port 9102 --api-key sk-fake

then point the application at it with CAVERNA_STABILITY_BASE_URL=http://127.0.0.1:9102 and
STABILITY_API_KEY=sk-fake.
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import io
import json
import math
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from multidict import CIMultiDict, CIMultiDictProxy
from PIL import Image, ImageFilter

from tests.fakes.base import Fault as Fault  # re-exported: tests script faults from here
from tests.fakes.base import ScriptedFaults, serve_main

GENERATE_PREFIX = "/v2beta/stable-image/generate"
DEFAULT_API_KEY = "sk-fake"
DEFAULT_IMAGE_SIZE = (64, 64)
ENDPOINTS = ("ultra", "core", "sd3")
SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium")
ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
STYLE_PRESETS = (
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
)
MAX_SEED = 4_294_967_294
MAX_PROMPT_CHARS = 10_000
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


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
    body: bytes = b""
    parts: tuple[RecordedPart, ...] = ()

    def fields(self) -> dict[str, str]:
        """The text (non-file) parts by name; repeated names keep the last value."""
        return {part.name: part.text for part in self.parts if part.filename is None}


class FakeStability(ScriptedFaults):
    """The generate endpoints on 127.0.0.1, on a free port unless one is given."""

    # a client that gave up must not keep the slow-answer handlers alive
    handler_cancellation = True

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE,
        formats: Mapping[str, tuple[str, ...]] | None = None,
        always_json: bool = False,
    ) -> None:
        """`image_size` None draws about one megapixel at the ratio asked for.

        `formats` narrows the output formats an endpoint accepts (an older sd3 schema listed
        only jpeg and png); `always_json` answers base64 JSON whatever the Accept header says.
        """
        super().__init__()
        self.api_key = api_key
        self.image_size = image_size
        self.formats = dict(formats or {})
        self.always_json = always_json
        self.requests: list[RecordedRequest] = []

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_post(f"{GENERATE_PREFIX}/{{endpoint}}", self._generate)
        return app

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        fault = await self._next_fault()
        if fault is not None:
            return fault
        if recorded.headers.get("authorization", "") != f"Bearer {self.api_key}":
            return error(401, "unauthorized", "authorization: invalid or missing API key")
        endpoint = request.match_info["endpoint"]
        if endpoint not in ENDPOINTS:
            return error(404, "not_found", f"{request.path}: no such endpoint")
        if recorded.content_type != "multipart/form-data":
            return error(400, "bad_request", "content-type: must be multipart/form-data")
        fields = recorded.fields()
        problems = self._problems(endpoint, fields)
        if problems:
            return error(400, "bad_request", *problems)
        seed = int(fields.get("seed") or 0) or random.randint(1, MAX_SEED)
        output_format = fields.get("output_format", "png")
        size = self.image_size or _megapixel_size(fields.get("aspect_ratio", "1:1"))
        data = noise_image(size, output_format)
        if self.always_json or "application/json" in recorded.headers.get("accept", ""):
            return web.json_response(
                {
                    "image": base64.b64encode(data).decode(),
                    "finish_reason": "SUCCESS",
                    "seed": seed,
                },
                headers=_headers(),
            )
        return web.Response(
            body=data,
            content_type=f"image/{output_format}",
            headers={**_headers(), "finish-reason": "SUCCESS", "seed": str(seed)},
        )

    def _problems(self, endpoint: str, fields: Mapping[str, str]) -> list[str]:
        problems = []
        prompt = fields.get("prompt", "")
        if not 1 <= len(prompt) <= MAX_PROMPT_CHARS:
            problems.append(f"prompt: must be between 1 and {MAX_PROMPT_CHARS} characters")
        if len(fields.get("negative_prompt", "")) > MAX_PROMPT_CHARS:
            problems.append(f"negative_prompt: must be at most {MAX_PROMPT_CHARS} characters")
        if fields.get("aspect_ratio", "1:1") not in ASPECT_RATIOS:
            problems.append(f"aspect_ratio: must be one of {', '.join(ASPECT_RATIOS)}")
        formats = self.formats.get(endpoint, OUTPUT_FORMATS)
        if fields.get("output_format", "png") not in formats:
            problems.append(f"output_format: must be one of {', '.join(formats)}")
        seed = fields.get("seed", "0")
        if not seed.isdigit() or int(seed) > MAX_SEED:
            problems.append(f"seed: must be an integer between 0 and {MAX_SEED}")
        if "style_preset" in fields and fields["style_preset"] not in STYLE_PRESETS:
            problems.append(f"style_preset: must be one of {', '.join(STYLE_PRESETS)}")
        if "model" in fields:
            if endpoint != "sd3":
                problems.append("model: not allowed on this endpoint")
            elif fields["model"] not in SD3_MODELS:
                problems.append(f"model: must be one of {', '.join(SD3_MODELS)}")
        return problems

    async def _record(self, request: web.Request) -> RecordedRequest:
        parts: list[RecordedPart] = []
        body = b""
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
        else:
            body = await request.read()
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            content_type=request.content_type,
            body=body,
            parts=tuple(parts),
        )
        self.requests.append(recorded)
        return recorded

    def fault_headers(self) -> dict[str, str]:
        return _headers()


def _headers() -> dict[str, str]:
    return {"x-request-id": uuid.uuid4().hex}


def error_body(name: str, *errors: str) -> bytes:
    return json.dumps({"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}).encode()


def error(status: int, name: str, *errors: str) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(name, *errors),
        content_type="application/json",
        headers=_headers(),
    )


def _megapixel_size(aspect_ratio: str) -> tuple[int, int]:
    width, _, height = aspect_ratio.partition(":")
    ratio = int(width) / int(height)
    return round(math.sqrt(1024 * 1024 * ratio) / 64) * 64, round(
        math.sqrt(1024 * 1024 / ratio) / 64
    ) * 64


def noise_image(size: tuple[int, int], output_format: str, *, blurred: bool = False) -> bytes:
    """Random pixels: incompressible, so sizes and timings resemble a real render."""
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    if blurred:
        image = image.filter(ImageFilter.GaussianBlur(radius=max(size) / 8))
    buffer = io.BytesIO()
    image.save(buffer, format=_PIL_FORMATS[output_format])
    return buffer.getvalue()


# --- scripted faults ----------------------------------------------------------------------------


def slow(seconds: float) -> Fault:
    """A normal answer, only late: for client timeouts."""
    return Fault(delay=seconds)


def rate_limited(*, retry_after: str | None = None) -> Fault:
    """150 requests per 10 s per key; whether Retry-After is sent is not documented."""
    return Fault(
        status=429,
        body=error_body(
            "rate_limit_exceeded", "You have exceeded the rate limit of 150 requests per 10s"
        ),
        headers={"retry-after": retry_after} if retry_after is not None else {},
    )


def payment_required() -> Fault:
    return Fault(
        status=402,
        body=error_body("payment_required", "You lack sufficient credits to make this request."),
    )


def content_moderation() -> Fault:
    return Fault(
        status=403,
        body=error_body(
            "content_moderation",
            "Your request was flagged by our content moderation system, as a result your "
            "request was denied and you were not charged.",
        ),
    )


def forbidden() -> Fault:
    return Fault(status=403, body=error_body("forbidden", "Your API key may not use this API."))


def content_filtered(*, as_json: bool = False, seed: int = 1234) -> Fault:
    """A 200 carrying a blurred image: the output, not the prompt, tripped the filter."""
    image = noise_image(DEFAULT_IMAGE_SIZE, "png", blurred=True)
    if as_json:
        body = json.dumps(
            {
                "image": base64.b64encode(image).decode(),
                "finish_reason": "CONTENT_FILTERED",
                "seed": seed,
            }
        ).encode()
        return Fault(status=200, body=body)
    return Fault(
        status=200,
        body=image,
        content_type="image/png",
        headers={"finish-reason": "CONTENT_FILTERED", "seed": str(seed)},
    )


def payload_too_large() -> Fault:
    return Fault(
        status=413,
        body=error_body("payload_too_large", "body: payloads cannot be larger than 10MiB"),
    )


def unprocessable() -> Fault:
    return Fault(
        status=422,
        body=error_body("invalid_language", "English is the only supported language."),
    )


def server_error(status: int = 500, *, retry_after: str | None = None) -> Fault:
    """500 with the API's error body; 502/503/504 as a gateway's HTML page."""
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    if status == 500:
        body = error_body("internal_error", "An unexpected server error occurred.")
        return Fault(status=status, body=body, headers=headers)
    page = f"<html><body><h1>{status}</h1>upstream unavailable</body></html>"
    return Fault(status=status, body=page.encode(), content_type="text/html", headers=headers)


def malformed_json() -> Fault:
    """A JSON answer cut off mid-way."""
    return Fault(status=200, body=b'{"image": "iVBORw0KGgoAAAANSUhEUg", "finish_reason": "SUC')


def wrong_content_type() -> Fault:
    return Fault(
        status=200,
        body=b"<html><body>Welcome to the captive portal</body></html>",
        content_type="text/html",
    )


def not_an_image() -> Fault:
    """Bytes labelled as a PNG that are no image at all."""
    return Fault(
        status=200,
        body=os.urandom(512),
        content_type="image/png",
        headers={"finish-reason": "SUCCESS", "seed": "1"},
    )


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
        "--image-size",
        type=_size_arg,
        default="1024x1024",
        help="WxH of the images drawn, or 'requested' for about 1 MP at the ratio asked for",
    )


def main(argv: list[str] | None = None) -> None:
    serve_main(
        lambda args: FakeStability(api_key=args.api_key, image_size=args.image_size),
        default_port=9102,
        description="Serve a fake Stability AI API on loopback.",
        add_arguments=_add_arguments,
        banner=lambda server, args: (
            f"Fake Stability API on {server.base_url} (key {args.api_key}); Ctrl-C stops it"
        ),
        argv=argv,
    )


if __name__ == "__main__":
    main()
