"""The OpenAI adapter against a local Images API over real HTTP: requests sent, answers mapped."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import pickle
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
from caverna.providers.intake import IntakeGate
from caverna.providers.openai import OpenAIConfig, OpenAIProvider, end_user_id
from caverna.providers.pricing import DEFAULT_PRICES, PriceKey, PriceTable
from tests.fakes import openai_server as fake_api
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.integration.intake_helpers import WatchedTicket, generate_behind_a_full_gate
from tests.integration.provider_helpers import Progress, compile_for, generation_request

API_KEY = "sk-test-0123456789"
JOB_ID = "job-0001"


@pytest.fixture(scope="module")
def compiled() -> CompiledPrompt:
    return compile_for("openai")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=API_KEY)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as client:
        yield client


def provider_for(
    fake: FakeOpenAI, session: aiohttp.ClientSession, **changes: Any
) -> OpenAIProvider:
    config = OpenAIConfig(api_key=API_KEY, base_url=fake.base_url)
    return OpenAIProvider(dataclasses.replace(config, **changes), session)


@pytest.fixture
def provider(fake: FakeOpenAI, session: aiohttp.ClientSession) -> OpenAIProvider:
    return provider_for(fake, session)


def request_for(
    compiled: CompiledPrompt, delivery: DeliveryFormat = "webp", **payload: Any
) -> GenerationRequest:
    if payload:
        compiled = dataclasses.replace(compiled, payload={**compiled.payload, **payload})
    return generation_request(compiled, job_id=JOB_ID, delivery=delivery)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_bytes(size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "#c0ffee").save(buffer, format="PNG")
    return buffer.getvalue()


async def failure(provider: OpenAIProvider, request: GenerationRequest) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.generate(request, Progress())
    return caught.value


# --- success and the exact request -----------------------------------------------------------


async def test_generates_the_delivery_format_and_reports_what_it_cost(
    provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    progress = Progress()

    image = await provider.generate(request_for(compiled, "webp"), progress)

    assert isinstance(image, ProviderImage)
    picture = decoded(image.data)
    assert picture.format == "WEBP"
    assert picture.size == (64, 64)
    assert image.content_type == "image/webp"
    assert image.model == "gpt-image-2"
    assert image.seed is None
    # gpt-image-2 is priced as gpt-image-1; 768x1360 is off the grid: the rectangular price
    assert compiled.payload["size"] == "768x1360"
    assert image.cost_usd == pytest.approx(0.25)
    assert image.latency_ms > 0
    assert progress.values == [0.05, 1.0]
    assert isinstance(provider, ImageProvider)


async def test_sends_exactly_the_documented_json(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    await provider.generate(request_for(compiled, "webp"), Progress())

    [sent] = fake.requests
    assert sent.method == "POST"
    assert sent.path == "/v1/images/generations"
    assert sent.content_type == "application/json"
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert "OpenAI-Organization" not in sent.headers
    assert "OpenAI-Project" not in sent.headers
    assert sent.json == {
        "model": "gpt-image-2",
        "prompt": compiled.prompt,
        "n": 1,
        "size": "768x1360",
        "quality": "high",
        "output_format": "webp",
        "user": hashlib.sha256(f"caverna-job:{JOB_ID}".encode()).hexdigest(),
    }
    # the job id itself never leaves; only a stable digest of it
    assert JOB_ID not in sent.json["user"]
    assert end_user_id(JOB_ID) == sent.json["user"]


async def test_sends_organization_and_project_when_configured(
    fake: FakeOpenAI, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    provider = provider_for(fake, session, organization="org-123", project="proj_456")

    await provider.generate(request_for(compiled), Progress())

    [sent] = fake.requests
    assert sent.headers["OpenAI-Organization"] == "org-123"
    assert sent.headers["OpenAI-Project"] == "proj_456"


@pytest.mark.parametrize(
    ("delivery", "asked", "pil_format", "content_type"),
    [("png", "png", "PNG", "image/png"), ("avif", "png", "PNG", "image/png")],
)
async def test_asks_png_when_the_delivery_format_is_not_offered(
    fake: FakeOpenAI,
    provider: OpenAIProvider,
    compiled: CompiledPrompt,
    delivery: DeliveryFormat,
    asked: str,
    pil_format: str,
    content_type: str,
) -> None:
    image = await provider.generate(request_for(compiled, delivery), Progress())

    assert fake.requests[0].json["output_format"] == asked
    assert decoded(image.data).format == pil_format
    assert image.content_type == content_type


async def test_prices_by_model_quality_and_size(
    provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    request = request_for(compiled, model="gpt-image-1-mini", size="1024x1024", quality="low")

    image = await provider.generate(request, Progress())

    assert image.model == "gpt-image-1-mini"
    assert image.cost_usd == pytest.approx(0.005)


async def test_uses_a_custom_price_table(
    fake: FakeOpenAI, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    prices = PriceTable.from_json('{"openai": {"gpt-image-2": {"high": 0.5}}}')
    provider = OpenAIProvider(
        OpenAIConfig(api_key=API_KEY, base_url=fake.base_url), session, prices
    )

    image = await provider.generate(request_for(compiled), Progress())

    assert image.cost_usd == pytest.approx(0.5)


async def test_reference_images_go_to_edits_as_multipart(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    first, second = png_bytes((32, 32)), png_bytes((48, 48))
    request = request_for(
        compiled, reference_images=[("hero.png", first), ("turnaround.png", second)]
    )
    progress = Progress()

    image = await provider.generate(request, progress)

    assert decoded(image.data).format == "WEBP"
    assert progress.values == [0.05, 1.0]
    [sent] = fake.requests
    assert sent.path == "/v1/images/edits"
    assert sent.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.fields() == {
        "model": "gpt-image-2",
        "prompt": compiled.prompt,
        "n": "1",
        "size": "768x1360",
        "quality": "high",
        "output_format": "webp",
        "user": end_user_id(JOB_ID),
        "input_fidelity": "high",
    }
    files = sent.files()
    assert [(f.name, f.filename, f.content_type) for f in files] == [
        ("image[]", "hero.png", "image/png"),
        ("image[]", "turnaround.png", "image/png"),
    ]
    assert [f.value for f in files] == [first, second]
    assert "reference_images" not in {part.name for part in sent.parts}


async def test_edits_leave_out_input_fidelity_where_the_model_lacks_it(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    request = request_for(
        compiled,
        model="gpt-image-1-mini",
        size="1024x1536",
        reference_images=[("hero.png", png_bytes())],
    )

    await provider.generate(request, Progress())

    assert "input_fidelity" not in fake.requests[0].fields()


async def test_unusable_reference_images_are_refused_before_sending(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    for references in ([("notes.txt", b"just text")], [], "hero.png", [("x.png",)]):
        error = await failure(provider, request_for(compiled, reference_images=references))
        assert error.code == ErrorKind.INVALID_REQUEST
        assert error.retryable is False
    assert fake.requests == []


async def test_refuses_prompts_of_another_dialect(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    other = dataclasses.replace(compiled, dialect="stability")

    error = await failure(provider, GenerationRequest(JOB_ID, other, "webp"))

    assert error.code == ErrorKind.INVALID_REQUEST
    assert fake.requests == []


async def test_a_scripted_fault_affects_only_the_next_call(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    fake.fail_next(fake_api.server_error(500))

    error = await failure(provider, request_for(compiled))
    image = await provider.generate(request_for(compiled), Progress())

    assert error.code == ErrorKind.TRANSIENT
    assert decoded(image.data).format == "WEBP"
    assert len(fake.requests) == 2


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kind", "retryable", "retry_after", "says"),
    [
        pytest.param(
            fake_api.moderation_blocked(),
            ErrorKind.CONTENT_BLOCKED,
            False,
            None,
            "rejected by the safety system",
            id="400-moderation_blocked",
        ),
        pytest.param(
            fake_api.content_policy_violation(),
            ErrorKind.CONTENT_BLOCKED,
            False,
            None,
            "safety system",
            id="400-content_policy_violation",
        ),
        pytest.param(
            Fault(
                status=400,
                body=fake_api.error_body(
                    "Invalid image file or mode for image 1.",
                    "image_generation_user_error",
                    param="image",
                    code="invalid_image_file",
                ),
            ),
            ErrorKind.INVALID_REQUEST,
            False,
            None,
            "Invalid image file",
            id="400-image_generation_user_error-not-moderation",
        ),
        pytest.param(
            Fault(
                status=400,
                body=fake_api.error_body(
                    "Your request was rejected by the safety system.",
                    "image_generation_user_error",
                ),
            ),
            ErrorKind.CONTENT_BLOCKED,
            False,
            None,
            "safety system",
            id="400-image_generation_user_error-without-code",
        ),
        pytest.param(
            fake_api.invalid_value("quality"),
            ErrorKind.INVALID_REQUEST,
            False,
            None,
            "Invalid value for 'quality'",
            id="400-invalid_value",
        ),
        pytest.param(
            fake_api.unprocessable(),
            ErrorKind.INVALID_REQUEST,
            False,
            None,
            "could not be processed",
            id="422",
        ),
        pytest.param(
            fake_api.forbidden_region(),
            ErrorKind.AUTH,
            False,
            None,
            "Country, region, or territory not supported",
            id="403-region",
        ),
        pytest.param(
            fake_api.insufficient_quota(),
            ErrorKind.QUOTA_EXHAUSTED,
            False,
            None,
            "exceeded your current quota",
            id="429-insufficient_quota",
        ),
        pytest.param(
            fake_api.rate_limited(),
            ErrorKind.RATE_LIMITED,
            True,
            None,
            "Rate limit reached",
            id="429-no-retry-after",
        ),
        pytest.param(
            fake_api.rate_limited(retry_after="7"),
            ErrorKind.RATE_LIMITED,
            True,
            7.0,
            "Rate limit reached",
            id="429-retry-after-seconds",
        ),
        pytest.param(
            fake_api.rate_limited(retry_after_ms="1500", retry_after="2"),
            ErrorKind.RATE_LIMITED,
            True,
            1.5,
            "Rate limit reached",
            id="429-retry-after-ms-wins",
        ),
        pytest.param(
            fake_api.rate_limited(retry_after="3", should_retry=False),
            ErrorKind.RATE_LIMITED,
            False,
            3.0,
            "Rate limit reached",
            id="429-x-should-retry-false",
        ),
        pytest.param(
            fake_api.rate_limited(should_retry=True),
            ErrorKind.RATE_LIMITED,
            True,
            None,
            "Rate limit reached",
            id="429-x-should-retry-true",
        ),
        pytest.param(
            fake_api.server_error(500),
            ErrorKind.TRANSIENT,
            True,
            None,
            "The server had an error",
            id="500",
        ),
        pytest.param(
            fake_api.server_error(502),
            ErrorKind.PROVIDER_DOWN,
            True,
            None,
            "502 Gateway",
            id="502-html",
        ),
        pytest.param(
            fake_api.server_error(503, retry_after="11"),
            ErrorKind.PROVIDER_DOWN,
            True,
            11.0,
            "currently overloaded",
            id="503-retry-after",
        ),
        pytest.param(
            fake_api.server_error(504),
            ErrorKind.PROVIDER_DOWN,
            True,
            None,
            "504 Gateway",
            id="504-html",
        ),
        pytest.param(
            Fault(status=500, body=b"", content_type="text/plain"),
            ErrorKind.TRANSIENT,
            True,
            None,
            "(empty body)",
            id="500-empty",
        ),
        pytest.param(
            fake_api.malformed_json(),
            ErrorKind.BAD_RESPONSE,
            True,
            None,
            "not JSON",
            id="200-malformed-json",
        ),
        pytest.param(
            fake_api.wrong_content_type(),
            ErrorKind.BAD_RESPONSE,
            True,
            None,
            "captive portal",
            id="200-html",
        ),
        pytest.param(
            fake_api.not_an_image(),
            ErrorKind.BAD_RESPONSE,
            True,
            None,
            "not an image",
            id="200-base64-of-garbage",
        ),
        pytest.param(
            fake_api.bad_base64(),
            ErrorKind.BAD_RESPONSE,
            True,
            None,
            "not valid base64",
            id="200-invalid-base64",
        ),
        pytest.param(
            fake_api.no_image(),
            ErrorKind.BAD_RESPONSE,
            True,
            None,
            "holds no image",
            id="200-no-data",
        ),
    ],
)
async def test_maps_every_error_answer(
    fake: FakeOpenAI,
    provider: OpenAIProvider,
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
    assert error.message.startswith("openai: ")
    assert 1.0 not in progress.values


def _spelled(body: str) -> Fault:
    image = fake_api.noise_image((16, 16), "webp")
    text = body.replace("IMAGE", base64.b64encode(image).decode())
    return Fault(status=200, body=text.encode())


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('{"created": 1, "data": [{"b64_json": "IMAGE"}]}', id="plain"),
        pytest.param('{"data":[{"b64_json" :\n "IMAGE"}]}', id="whitespace"),
        pytest.param(
            '{"note": {"b64_json": "QUJD"}, "data": [{"b64_json": "IMAGE"}]}', id="decoy-first"
        ),
        pytest.param(
            '{"data": [{"revised_prompt": "say \\"b64_json\\": \\"QUJD\\"", "b64_json": "IMAGE"}]}',
            id="key-quoted-in-a-string",
        ),
    ],
)
async def test_the_image_is_found_however_the_json_is_laid_out(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt, body: str
) -> None:
    fake.fail_next(_spelled(body))
    image = await provider.generate(request_for(compiled), Progress())
    assert decoded(image.data).size == (16, 16)


async def test_escaped_slashes_in_the_base64_are_understood(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    """JSON may escape '/' as '\\/'; the shortcut past the parser must not choke on it."""
    raw = fake_api.noise_image((16, 16), "webp")
    encoded = base64.b64encode(raw).decode()
    while "/" not in encoded:  # noise makes a '/' near certain; make sure of it
        raw = fake_api.noise_image((16, 16), "webp")
        encoded = base64.b64encode(raw).decode()
    body = '{"data": [{"b64_json": "' + encoded.replace("/", "\\/") + '"}]}'
    fake.fail_next(Fault(status=200, body=body.encode()))
    image = await provider.generate(request_for(compiled), Progress())
    assert hashlib.sha256(image.data).digest() == hashlib.sha256(raw).digest()


async def test_http_date_retry_after_becomes_seconds(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    fake.fail_next(fake_api.rate_limited(retry_after=fake_api.http_date(30)))

    error = await failure(provider, request_for(compiled))

    assert error.code == ErrorKind.RATE_LIMITED
    assert error.retryable is True
    assert error.retry_after is not None
    assert 27 <= error.retry_after <= 30


async def test_the_request_id_is_kept_for_support(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    fake.fail_next(fake_api.moderation_blocked())

    error = await failure(provider, request_for(compiled))

    assert "[request req_" in error.message
    assert "image_generation_user_error/moderation_blocked" in error.message


async def test_a_wrong_key_is_an_auth_failure(
    fake: FakeOpenAI, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    provider = provider_for(fake, session, api_key="sk-wrong-key-000")

    error = await failure(provider, request_for(compiled))

    assert error.code == ErrorKind.AUTH
    assert error.retryable is False
    assert "Incorrect API key provided" in error.message


async def test_an_unknown_model_is_an_invalid_request(
    provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    error = await failure(provider, request_for(compiled, model="gpt-image-9"))

    assert error.code == ErrorKind.INVALID_REQUEST
    assert error.retryable is False
    assert "model_not_found" in error.message
    assert "HTTP 404" in error.message


async def test_a_size_the_model_refuses_is_an_invalid_request(
    provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    error = await failure(provider, request_for(compiled, model="gpt-image-1"))

    assert error.code == ErrorKind.INVALID_REQUEST
    assert "(param size)" in error.message


async def test_a_slow_answer_times_out(
    fake: FakeOpenAI, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    provider = provider_for(fake, session, timeout=0.3)
    fake.fail_next(fake_api.slow(5))

    error = await failure(provider, request_for(compiled))

    assert error.code == ErrorKind.TIMEOUT
    assert error.retryable is True


async def test_a_closed_port_means_the_provider_is_down(
    session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    provider = OpenAIProvider(OpenAIConfig(api_key=API_KEY, base_url=closed_port_url()), session)

    error = await failure(provider, request_for(compiled))

    assert error.code == ErrorKind.PROVIDER_DOWN
    assert error.retryable is True


def closed_port_url() -> str:
    """A loopback port nothing listens on: bound for a moment, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_errors_survive_pickling_with_their_verdict() -> None:
    error = ProviderError("rate_limited", "openai: slow down", retryable=False, retry_after=3.0)

    restored = pickle.loads(pickle.dumps(error))

    assert (restored.code, restored.retryable, restored.retry_after) == ("rate_limited", False, 3.0)


# --- health ------------------------------------------------------------------------------------


async def test_health_reads_the_model_card(fake: FakeOpenAI, provider: OpenAIProvider) -> None:
    assert await provider.health() is True

    [sent] = fake.requests
    assert (sent.method, sent.path) == ("GET", "/v1/models/gpt-image-2")
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize(
    "fault",
    [
        fake_api.server_error(500),
        fake_api.server_error(503),
        fake_api.insufficient_quota(),
    ],
    ids=["500", "503", "no-credit"],
)
async def test_health_is_false_when_generation_would_fail(
    fake: FakeOpenAI, provider: OpenAIProvider, fault: Fault
) -> None:
    fake.fail_next(fault)

    assert await provider.health() is False


async def test_health_is_true_while_merely_throttled(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.fail_next(fake_api.rate_limited(retry_after="5"))

    assert await provider.health() is True


async def test_health_is_false_with_a_wrong_key_or_no_server(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    assert await provider_for(fake, session, api_key="sk-wrong-key-000").health() is False
    unreachable = OpenAIConfig(api_key=API_KEY, base_url=closed_port_url())
    assert await OpenAIProvider(unreachable, session).health() is False


async def test_health_is_false_when_the_probe_times_out(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.fail_next(fake_api.slow(5))

    assert await provider_for(fake, session, timeout=0.3).health() is False


# --- prices ------------------------------------------------------------------------------------


def test_default_prices_follow_the_published_tables() -> None:
    assert DEFAULT_PRICES.price("openai", "gpt-image-1", quality="low", size="1024x1024") == 0.011
    assert DEFAULT_PRICES.price("openai", "gpt-image-1", quality="high", size="1536x1024") == 0.25
    assert DEFAULT_PRICES.price(
        "openai", "gpt-image-1-mini", quality="medium", size="1024x1536"
    ) == (0.015)
    assert DEFAULT_PRICES.price("openai", "gpt-image-2", quality="medium", size="1024x1024") == (
        0.042
    )
    assert DEFAULT_PRICES.price("stability", "ultra") == 0.08
    assert DEFAULT_PRICES.price("stability", "sd3.5-large") == 0.065
    assert DEFAULT_PRICES.price("stability", "sd3.5-large-turbo") == 0.04
    assert DEFAULT_PRICES.price("stability", "sd3.5-medium") == 0.035
    assert DEFAULT_PRICES.price("stability", "core") == 0.03


def test_prices_fall_back_from_exact_to_model_default_to_zero() -> None:
    table = PriceTable.from_json(
        '{"openai": {"m": {"default": 0.2, "low": {"1024x1024": 0.01, "default": 0.02}}},'
        ' "stability": {"core": 0.03}}'
    )

    assert table.price("openai", "m", quality="low", size="1024x1024") == 0.01
    assert table.price("openai", "m", quality="low", size="2048x2048") == 0.02
    assert table.price("openai", "m", quality="ultra", size="1024x1024") == 0.2
    assert table.price("openai", "m") == 0.2
    assert table.price("stability", "core", quality="high") == 0.03
    assert table.price("openai", "unknown") == 0.0
    assert table.price("nobody", "m") == 0.0


def test_an_override_replaces_whole_models_and_keeps_the_rest() -> None:
    override = PriceTable.from_json('{"openai": {"gpt-image-1": 0.1}}')

    merged = DEFAULT_PRICES.merged(override)

    assert merged.price("openai", "gpt-image-1", quality="low", size="1024x1024") == 0.1
    assert merged.price("openai", "gpt-image-1-mini", quality="low", size="1024x1024") == 0.005
    assert merged.price("stability", "core") == 0.03


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"openai": 3}',
        '{"openai": {"m": -1}}',
        '{"openai": {"m": true}}',
        '{"openai": {"m": "cheap"}}',
        '{"openai": {"m": {"low": {"1024x1024": null}}}}',
    ],
)
def test_a_broken_price_override_fails_loudly(text: str) -> None:
    with pytest.raises(ValueError, match=r"price|JSON|object"):
        PriceTable.from_json(text)


def test_a_price_table_cannot_be_changed_behind_its_back() -> None:
    source: dict[PriceKey, float] = {("openai", "m", None, None): 1.0}
    table = PriceTable(source)

    source[("openai", "m", None, None)] = 9.0

    assert table.price("openai", "m") == 1.0
    with pytest.raises(TypeError):
        table.entries[("openai", "m", None, None)] = 2.0  # type: ignore[index]


async def test_health_is_false_when_the_model_is_gone(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    provider = provider_for(fake, session, probe_model="gpt-image-0")

    assert await provider.health() is False
    assert fake.requests[0].path == "/v1/models/gpt-image-0"


# --- the intake bound ----------------------------------------------------------------------


async def test_the_body_waits_for_intake_room_outside_the_timeout(
    fake: FakeOpenAI, session: aiohttp.ClientSession, compiled: CompiledPrompt
) -> None:
    provider = provider_for(fake, session, timeout=0.5)

    image, _ = await generate_behind_a_full_gate(
        lambda request: provider.generate(request, Progress()),
        request_for(compiled),
        hold_seconds=0.8,
    )

    assert decoded(image.data).format == "WEBP"


async def test_an_error_answer_takes_no_intake_room(
    fake: FakeOpenAI, provider: OpenAIProvider, compiled: CompiledPrompt
) -> None:
    fake.fail_next(fake_api.rate_limited())
    watched = WatchedTicket(IntakeGate(1).ticket())

    error = await failure(provider, dataclasses.replace(request_for(compiled), intake=watched))

    assert error.code == ErrorKind.RATE_LIMITED
    assert watched.admits == 0
