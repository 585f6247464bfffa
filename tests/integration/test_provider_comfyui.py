"""The ComfyUI adapter against a fake ComfyUI over real HTTP and websockets on loopback."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import io
import itertools
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from caverna.prompting.dialects.base import CompiledPrompt
from caverna.providers.base import (
    ErrorKind,
    GenerationRequest,
    ImageProvider,
    ProgressCallback,
    ProviderError,
)
from caverna.providers.comfyui import ComfyUIConfig, ComfyUIProvider
from caverna.providers.http import new_session
from tests.fakes.comfyui_server import FakeComfyUI, Misbehaviour, RecordedRequest
from tests.integration.intake_helpers import generate_behind_a_full_gate
from tests.integration.provider_helpers import Progress, compile_for, generation_request

FRAME = "onboarding/the-invitation"
SEED = 3
POLL = 0.005


@pytest.fixture(scope="module")
def compiled() -> CompiledPrompt:
    return compile_for("comfyui", FRAME, SEED)


@pytest.fixture
def request_(compiled: CompiledPrompt) -> GenerationRequest:
    return generation_request(compiled, job_id="job-1")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as client:
        yield client


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyUI]:
    async with FakeComfyUI() as server:
        yield server


def provider(base_url: str, session: aiohttp.ClientSession, **options: Any) -> ComfyUIProvider:
    settings: dict[str, Any] = {"poll_interval": POLL, "timeout": 5.0, **options}
    return ComfyUIProvider(ComfyUIConfig(base_url=base_url, **settings), session)


def with_graph(request: GenerationRequest, graph: dict[str, Any]) -> GenerationRequest:
    payload = {**request.compiled.payload, "prompt": graph}
    return dataclasses.replace(
        request, compiled=dataclasses.replace(request.compiled, payload=payload)
    )


def graph_of(request: GenerationRequest) -> dict[str, Any]:
    graph: dict[str, Any] = copy.deepcopy(request.compiled.payload["prompt"])
    return graph


async def failure(comfy: ComfyUIProvider, request: GenerationRequest) -> ProviderError:
    return await failure_with(comfy, request, Progress())


async def failure_with(
    comfy: ComfyUIProvider, request: GenerationRequest, progress: ProgressCallback
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await comfy.generate(request, progress)
    return caught.value


def the_prompt_post(fake: FakeComfyUI) -> RecordedRequest:
    (post,) = fake.requests_to("POST", "/prompt")
    return post


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- success -------------------------------------------------------------------------------------


async def test_generates_over_the_websocket(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    progress = Progress()
    comfy = provider(fake.base_url, session)
    assert isinstance(comfy, ImageProvider)

    image = await comfy.generate(request_, progress)

    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.format == "PNG"
        # 768x1344 latent, capped to 64 on the long side by the fake
        assert decoded.size == (37, 64)
        assert json.loads(decoded.info["prompt"]) == request_.compiled.payload["prompt"]
    assert image.content_type == "image/png"
    assert image.seed == SEED
    assert image.model == "sd_xl_base_1.0.safetensors"
    assert image.cost_usd == 0.0
    assert image.latency_ms > 0
    values = progress.values
    assert values[0] == pytest.approx(0.05)
    assert values[-1] == 1.0
    assert all(a < b for a, b in itertools.pairwise(values))
    steps = request_.compiled.payload["prompt"]["3"]["inputs"]["steps"]
    assert len([v for v in values if 0.05 < v < 1.0]) == steps  # one report per sampler step
    (view,) = fake.requests_to("GET", "/view")
    assert view.query == {
        "filename": "capitao-caverna_00001_.png",
        "subfolder": "caverna",
        "type": "output",
    }


async def test_prompt_body_and_ids(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    comfy = provider(fake.base_url, session)
    await comfy.generate(request_, Progress())

    post = the_prompt_post(fake)
    assert set(post.body) == {"prompt", "client_id", "prompt_id"}
    assert post.body["prompt"] == request_.compiled.payload["prompt"]
    (client_id,) = fake.ws_client_ids
    assert post.body["client_id"] == client_id
    assert uuid.UUID(hex=client_id).hex == client_id
    prompt_id = post.body["prompt_id"]
    assert str(uuid.UUID(prompt_id)) == prompt_id  # canonical and lowercase
    assert uuid.UUID(prompt_id).version == 4
    assert "Origin" not in post.headers  # the origin check would refuse it
    paths = [(r.method, r.path) for r in fake.requests]
    assert paths.index(("GET", "/ws")) < paths.index(("POST", "/prompt"))
    assert ("GET", f"/history/{prompt_id}") in paths

    await comfy.generate(request_, Progress())
    second = fake.requests_to("POST", "/prompt")[1]
    assert second.body["prompt_id"] != prompt_id
    assert second.body["client_id"] == fake.ws_client_ids[1] != client_id


async def test_view_query_is_url_encoded(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    graph = graph_of(request_)
    graph["9"]["inputs"]["filename_prefix"] = "brand & co/Capitão #1?"
    image = await provider(fake.base_url, session).generate(with_graph(request_, graph), Progress())

    assert image.data == fake.files[("output", "brand & co", "Capitão #1?_00001_.png")]


async def test_polls_history_without_a_websocket(
    session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    progress = Progress()
    async with FakeComfyUI(step_delay=0.001) as fake:
        image = await provider(fake.base_url, session, use_websocket=False).generate(
            request_, progress
        )

    assert Image.open(io.BytesIO(image.data)).size == (37, 64)
    assert fake.ws_client_ids == []
    assert not fake.requests_to("GET", "/ws")
    assert len(fake.requests_to("GET", f"/history/{the_prompt_post(fake).body['prompt_id']}")) > 1
    assert progress.values == [pytest.approx(0.05), pytest.approx(0.95), 1.0]


async def test_falls_back_to_polling_when_the_websocket_is_refused(
    session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    async with FakeComfyUI(websocket_enabled=False, step_delay=0.001) as fake:
        image = await provider(fake.base_url, session).generate(request_, Progress())

    assert image.seed == SEED
    assert fake.requests_to("GET", "/ws")
    assert len(fake.requests_to("GET", "/view")) == 1


async def test_falls_back_to_polling_when_the_websocket_drops_mid_run(
    session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    progress = Progress()
    async with FakeComfyUI(step_delay=0.005) as fake:
        fake.script.append(Misbehaviour.DROP_WEBSOCKET)
        image = await provider(fake.base_url, session).generate(request_, progress)

    assert Image.open(io.BytesIO(image.data)).format == "PNG"
    prompt_id = the_prompt_post(fake).body["prompt_id"]
    assert len(fake.requests_to("GET", f"/history/{prompt_id}")) > 1  # polled while it ran on
    sampled = [v for v in progress.values if 0.05 < v < 0.95]
    assert sampled  # steps before the drop were reported
    assert progress.values[-1] == 1.0
    assert all(a < b for a, b in itertools.pairwise(progress.values))


async def test_routes_under_the_api_prefix(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    comfy = provider(f"{fake.base_url}/api/", session)
    await comfy.generate(request_, Progress())

    assert await comfy.health()
    assert {r.path.split("/")[2] for r in fake.requests} == {
        "ws",
        "prompt",
        "history",
        "view",
        "system_stats",
    }
    assert all(r.path.startswith("/api/") for r in fake.requests)


async def test_uses_the_server_assigned_prompt_id_from_older_servers(
    session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    async with FakeComfyUI(assigns_prompt_ids=True) as fake:
        image = await provider(fake.base_url, session).generate(request_, Progress())

    assert image.seed == SEED
    sent = the_prompt_post(fake).body["prompt_id"]
    (assigned,) = fake.history
    assert assigned != sent
    assert fake.requests_to("GET", f"/history/{assigned}")
    assert not fake.requests_to("GET", f"/history/{sent}")


async def test_health(fake: FakeComfyUI, session: aiohttp.ClientSession) -> None:
    assert await provider(fake.base_url, session).health()
    assert await provider(f"http://127.0.0.1:{free_port()}", session).health() is False
    assert fake.requests_to("GET", "/system_stats")


# --- rejected prompts ----------------------------------------------------------------------------


async def test_missing_checkpoint_is_an_invalid_request_naming_the_node(
    session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    async with FakeComfyUI(checkpoints=["flux1-dev.safetensors"]) as fake:
        error = await failure(provider(fake.base_url, session), request_)

    assert error.code == ErrorKind.INVALID_REQUEST
    assert error.retryable is False
    assert "prompt_outputs_failed_validation" in error.message
    assert "node 4 (CheckpointLoaderSimple)" in error.message
    assert "value_not_in_list" in error.message
    assert "sd_xl_base_1.0.safetensors" in error.message
    assert fake.history == {}
    assert not fake.requests_to("GET", "/view")
    assert not fake.requests_to("POST", "/interrupt")  # nothing was queued to abandon


async def test_plain_string_errors_from_older_servers(
    session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    async with FakeComfyUI(checkpoints=["flux1-dev.safetensors"], legacy_errors=True) as fake:
        error = await failure(provider(fake.base_url, session), request_)

    assert error.code == ErrorKind.INVALID_REQUEST
    assert "Prompt outputs failed validation" in error.message
    assert "node 4 (CheckpointLoaderSimple) value_not_in_list" in error.message


def _no_output(graph: dict[str, Any]) -> None:
    graph["9"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}


def _no_class_type(graph: dict[str, Any]) -> None:
    del graph["6"]["class_type"]


def _unknown_node(graph: dict[str, Any]) -> None:
    graph["8"]["class_type"] = "UltimateSDUpscale"


def _dangling_link(graph: dict[str, Any]) -> None:
    graph["3"]["inputs"]["positive"] = ["42", 0]


def _missing_input(graph: dict[str, Any]) -> None:
    del graph["3"]["inputs"]["steps"]


@pytest.mark.parametrize(
    ("break_graph", "expected"),
    [
        (_no_output, ["prompt_no_outputs", "Prompt has no outputs"]),
        (_no_class_type, ["missing the class_type property", "#6"]),
        (_unknown_node, ["missing_node_type", "UltimateSDUpscale"]),
        (_dangling_link, ["node 3 (KSampler) bad_linked_input", "'42'"]),
        (_missing_input, ["node 3 (KSampler) required_input_missing", "(steps)"]),
    ],
)
async def test_graphs_comfyui_rejects(
    fake: FakeComfyUI,
    session: aiohttp.ClientSession,
    request_: GenerationRequest,
    break_graph: Any,
    expected: list[str],
) -> None:
    graph = graph_of(request_)
    break_graph(graph)
    error = await failure(provider(fake.base_url, session), with_graph(request_, graph))

    assert error.code == ErrorKind.INVALID_REQUEST
    assert error.retryable is False
    for text in expected:
        assert text in error.message
    assert fake.history == {}


async def test_accepted_prompt_that_dropped_our_output_is_invalid(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    graph = graph_of(request_)
    graph["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    graph["9"]["inputs"]["images"] = ["99", 0]
    error = await failure(provider(fake.base_url, session), with_graph(request_, graph))

    assert error.code == ErrorKind.INVALID_REQUEST
    assert "node 9 (SaveImage) bad_linked_input" in error.message
    prompt_id = the_prompt_post(fake).body["prompt_id"]
    # The server still runs the other output; we asked it not to.
    assert {"delete": [prompt_id]} in [r.body for r in fake.requests_to("POST", "/queue")]
    assert {"prompt_id": prompt_id} in [r.body for r in fake.requests_to("POST", "/interrupt")]


async def test_accepted_prompt_with_errors_on_another_output_succeeds(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    graph = graph_of(request_)
    graph["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["99", 0]}}
    image = await provider(fake.base_url, session).generate(with_graph(request_, graph), Progress())

    assert image.content_type == "image/png"
    prompt_id = the_prompt_post(fake).body["prompt_id"]
    assert list(fake.history[prompt_id]["outputs"]) == ["9"]


async def test_a_payload_from_another_dialect_never_reaches_the_server(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    other = compile_for("preview", FRAME, SEED)
    error = await failure(
        provider(fake.base_url, session), dataclasses.replace(request_, compiled=other)
    )

    assert error.code == ErrorKind.INVALID_REQUEST
    assert fake.requests == []


# --- failures while running ----------------------------------------------------------------------


@pytest.mark.parametrize("use_websocket", [True, False], ids=["websocket", "polling"])
@pytest.mark.parametrize(
    ("misbehaviour", "kind", "expected"),
    [
        (Misbehaviour.OUT_OF_MEMORY, ErrorKind.TRANSIENT, "node 3 (KSampler) ran out of memory"),
        (
            Misbehaviour.NODE_EXCEPTION,
            ErrorKind.INVALID_REQUEST,
            "node 8 (VAEDecode) failed: RuntimeError: Given groups=1",
        ),
        (Misbehaviour.INTERRUPTED, ErrorKind.TRANSIENT, "interrupted on the server"),
    ],
)
async def test_execution_failures(
    fake: FakeComfyUI,
    session: aiohttp.ClientSession,
    request_: GenerationRequest,
    use_websocket: bool,
    misbehaviour: Misbehaviour,
    kind: ErrorKind,
    expected: str,
) -> None:
    fake.script.append(misbehaviour)
    error = await failure(provider(fake.base_url, session, use_websocket=use_websocket), request_)

    assert error.code == kind
    assert error.retryable is (kind is ErrorKind.TRANSIENT)
    assert expected in error.message
    assert "\n" not in error.message
    assert not fake.requests_to("GET", "/view")
    # A prompt that already ended is not cancelled again.
    assert not fake.requests_to("POST", "/interrupt")


async def test_forbidden_by_the_origin_check_is_auth(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    fake.script.append(Misbehaviour.FORBIDDEN)
    error = await failure(provider(fake.base_url, session), request_)

    assert error.code == ErrorKind.AUTH
    assert error.retryable is False
    assert "403" in error.message
    # The fake's check is the real one: a page from another origin is refused.
    async with session.get(
        f"{fake.base_url}/system_stats", headers={"Origin": "http://evil.example"}
    ) as response:
        assert response.status == 403


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, ErrorKind.TRANSIENT),
        (502, ErrorKind.PROVIDER_DOWN),
        (503, ErrorKind.PROVIDER_DOWN),
    ],
)
async def test_server_errors(
    session: aiohttp.ClientSession, request_: GenerationRequest, status: int, kind: ErrorKind
) -> None:
    async with FakeComfyUI(server_error_status=status) as fake:
        fake.script.append(Misbehaviour.SERVER_ERROR)
        error = await failure(provider(fake.base_url, session), request_)

    assert error.code == kind
    assert error.retryable is True
    assert str(status) in error.message


async def test_malformed_history_is_a_bad_response(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    fake.script.append(Misbehaviour.MALFORMED_HISTORY)
    error = await failure(provider(fake.base_url, session), request_)

    assert error.code == ErrorKind.BAD_RESPONSE
    assert error.retryable is True
    assert "malformed JSON" in error.message


async def test_view_sending_something_else_is_a_bad_response(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    fake.script.append(Misbehaviour.NOT_AN_IMAGE)
    error = await failure(provider(fake.base_url, session), request_)

    assert error.code == ErrorKind.BAD_RESPONSE
    assert error.retryable is True
    assert "not an image" in error.message


async def test_missing_output_file_is_a_bad_response(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    fake.script.append(Misbehaviour.FILE_MISSING)
    error = await failure(provider(fake.base_url, session), request_)

    assert error.code == ErrorKind.BAD_RESPONSE
    assert error.retryable is True
    assert "404" in error.message


@pytest.mark.parametrize("use_websocket", [True, False], ids=["websocket", "polling"])
async def test_slow_run_times_out_and_is_cancelled_on_the_server(
    fake: FakeComfyUI,
    session: aiohttp.ClientSession,
    request_: GenerationRequest,
    use_websocket: bool,
) -> None:
    fake.script.append(Misbehaviour.SLOW)
    comfy = provider(fake.base_url, session, use_websocket=use_websocket, timeout=0.3)
    started = time.perf_counter()
    error = await failure(comfy, request_)

    assert time.perf_counter() - started < 2.0
    assert error.code == ErrorKind.TIMEOUT
    assert error.retryable is True
    prompt_id = the_prompt_post(fake).body["prompt_id"]
    assert prompt_id in error.message
    assert [r.body for r in fake.requests_to("POST", "/interrupt")] == [{"prompt_id": prompt_id}]
    await fake.wait_until_idle()
    messages = fake.history[prompt_id]["status"]["messages"]
    assert messages[-1][0] == "execution_interrupted"


async def test_cancelled_generation_is_cancelled_on_the_server(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    fake.script.append(Misbehaviour.SLOW)
    started = asyncio.Event()

    async def progress(fraction: float) -> None:
        started.set()

    task = asyncio.create_task(provider(fake.base_url, session).generate(request_, progress))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    prompt_id = the_prompt_post(fake).body["prompt_id"]
    assert [r.body for r in fake.requests_to("POST", "/interrupt")] == [{"prompt_id": prompt_id}]
    await fake.wait_until_idle()


async def test_connection_refused_is_provider_down(
    session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    for use_websocket in (True, False):
        comfy = provider(f"http://127.0.0.1:{free_port()}", session, use_websocket=use_websocket)
        error = await failure(comfy, request_)

        assert error.code == ErrorKind.PROVIDER_DOWN
        assert error.retryable is True


async def test_server_gone_mid_run_is_provider_down(
    session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    fake = FakeComfyUI()
    await fake.start()
    fake.script.append(Misbehaviour.SLOW)
    stopping: list[asyncio.Task[None]] = []

    async def stop_server(fraction: float) -> None:
        if not stopping:
            stopping.append(asyncio.create_task(fake.stop()))

    error = await failure_with(provider(fake.base_url, session), request_, stop_server)
    await stopping[0]

    assert error.code == ErrorKind.PROVIDER_DOWN
    assert error.retryable is True


# --- the fake itself -----------------------------------------------------------------------------


async def test_fake_view_follows_comfyui_rules(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    await provider(fake.base_url, session).generate(request_, Progress())
    view = f"{fake.base_url}/view"
    cases = [
        ({"filename": "capitao-caverna_00001_.png", "subfolder": "caverna"}, 200),
        ({"filename": "../secrets.png", "subfolder": "caverna"}, 400),
        ({"filename": "capitao-caverna_00001_.png", "subfolder": "../.."}, 403),
        ({"filename": "capitao-caverna_00001_.png", "subfolder": "caverna", "type": "x"}, 400),
        ({"filename": "nothing.png", "subfolder": "caverna"}, 404),
    ]
    for params, status in cases:
        async with session.get(view, params=params) as response:
            assert response.status == status, params


# --- the intake bound ----------------------------------------------------------------------


async def test_the_view_download_waits_for_intake_room_outside_the_timeout(
    fake: FakeComfyUI, session: aiohttp.ClientSession, request_: GenerationRequest
) -> None:
    comfy = provider(fake.base_url, session, timeout=1.0)

    image, _ = await generate_behind_a_full_gate(
        lambda request: comfy.generate(request, Progress()), request_, hold_seconds=1.2
    )

    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.format == "PNG"
