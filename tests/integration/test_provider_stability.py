"""The Stability adapter against a local v2beta API over real HTTP: multipart out, verdicts in."""

from __future__ import annotations

import dataclasses
import io
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from caverna.imaging import DeliveryFormat
from caverna.prompting.dialects.base import CompiledPrompt
from caverna.providers.base import (
    ErrorKind,
    GenerationRequest,
    ImageProvider,
    ProviderError,
    ProviderImage,
)
from caverna.providers.http import new_session
from caverna.providers.pricing import PriceTable
from caverna.providers.stability import StabilityConfig, StabilityProvider
from tests.fakes import stability_server as fake_api
from tests.fakes.stability_server import FakeStability, Fault
from tests.integration.intake_helpers import generate_behind_a_full_gate
from tests.integration.provider_helpers import Progress, compile_for, generation_request

API_KEY = "sk-stability-test-42"
JOB_ID = "job-0002"


@pytest.fixture(scope="module")
def compiled() -> CompiledPrompt:
    return compile_for("stability")


@pytest.fixture
async def fake() -> AsyncIterator[FakeStability]:
    server = FakeStability(api_key=API_KEY)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as client:
        yield client


def provider_for(
    base_url: str, session: aiohttp.ClientSession, **changes: Any
) -> StabilityProvider:
    config = StabilityConfig(api_key=API_KEY, base_url=base_url)
    return StabilityProvider(dataclasses.replace(config, **changes), session)


@pytest.fixture
def provider(fake: FakeStability, session: aiohttp.ClientSession) -> StabilityProvider:
    return provider_for(fake.base_url, session)


def request_for(
    compiled: CompiledPrompt,
    delivery: DeliveryFormat = "webp",
    *,
    endpoint: str | None = None,
    **form: str,
) -> GenerationRequest:
    if endpoint is not None or form:
        payload = {
            "endpoint": endpoint or compiled.payload["endpoint"],
            "form": {**compiled.payload["form"], **form},
        }
        compiled = dataclasses.replace(compiled, payload=payload)
    return generation_request(compiled, job_id=JOB_ID, delivery=delivery)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def failure(provider: StabilityProvider, request: GenerationRequest) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.generate(request, Progress())
    return caught.value


def closed_port_url() -> str:
    """A loopback port nothing listens on: bound for a moment, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- success and the exact request -----------------------------------------------------------


async def test_generates_the_delivery_format_with_the_seed_it_used(
    provider: StabilityProvider, compiled: CompiledPrompt
) -> None:
    progress = Progress()

    image = await provider.generate(request_for(compiled, "webp"), progress)

    assert isinstance(image, ProviderImage)
    picture = decoded(image.data)
    assert picture.format == "WEBP"
    assert picture.size == (64, 64)
    assert image.content_type == "image/webp"
    assert image.seed == 3
    assert image.model == "core"
    assert image.cost_usd == pytest.approx(0.03)
    assert image.latency_ms > 0
    assert progress.values == [0.05, 1.0]
    assert isinstance(provider, ImageProvider)
    assert await provider.health() is None


async def test_sends_every_field_as_multipart_form_data(
    fake: FakeStability, provider: StabilityProvider, compiled: CompiledPrompt
) -> None:
    await provider.generate(request_for(compiled, "webp"), Progress())

    [sent] = fake.requests
    assert sent.method == "POST"
    assert sent.path == "/v2beta/stable-image/generate/core"
    content_type = sent.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    assert len(content_type.partition("boundary=")[2].strip('"')) >= 8
    assert sent.headers["accept"] == "image/*"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["stability-client-id"] == "caverna"
    form = compiled.payload["form"]
    assert [(part.name, part.text) for part in sent.parts] == [
        ("prompt", form["prompt"]),
        ("negative_prompt", form["negative_prompt"]),
        ("aspect_ratio", "9:16"),
        ("output_format", "webp"),
        ("seed", "3"),
        ("style_preset", "3d-model"),
    ]
    assert all(part.filename is None for part in sent.parts)
    assert all(part.content_type in (None, "text/plain; charset=utf-8") for part in sent.parts)


async def test_leaves_out_the_client_id_when_not_configured(
    fake: FakeStability, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    provider = provider_for(fake.base_url, session, client_id=None)

    await provider.generate(request_for(compiled), Progress())

    assert "stability-client-id" not in fake.requests[0].headers


@pytest.mark.parametrize(
    ("delivery", "asked", "pil_format"), [("png", "png", "PNG"), ("avif", "png", "PNG")]
)
async def test_asks_png_when_the_delivery_format_is_not_offered(
    fake: FakeStability,
    provider: StabilityProvider,
    compiled: CompiledPrompt,
    delivery: DeliveryFormat,
    asked: str,
    pil_format: str,
) -> None:
    image = await provider.generate(request_for(compiled, delivery), Progress())

    assert fake.requests[0].fields()["output_format"] == asked
    assert decoded(image.data).format == pil_format
    assert image.content_type == "image/png"


@pytest.mark.parametrize(
    ("model", "cost"),
    [("sd3.5-large", 0.065), ("sd3.5-large-turbo", 0.04), ("sd3.5-medium", 0.035)],
)
async def test_sd3_models_are_named_sent_and_priced(
    fake: FakeStability,
    provider: StabilityProvider,
    compiled: CompiledPrompt,
    model: str,
    cost: float,
) -> None:
    image = await provider.generate(request_for(compiled, endpoint="sd3", model=model), Progress())

    [sent] = fake.requests
    assert sent.path == "/v2beta/stable-image/generate/sd3"
    assert sent.fields()["model"] == model
    assert image.model == model
    assert image.cost_usd == pytest.approx(cost)


async def test_ultra_is_priced_per_endpoint(
    provider: StabilityProvider, compiled: CompiledPrompt
) -> None:
    image = await provider.generate(request_for(compiled, endpoint="ultra"), Progress())

    assert image.model == "ultra"
    assert image.cost_usd == pytest.approx(0.08)


async def test_uses_a_custom_price_table(
    fake: FakeStability, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    prices = PriceTable.from_json('{"stability": {"core": 0.025}}')
    config = StabilityConfig(api_key=API_KEY, base_url=fake.base_url)

    image = await StabilityProvider(config, session, prices).generate(
        request_for(compiled), Progress()
    )

    assert image.cost_usd == pytest.approx(0.025)


async def test_falls_back_to_png_where_an_endpoint_refuses_webp(
    session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    fake = FakeStability(api_key=API_KEY, formats={"sd3": ("jpeg", "png")})
    await fake.start()
    try:
        provider = provider_for(fake.base_url, session)
        request = request_for(compiled, "webp", endpoint="sd3", model="sd3.5-medium")

        image = await provider.generate(request, Progress())
    finally:
        await fake.stop()

    assert [sent.fields()["output_format"] for sent in fake.requests] == ["webp", "png"]
    assert decoded(image.data).format == "PNG"
    assert image.content_type == "image/png"


async def test_reads_a_json_answer_too(
    session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    fake = FakeStability(api_key=API_KEY, always_json=True)
    await fake.start()
    try:
        image = await provider_for(fake.base_url, session).generate(
            request_for(compiled), Progress()
        )
    finally:
        await fake.stop()

    assert decoded(image.data).format == "WEBP"
    assert image.seed == 3
    assert image.cost_usd == pytest.approx(0.03)


async def test_a_random_seed_is_reported_as_the_service_chose_it(
    fake: FakeStability, provider: StabilityProvider, compiled: CompiledPrompt
) -> None:
    image = await provider.generate(request_for(compiled, seed="0"), Progress())

    assert image.seed is not None
    assert image.seed > 0


async def test_refuses_prompts_of_another_dialect(
    fake: FakeStability, provider: StabilityProvider, compiled: CompiledPrompt
) -> None:
    other = dataclasses.replace(compiled, dialect="openai")

    error = await failure(provider, GenerationRequest(JOB_ID, other, "webp"))

    assert error.code == ErrorKind.INVALID_REQUEST
    assert fake.requests == []


async def test_refuses_an_endpoint_that_is_not_a_path_segment(
    fake: FakeStability, provider: StabilityProvider, compiled: CompiledPrompt
) -> None:
    error = await failure(provider, request_for(compiled, endpoint="../../v1/user"))

    assert error.code == ErrorKind.INVALID_REQUEST
    assert fake.requests == []


async def test_the_fake_rejects_anything_but_multipart_like_the_service(
    fake: FakeStability, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{fake.base_url}/v2beta/stable-image/generate/core",
        data={"prompt": "a cave"},
        headers={"authorization": f"Bearer {API_KEY}", "accept": "image/*"},
    ) as response:
        body = await response.json()

    assert response.status == 400
    assert body["name"] == "bad_request"
    assert body["errors"] == ["content-type: must be multipart/form-data"]


# --- content moderation ------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["headers", "json"])
async def test_a_filtered_image_is_discarded_as_blocked(
    fake: FakeStability, provider: StabilityProvider, compiled: CompiledPrompt, as_json: bool
) -> None:
    fake.fail_next(fake_api.content_filtered(as_json=as_json))
    progress = Progress()

    with pytest.raises(ProviderError) as caught:
        await provider.generate(request_for(compiled), progress)

    assert caught.value.code == ErrorKind.CONTENT_BLOCKED
    assert caught.value.retryable is False
    assert "CONTENT_FILTERED" in caught.value.message
    assert progress.values == [0.05]


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kind", "retryable", "retry_after", "says"),
    [
        pytest.param(
            fake_api.payment_required(),
            ErrorKind.QUOTA_EXHAUSTED,
            False,
            None,
            "sufficient credits",
            id="402-payment_required",
        ),
        pytest.param(
            fake_api.content_moderation(),
            ErrorKind.CONTENT_BLOCKED,
            False,
            None,
            "flagged by our content moderation",
            id="403-content_moderation",
        ),
        pytest.param(
            fake_api.forbidden(),
            ErrorKind.AUTH,
            False,
            None,
            "may not use this API",
            id="403-other",
        ),
        pytest.param(
            fake_api.payload_too_large(),
            ErrorKind.INVALID_REQUEST,
            False,
            None,
            "larger than 10MiB",
            id="413",
        ),
        pytest.param(
            fake_api.unprocessable(),
            ErrorKind.INVALID_REQUEST,
            False,
            None,
            "only supported language",
            id="422",
        ),
        pytest.param(
            fake_api.rate_limited(),
            ErrorKind.RATE_LIMITED,
            True,
            None,
            "150 requests per 10s",
            id="429-no-retry-after",
        ),
        pytest.param(
            fake_api.rate_limited(retry_after="60"),
            ErrorKind.RATE_LIMITED,
            True,
            60.0,
            "150 requests per 10s",
            id="429-retry-after-seconds",
        ),
        pytest.param(
            fake_api.server_error(500),
            ErrorKind.TRANSIENT,
            True,
            None,
            "unexpected server error",
            id="500",
        ),
        pytest.param(
            Fault(status=500, body=b"Internal Server Error", content_type="text/plain"),
            ErrorKind.TRANSIENT,
            True,
            None,
            "Internal Server Error",
            id="500-plain-text",
        ),
        pytest.param(
            fake_api.server_error(502),
            ErrorKind.PROVIDER_DOWN,
            True,
            None,
            "upstream unavailable",
            id="502",
        ),
        pytest.param(
            fake_api.server_error(503, retry_after="9"),
            ErrorKind.PROVIDER_DOWN,
            True,
            9.0,
            "upstream unavailable",
            id="503-retry-after",
        ),
        pytest.param(
            fake_api.server_error(504),
            ErrorKind.PROVIDER_DOWN,
            True,
            None,
            "upstream unavailable",
            id="504",
        ),
        pytest.param(
            fake_api.malformed_json(),
            ErrorKind.BAD_RESPONSE,
            True,
            None,
            "not valid JSON",
            id="200-malformed-json",
        ),
        pytest.param(
            fake_api.wrong_content_type(),
            ErrorKind.BAD_RESPONSE,
            True,
            None,
            "text/html",
            id="200-html",
        ),
        pytest.param(
            fake_api.not_an_image(),
            ErrorKind.BAD_RESPONSE,
            True,
            None,
            "not an image",
            id="200-not-an-image",
        ),
    ],
)
async def test_maps_every_error_answer(
    fake: FakeStability,
    provider: StabilityProvider,
    compiled: CompiledPrompt,
    fault: Fault,
    kind: ErrorKind,
    retryable: bool,
    retry_after: float | None,
    says: str,
) -> None:
    fake.fail_next(fault)
    progress = Progress()

    with pytest.raises(ProviderError) as caught:
        await provider.generate(request_for(compiled), progress)

    error = caught.value
    assert error.code == kind
    assert error.retryable is retryable
    assert error.retry_after == retry_after
    assert says in error.message
    assert error.message.startswith("stability: ")
    assert 1.0 not in progress.values
    assert len(fake.requests) == 1


async def test_http_date_retry_after_becomes_seconds(
    fake: FakeStability, provider: StabilityProvider, compiled: CompiledPrompt
) -> None:
    fake.fail_next(fake_api.rate_limited(retry_after=fake_api.http_date(45)))

    error = await failure(provider, request_for(compiled))

    assert error.code == ErrorKind.RATE_LIMITED
    assert error.retry_after is not None
    assert 42 <= error.retry_after <= 45


async def test_a_bad_field_is_an_invalid_request_naming_it(
    provider: StabilityProvider, compiled: CompiledPrompt
) -> None:
    error = await failure(provider, request_for(compiled, aspect_ratio="7:5"))

    assert error.code == ErrorKind.INVALID_REQUEST
    assert error.retryable is False
    assert "HTTP 400 bad_request" in error.message
    assert "aspect_ratio: must be one of" in error.message
    assert "[request " in error.message


async def test_a_wrong_key_is_an_auth_failure(
    fake: FakeStability, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    provider = provider_for(fake.base_url, session, api_key="sk-wrong")

    error = await failure(provider, request_for(compiled))

    assert error.code == ErrorKind.AUTH
    assert error.retryable is False
    assert "HTTP 401" in error.message


async def test_an_unknown_endpoint_is_an_invalid_request(
    provider: StabilityProvider, compiled: CompiledPrompt
) -> None:
    error = await failure(provider, request_for(compiled, endpoint="sd1.6"))

    assert error.code == ErrorKind.INVALID_REQUEST
    assert "HTTP 404" in error.message


async def test_a_slow_answer_times_out(
    fake: FakeStability, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    provider = provider_for(fake.base_url, session, timeout=0.3)
    fake.fail_next(fake_api.slow(5))

    error = await failure(provider, request_for(compiled))

    assert error.code == ErrorKind.TIMEOUT
    assert error.retryable is True


async def test_a_closed_port_means_the_provider_is_down(
    session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    error = await failure(provider_for(closed_port_url(), session), request_for(compiled))

    assert error.code == ErrorKind.PROVIDER_DOWN
    assert error.retryable is True


# --- the intake bound ----------------------------------------------------------------------


async def test_the_body_waits_for_intake_room_outside_the_timeout(
    fake: FakeStability, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    provider = provider_for(fake.base_url, session, timeout=0.5)

    image, _ = await generate_behind_a_full_gate(
        lambda request: provider.generate(request, Progress()),
        request_for(compiled, "webp"),
        hold_seconds=0.8,
    )

    assert decoded(image.data).format == "WEBP"
