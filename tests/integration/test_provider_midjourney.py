"""The Midjourney adapter against a proxy fake speaking the real wire protocol over loopback."""

from __future__ import annotations

import dataclasses
import io
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image, ImageStat

from caverna.prompting.dialects.base import CompiledPrompt
from caverna.providers.base import ErrorKind, GenerationRequest, ProviderError
from caverna.providers.http import new_session
from caverna.providers.midjourney import (
    POLL_STRIKES,
    SECRET_HEADER,
    MidjourneyConfig,
    MidjourneyProvider,
)
from tests.fakes.midjourney_server import (
    NOISE_SHARE,
    QUADRANT_COLORS,
    Accept,
    Fail,
    Flavour,
    ForeignImage,
    MidjourneyProxyFake,
    Queued,
    Reply,
    Slow,
    Stall,
    Vanish,
    WebpImage,
)
from tests.integration.intake_helpers import generate_behind_a_full_gate
from tests.integration.provider_helpers import Progress, compile_for, generation_request

SECRET = "s3cret-for-tests"
TILE = (48, 48)
JOB_ID = "job-0001"


@pytest.fixture(scope="module")
def compiled() -> CompiledPrompt:
    return compile_for("midjourney")


@pytest.fixture
def request_for(compiled: CompiledPrompt) -> GenerationRequest:
    return generation_request(compiled, job_id=JOB_ID)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as client:
        yield client


@pytest.fixture
async def fake() -> AsyncIterator[MidjourneyProxyFake]:
    server = MidjourneyProxyFake(secret=SECRET, tile_size=TILE)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def trueai() -> AsyncIterator[MidjourneyProxyFake]:
    server = MidjourneyProxyFake(secret=SECRET, tile_size=TILE, flavour="trueai")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def refused_url() -> str:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def make(
    base_url: str,
    session: aiohttp.ClientSession,
    *,
    secret: str | None = SECRET,
    upscale: int | None = 1,
    grid_quadrant: int = 1,
    timeout: float = 5.0,
) -> MidjourneyProvider:
    config = MidjourneyConfig(
        base_url=base_url,
        secret=secret,
        upscale=upscale,
        poll_interval=0.01,
        timeout=timeout,
        grid_quadrant=grid_quadrant,
    )
    return MidjourneyProvider(config, session)


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def looks_like_quadrant(image: Image.Image, quadrant: int) -> bool:
    """The fake paints quadrant n in QUADRANT_COLORS[n-1] under a little noise."""
    expected = [(1 - NOISE_SHARE) * c + NOISE_SHARE * 127.5 for c in QUADRANT_COLORS[quadrant - 1]]
    mean = ImageStat.Stat(image.convert("RGB")).mean
    return all(abs(m - e) < 20 for m, e in zip(mean, expected, strict=True))


async def failure(
    provider: MidjourneyProvider, request: GenerationRequest, progress: Progress | None = None
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.generate(request, progress or Progress())
    return caught.value


# --- success -------------------------------------------------------------------------------------


async def test_upscale_returns_midjourneys_upscale_of_the_chosen_quadrant(
    fake: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    progress = Progress()

    image = await make(fake.base_url, session, upscale=3).generate(request_for, progress)

    picture = opened(image.data)
    assert picture.format == "PNG"
    assert image.content_type == "image/png"
    assert picture.size == (TILE[0] * 2, TILE[1] * 2)  # the upscale, not a grid tile
    assert looks_like_quadrant(picture, 3)
    assert image.model == "midjourney-v7"  # from the prompt's own --v 7
    assert image.seed is None  # novicezk reports no seed
    assert image.cost_usd == 0.0
    assert image.latency_ms > 0
    assert progress.values == sorted(set(progress.values))
    assert progress.values[-1] == 1.0
    assert any(0 < v < 0.7 for v in progress.values)  # the grid's share
    assert any(0.7 < v < 1.0 for v in progress.values)  # the upscale's share


async def test_upscale_sends_the_imagine_then_the_change_for_that_task(
    fake: MidjourneyProxyFake,
    session: aiohttp.ClientSession,
    request_for: GenerationRequest,
    compiled: CompiledPrompt,
) -> None:
    await make(fake.base_url, session, upscale=2).generate(request_for, Progress())

    [imagine] = fake.requests_to("/mj/submit/imagine")
    assert imagine.method == "POST"
    assert imagine.json == {"prompt": compiled.payload["prompt"], "state": JOB_ID}
    [change] = fake.requests_to("/mj/submit/change")
    [grid_id] = [t.id for t in fake.tasks.values() if t.action == "IMAGINE"]
    assert change.json == {"taskId": grid_id, "action": "UPSCALE", "index": 2, "state": JOB_ID}
    assert all(r.headers.get(SECRET_HEADER) == SECRET for r in fake.requests)
    # only the final image is downloaded: neither the grid nor the in-progress previews
    [download] = fake.requests_to("/mj/image/")
    [upscale_id] = [t.id for t in fake.tasks.values() if t.action == "UPSCALE"]
    assert download.path == f"/mj/image/{upscale_id}.png"
    assert len(fake.requests_to(f"/mj/task/{grid_id}/fetch")) == 2 + 3 + 1  # every state, once


async def test_grid_split_crops_the_chosen_quadrant_without_an_upscale(
    fake: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    progress = Progress()
    provider = make(fake.base_url, session, upscale=None, grid_quadrant=2)

    image = await provider.generate(request_for, progress)

    picture = opened(image.data)
    assert picture.format == "WEBP"  # the crop is encoded straight into the delivery format
    assert image.content_type == "image/webp"
    assert picture.size == TILE
    assert looks_like_quadrant(picture, 2)
    assert fake.requests_to("/mj/submit/change") == []
    assert len(fake.requests_to("/mj/image/")) == 1
    assert progress.values == sorted(set(progress.values))
    assert progress.values[-1] == 1.0
    assert any(0.7 < v < 1.0 for v in progress.values)  # the grid alone covers the whole bar


async def test_trueai_reports_the_seed_and_a_webp_is_recognised_by_its_bytes(
    trueai: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    trueai.script = [Accept(), WebpImage()]

    image = await make(trueai.base_url, session, upscale=4).generate(request_for, Progress())

    [upscale] = [t for t in trueai.tasks.values() if t.action == "UPSCALE"]
    assert image.seed == int(upscale.seed)
    assert image.content_type == "image/webp"
    assert opened(image.data).format == "WEBP"
    assert looks_like_quadrant(opened(image.data), 4)


async def test_a_queued_submit_is_polled_like_an_accepted_one(
    fake: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    fake.script = [Queued(ahead=4)]

    image = await make(fake.base_url, session).generate(request_for, Progress())

    assert opened(image.data).size == (TILE[0] * 2, TILE[1] * 2)


# --- submit errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "kind", "retryable"),
    [
        (Reply(23, "队列已满\uff0c请稍后尝试"), ErrorKind.RATE_LIMITED, True),
        (
            Reply(24, "可能包含敏感词", {"promptEn": "x", "bannedWord": "gore"}),
            ErrorKind.CONTENT_BLOCKED,
            False,
        ),
        (Reply(3, "无可用的账号实例"), ErrorKind.PROVIDER_DOWN, True),
        (Reply(4, "prompt不能为空"), ErrorKind.INVALID_REQUEST, False),
        (Reply(9, "系统异常"), ErrorKind.TRANSIENT, True),
        (Reply(3, "关联任务不存在或已失效", status=404), ErrorKind.INVALID_REQUEST, False),
        (Reply(42, "something new"), ErrorKind.BAD_RESPONSE, True),
        (Reply(1, "提交成功", result=None), ErrorKind.BAD_RESPONSE, True),
    ],
    ids=["queue-full", "banned", "no-account", "validation", "failure", "404", "unknown", "no-id"],
)
async def test_imagine_codes_map_to_the_taxonomy(
    fake: MidjourneyProxyFake,
    session: aiohttp.ClientSession,
    request_for: GenerationRequest,
    reply: Reply,
    kind: ErrorKind,
    retryable: bool,
) -> None:
    fake.script = [reply]

    error = await failure(make(fake.base_url, session), request_for)

    assert (error.code, error.retryable) == (kind.value, retryable)
    assert fake.requests_to("/mj/task/") == []  # nothing to poll


async def test_a_banned_word_is_named_in_the_error(
    session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    server = MidjourneyProxyFake(banned_words=("gore",))
    await server.start()
    try:
        error = await failure(make(server.base_url, session, secret=None), request_for)
    finally:
        await server.stop()

    assert error.code == ErrorKind.CONTENT_BLOCKED
    assert not error.retryable
    assert "'gore'" in error.message


async def test_a_refused_upscale_is_classified_too(
    trueai: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    trueai.script = [Accept(), Reply(3, "关联任务不存在或已失效", status=404)]

    error = await failure(make(trueai.base_url, session), request_for)

    assert (error.code, error.retryable) == (ErrorKind.INVALID_REQUEST, False)
    assert len(trueai.requests_to("/mj/submit/change")) == 1


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
@pytest.mark.parametrize("secret", [None, "wrong"])
async def test_a_missing_or_wrong_secret_is_an_auth_error(
    session: aiohttp.ClientSession,
    request_for: GenerationRequest,
    flavour: Flavour,
    secret: str | None,
) -> None:
    server = MidjourneyProxyFake(secret=SECRET, flavour=flavour)
    await server.start()
    try:
        error = await failure(make(server.base_url, session, secret=secret), request_for)
        health = await make(server.base_url, session, secret=secret).health()
    finally:
        await server.stop()

    assert (error.code, error.retryable) == (ErrorKind.AUTH, False)
    assert "401" in error.message
    assert health is False


# --- task failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "kind", "retryable"),
    [
        ("Banned prompt detected", ErrorKind.CONTENT_BLOCKED, False),
        ("Request cancelled due to image filters (moderation)", ErrorKind.CONTENT_BLOCKED, False),
        ("任务超时", ErrorKind.TIMEOUT, True),
        ("Job timeout", ErrorKind.TIMEOUT, True),
        ("[Invalid parameter] Invalid value for --stylize", ErrorKind.INVALID_REQUEST, False),
        ("Internal Error: please try again", ErrorKind.TRANSIENT, True),
        ("", ErrorKind.TRANSIENT, True),
    ],
    ids=["banned", "moderation", "timeout-zh", "timeout", "invalid", "other", "empty"],
)
async def test_a_failed_task_is_classified_by_its_reason(
    fake: MidjourneyProxyFake,
    session: aiohttp.ClientSession,
    request_for: GenerationRequest,
    reason: str,
    kind: ErrorKind,
    retryable: bool,
) -> None:
    fake.script = [Fail(reason)]

    error = await failure(make(fake.base_url, session), request_for)

    assert (error.code, error.retryable) == (kind.value, retryable)
    assert reason in error.message
    assert fake.requests_to("/mj/submit/change") == []


async def test_a_failed_upscale_stops_the_generation(
    fake: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    fake.script = [Accept(), Fail("Banned prompt detected")]

    error = await failure(make(fake.base_url, session), request_for)

    assert error.code == ErrorKind.CONTENT_BLOCKED
    assert fake.requests_to("/mj/image/") == []


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
async def test_a_task_the_proxy_does_not_know_is_given_up_after_a_few_polls(
    session: aiohttp.ClientSession, request_for: GenerationRequest, flavour: Flavour
) -> None:
    server = MidjourneyProxyFake(flavour=flavour)
    server.script = [Vanish()]
    await server.start()
    try:
        error = await failure(make(server.base_url, session, secret=None), request_for)
    finally:
        await server.stop()

    assert (error.code, error.retryable) == (ErrorKind.BAD_RESPONSE, True)
    assert len(server.requests_to("/mj/task/")) == POLL_STRIKES


# --- timeouts, transport, trust ------------------------------------------------------------------


async def test_a_task_that_never_finishes_times_out(
    fake: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    fake.script = [Stall()]
    progress = Progress()

    error = await failure(make(fake.base_url, session, timeout=0.3), request_for, progress)

    assert (error.code, error.retryable) == (ErrorKind.TIMEOUT, True)
    [task_id] = fake.tasks
    assert task_id in error.message  # the operator can find it on the proxy
    assert progress.values[-1] == pytest.approx(0.12 * 0.7)  # "12%" of the grid's 0..0.7


async def test_a_slow_proxy_times_out(
    fake: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    fake.script = [Slow(delay=2.0)]

    error = await failure(make(fake.base_url, session, timeout=0.3), request_for)

    assert (error.code, error.retryable) == (ErrorKind.TIMEOUT, True)


async def test_connection_refused_means_the_provider_is_down(
    refused_url: str, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    provider = make(refused_url, session)

    error = await failure(provider, request_for)

    assert (error.code, error.retryable) == (ErrorKind.PROVIDER_DOWN, True)
    assert await provider.health() is False


async def test_an_image_on_another_host_is_never_fetched(
    fake: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    # "localhost" reaches the same fake, so a download would show up in its log
    fake.script = [Accept(), ForeignImage(host="localhost")]

    error = await failure(make(fake.base_url, session), request_for)

    assert (error.code, error.retryable) == (ErrorKind.BAD_RESPONSE, True)
    assert "localhost" in error.message
    assert fake.requests_to("/mj/image/") == []


async def test_only_the_proxys_own_origin_is_trusted_for_images(
    session: aiohttp.ClientSession,
) -> None:
    provider = make("http://proxy.internal:8080", session)

    trusted = provider.trusted_image_url("/mj/image/1.png")
    assert str(trusted) == "http://proxy.internal:8080/mj/image/1.png"
    assert provider.trusted_image_url("HTTP://Proxy.Internal:8080/a.webp").path == "/a.webp"
    for foreign in (
        "https://cdn.discordapp.com/attachments/1/2/grid.png",
        "https://proxy.internal:8080/a.png",  # another scheme
        "http://proxy.internal/a.png",  # another port
        "http://proxy.internal:8081/a.png",
        "//evil.example/a.png",  # scheme-relative: another host
        "",
        None,
    ):
        with pytest.raises(ProviderError) as caught:
            provider.trusted_image_url(foreign)
        assert caught.value.code == ErrorKind.BAD_RESPONSE


# --- health, configuration, contract -------------------------------------------------------------


async def test_health_reads_the_queue_or_the_task_list(
    fake: MidjourneyProxyFake, trueai: MidjourneyProxyFake, session: aiohttp.ClientSession
) -> None:
    assert await make(fake.base_url, session).health() is True
    assert fake.requests_to("/mj/task/queue")[0].headers[SECRET_HEADER] == SECRET
    assert await make(trueai.base_url, session).health() is True  # trueai: /queue is gone
    assert [r.path for r in trueai.requests] == ["/mj/task/queue", "/mj/task/list"]


async def test_a_prompt_for_another_provider_is_refused_before_any_traffic(
    fake: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    other = compile_for("sdwebui")

    error = await failure(
        make(fake.base_url, session), dataclasses.replace(request_for, compiled=other)
    )

    assert (error.code, error.retryable) == (ErrorKind.INVALID_REQUEST, False)
    assert fake.requests == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"upscale": 0},
        {"upscale": 5},
        {"grid_quadrant": 5},
        {"poll_interval": 0},
        {"timeout": -1},
        {"base_url": "proxy:8080"},
    ],
)
def test_a_config_that_cannot_work_is_refused(overrides: dict[str, Any]) -> None:
    options: dict[str, Any] = {"base_url": "http://proxy:8080", **overrides}
    with pytest.raises(ValueError, match=r"\S"):
        MidjourneyConfig(**options)


# --- the intake bound ----------------------------------------------------------------------


async def test_the_download_waits_for_intake_room_outside_the_timeout(
    fake: MidjourneyProxyFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    provider = make(fake.base_url, session, upscale=3, timeout=2.0)

    image, _ = await generate_behind_a_full_gate(
        lambda request: provider.generate(request, Progress()), request_for, hold_seconds=2.2
    )

    assert opened(image.data).format == "PNG"
