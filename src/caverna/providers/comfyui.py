"""ComfyUI: queue the compiled graph on a self-hosted server and fetch what its output node saved.

ComfyUI is asynchronous: POST /prompt only queues the graph. Completion is followed on the
websocket (opened before queueing, so no event for our prompt can be missed) and, when the socket
is unavailable or drops, by polling /history, which stays `{}` until the prompt has finished. The
history entry is the source of truth for the result either way; the image bytes come from /view.

The server has no authentication of its own and no price, so cost is always 0 and a 403 can only
come from its origin check or a proxy in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from caverna.imaging import CONTENT_TYPES, ImageRejected, sniff_format
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

log = logging.getLogger(__name__)

NAME = "comfyui"
SAMPLER_NODE = "3"
CHECKPOINT_NODE = "4"
START_FRACTION = 0.05  # queued: the rest of the bar belongs to the sampler
END_FRACTION = 0.95  # sampled: what is left is fetching the file
HEALTH_TIMEOUT = 5.0
ABANDON_TIMEOUT = 2.0
WS_HEARTBEAT = 30.0  # notices a server that vanished without closing the socket
WS_MAX_MESSAGE = 32 * 1024 * 1024  # live previews of large images are big binary frames
SNIPPET_CHARS = 300
DETAIL_CHARS = 240


@dataclass(frozen=True)
class ComfyUIConfig:
    """Where the server is and how patiently to wait for it.

    `base_url` normally comes from CAVERNA_COMFYUI_URL (e.g. http://127.0.0.1:8188); a path
    such as `/api` or a reverse-proxy prefix is kept. `timeout` bounds a whole generation,
    queueing time included, because a busy GPU queue is indistinguishable from a hung one.
    """

    base_url: str
    use_websocket: bool = True
    poll_interval: float = 1.0
    timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class _SavedImage:
    filename: str
    subfolder: str
    type: str


@dataclass(slots=True)
class _Run:
    """One prompt's identity and progress, shared by the websocket and polling paths."""

    client_id: str
    prompt_id: str
    progress: ProgressCallback
    queued: bool = False
    finished: bool = False
    reported: float = field(default=0.0)

    async def report(self, fraction: float) -> None:
        # Graphs with several samplers restart their step counts; the bar must never go back.
        if fraction > self.reported:
            self.reported = fraction
            await self.progress(fraction)


class ComfyUIProvider:
    """Generates with a ComfyUI server; the shared client session is passed in, never created."""

    name: str = NAME

    def __init__(self, config: ComfyUIConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self._session = session
        self._base = config.base_url.rstrip("/")

    def _url(self, path: str) -> str:
        return f"{self._base}{path}"

    async def health(self) -> bool:
        """True when the server answers; cheap enough for a readiness probe."""
        try:
            async with (
                asyncio.timeout(HEALTH_TIMEOUT),
                self._session.get(self._url("/system_stats")) as response,
            ):
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        graph, output_node = _graph_of(request)
        started = time.perf_counter()
        run = _Run(client_id=uuid.uuid4().hex, prompt_id=str(uuid.uuid4()), progress=progress)
        try:
            async with transport_errors(NAME):
                deadline: asyncio.Timeout | None = None
                try:
                    async with call_deadline(self.config.timeout) as deadline:
                        data, content_type = await self._generate(run, graph, output_node, request)
                except TimeoutError as exc:
                    if deadline is None or not deadline.expired():
                        raise  # a socket read timed out: transport_errors names it
                    raise provider_error(
                        ErrorKind.TIMEOUT,
                        f"{NAME}: prompt {run.prompt_id} did not finish within "
                        f"{self.config.timeout:g} s",
                    ) from exc
        except (Exception, asyncio.CancelledError):
            if run.queued and not run.finished:
                await self._abandon(run.prompt_id)
            raise
        await run.report(1.0)
        return ProviderImage(
            data=data,
            content_type=content_type,
            model=_model_of(graph),
            seed=_seed_of(graph, request),
            cost_usd=0.0,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def _generate(
        self, run: _Run, graph: dict[str, Any], output_node: str, request: GenerationRequest
    ) -> tuple[bytes, str]:
        websocket = await self._open_websocket(run.client_id) if self.config.use_websocket else None
        try:
            await self._queue(run, graph, output_node)
            await run.report(START_FRACTION)
            if websocket is not None and await self._follow(websocket, run):
                run.finished = True
            entry = await self._wait_for_history(run)
        finally:
            if websocket is not None:
                await websocket.close()
        run.finished = True
        image = _saved_image(entry, output_node, run.prompt_id)
        await run.report(END_FRACTION)
        return await self._download(image, request)

    async def _open_websocket(self, client_id: str) -> aiohttp.ClientWebSocketResponse | None:
        """The event stream, or None: polling still works, only less promptly and without steps."""
        try:
            return await self._session.ws_connect(
                self._url("/ws"),
                params={"clientId": client_id},
                heartbeat=WS_HEARTBEAT,
                max_msg_size=WS_MAX_MESSAGE,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("%s: websocket unavailable (%s); polling /history instead", NAME, exc)
            return None

    async def _queue(self, run: _Run, graph: dict[str, Any], output_node: str) -> None:
        body = {"prompt": graph, "client_id": run.client_id, "prompt_id": run.prompt_id}
        async with self._session.post(self._url("/prompt"), json=body) as response:
            status = response.status
            raw = await response.read()
            retry_after = parse_retry_after(response.headers)
        text = raw.decode("utf-8", errors="replace")
        if status == 400:
            raise provider_error(ErrorKind.INVALID_REQUEST, _rejection(text))
        if status != 200:
            hint = " (refused by the server's origin check or a proxy)" if status == 403 else ""
            raise provider_error(
                kind_for_status(status),
                f"{NAME}: POST /prompt answered {status}{hint}{_snippet(text)}",
                retry_after=retry_after,
            )
        answer = _json_object(text, "POST /prompt")
        # Servers older than client-chosen ids ignore ours and assign their own.
        assigned = answer.get("prompt_id")
        if isinstance(assigned, str) and assigned:
            run.prompt_id = assigned
        run.queued = True  # even when our output was dropped, the rest of the graph may run
        node_errors = answer.get("node_errors")
        if _affects(node_errors, output_node):
            raise provider_error(
                ErrorKind.INVALID_REQUEST,
                f"{NAME} dropped output node {output_node}: "
                + "; ".join(_node_error_lines(node_errors)),
            )

    async def _follow(self, websocket: aiohttp.ClientWebSocketResponse, run: _Run) -> bool:
        """Read events for our prompt: True once it has finished, False if the socket dropped."""
        async for message in websocket:
            if message.type is aiohttp.WSMsgType.ERROR:
                break
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue  # binary frames are live previews, which we do not need
            event = _event(message.data)
            if event is None:
                continue
            kind, data = event
            if data.get("prompt_id") != run.prompt_id:
                continue
            if kind == "progress":
                await run.report(_step_fraction(data))
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
                return True
            elif kind == "execution_error":
                run.finished = True
                raise _execution_error(data)
            elif kind == "execution_interrupted":
                run.finished = True
                raise _interrupted(data)
        log.warning(
            "%s: websocket closed before prompt %s finished; polling /history instead",
            NAME,
            run.prompt_id,
        )
        return False

    async def _wait_for_history(self, run: _Run) -> dict[str, Any]:
        # Checked at once: ComfyUI announces success before it writes the history entry, so a
        # first `{}` right after the websocket said done is normal, not a failure.
        while True:
            entry = await self._history(run.prompt_id)
            if entry is not None:
                return entry
            await asyncio.sleep(self.config.poll_interval)

    async def _history(self, prompt_id: str) -> dict[str, Any] | None:
        async with self._session.get(self._url(f"/history/{prompt_id}")) as response:
            status = response.status
            raw = await response.read()
            retry_after = parse_retry_after(response.headers)
        text = raw.decode("utf-8", errors="replace")
        if status != 200:
            raise provider_error(
                kind_for_status(status),
                f"{NAME}: GET /history answered {status}{_snippet(text)}",
                retry_after=retry_after,
            )
        answer = _json_object(text, "GET /history")
        if not answer:
            return None
        entry = answer.get(prompt_id)
        if not isinstance(entry, dict):
            raise provider_error(
                ErrorKind.BAD_RESPONSE, f"{NAME}: history has no entry for prompt {prompt_id}"
            )
        return entry

    async def _download(self, image: _SavedImage, request: GenerationRequest) -> tuple[bytes, str]:
        params = {"filename": image.filename, "subfolder": image.subfolder, "type": image.type}
        async with self._session.get(self._url("/view"), params=params) as response:
            status = response.status
            if status == 200:
                await admit_image(request)
            data = await response.read()
        if status != 200:
            # The file was named by the server itself, so a 4xx is its inconsistency, not ours.
            kind = kind_for_status(status) if status >= 500 else ErrorKind.BAD_RESPONSE
            raise provider_error(
                kind, f"{NAME}: GET /view for {image.filename!r} answered {status}"
            )
        try:
            fmt = sniff_format(data)
        except ImageRejected as exc:
            raise provider_error(
                ErrorKind.BAD_RESPONSE,
                f"{NAME}: /view sent {len(data)} bytes for {image.filename!r} that are not an "
                f"image ({exc.message})",
            ) from exc
        return data, CONTENT_TYPES[fmt]

    async def _abandon(self, prompt_id: str) -> None:
        """Best effort: a prompt nobody waits for would otherwise keep the GPU busy."""
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, RuntimeError):
            async with asyncio.timeout(ABANDON_TIMEOUT):
                async with self._session.post(
                    self._url("/queue"), json={"delete": [prompt_id]}
                ) as response:
                    await response.read()
                async with self._session.post(
                    self._url("/interrupt"), json={"prompt_id": prompt_id}
                ) as response:
                    await response.read()


# --- request -------------------------------------------------------------------------------------


def _graph_of(request: GenerationRequest) -> tuple[dict[str, Any], str]:
    compiled = request.compiled
    require_dialect(compiled, NAME, "ComfyUI")
    graph = compiled.payload.get("prompt")
    output_node = compiled.payload.get("output_node")
    if not isinstance(graph, dict) or not isinstance(output_node, str) or output_node not in graph:
        raise provider_error(
            ErrorKind.INVALID_REQUEST,
            f"the {NAME} payload needs a 'prompt' graph and an 'output_node' that is in it",
        )
    return graph, output_node


def _inputs(graph: Mapping[str, Any], node: str) -> Mapping[str, Any]:
    entry = graph.get(node)
    inputs = entry.get("inputs") if isinstance(entry, Mapping) else None
    return inputs if isinstance(inputs, Mapping) else {}


def _seed_of(graph: Mapping[str, Any], request: GenerationRequest) -> int | None:
    seed = _inputs(graph, SAMPLER_NODE).get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    return request.compiled.seed


def _model_of(graph: Mapping[str, Any]) -> str:
    checkpoint = _inputs(graph, CHECKPOINT_NODE).get("ckpt_name")
    return checkpoint if isinstance(checkpoint, str) and checkpoint else NAME


# --- responses -----------------------------------------------------------------------------------


def _snippet(text: str) -> str:
    """A body excerpt to append to a message, with its separator; empty for an empty body."""
    text = " ".join(text.split())
    if not text:
        return ""
    return ": " + (text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "...")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: {what} sent malformed JSON{_snippet(text)}"
        ) from exc
    if not isinstance(value, dict):
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{NAME}: {what} sent {type(value).__name__}, not an object"
        )
    return value


def _event(text: str) -> tuple[str, dict[str, Any]] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    kind, data = value.get("type"), value.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        return None
    return kind, data


def _step_fraction(data: Mapping[str, Any]) -> float:
    value, maximum = data.get("value"), data.get("max")
    if not isinstance(value, int | float) or not isinstance(maximum, int | float) or maximum <= 0:
        return 0.0
    done = min(max(value / maximum, 0.0), 1.0)
    return START_FRACTION + (END_FRACTION - START_FRACTION) * done


def _rejection(text: str) -> str:
    """A 400 from /prompt as one readable line: the headline, then every failing node."""
    try:
        body = json.loads(text)
    except ValueError:
        return f"{NAME} rejected the prompt{_snippet(text)}"
    if not isinstance(body, dict):
        return f"{NAME} rejected the prompt{_snippet(text)}"
    error = body.get("error")
    if isinstance(error, dict):
        headline = str(error.get("message") or "invalid prompt")
        if error.get("type"):
            headline += f" ({error['type']})"
        details = str(error.get("details") or "").strip()
        if details:
            headline += f": {_clip(details)}"
    elif error:
        headline = str(error)  # servers before structured errors sent a plain string
    else:
        headline = "invalid prompt"
    lines = _node_error_lines(body.get("node_errors"))
    return f"{NAME} rejected the prompt: {headline}" + "".join(f"; {line}" for line in lines)


def _node_error_lines(node_errors: object) -> list[str]:
    if not isinstance(node_errors, Mapping):
        return []  # older servers sent an empty list
    lines = []
    for node_id, entry in node_errors.items():
        if not isinstance(entry, Mapping):
            continue
        class_type = entry.get("class_type") or "unknown node type"
        problems = []
        for error in entry.get("errors") or []:
            if not isinstance(error, Mapping):
                continue
            problem = f"{error.get('type') or 'error'}: {error.get('message') or ''}".rstrip(": ")
            details = str(error.get("details") or "").strip()
            if details:
                problem += f" ({_clip(details)})"
            problems.append(problem)
        lines.append(f"node {node_id} ({class_type}) " + (", ".join(problems) or "failed"))
    return lines


def _clip(text: str) -> str:
    """One line of bounded length: checkpoint lists and tracebacks can be very long."""
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS] + "..."


def _affects(node_errors: object, output_node: str) -> bool:
    """Whether /prompt's node errors cost us our output (200 answers may drop other outputs)."""
    if not isinstance(node_errors, Mapping):
        return False
    for node_id, entry in node_errors.items():
        if node_id == output_node:
            return True
        dependent = entry.get("dependent_outputs") if isinstance(entry, Mapping) else None
        if isinstance(dependent, list) and output_node in dependent:
            return True
    return False


def _is_out_of_memory(data: Mapping[str, Any]) -> bool:
    text = f"{data.get('exception_type') or ''} {data.get('exception_message') or ''}".lower()
    return "outofmemory" in text or "out of memory" in text


def _execution_error(data: Mapping[str, Any]) -> ProviderError:
    """A node failure while running: only running out of memory can pass on a later attempt."""
    node = f"node {data.get('node_id') or '?'} ({data.get('node_type') or 'unknown node type'})"
    exception = str(data.get("exception_type") or "error")
    message = _clip(str(data.get("exception_message") or "").strip())
    if _is_out_of_memory(data):
        return provider_error(
            ErrorKind.TRANSIENT, f"{NAME}: {node} ran out of memory: {exception}: {message}"
        )
    return provider_error(
        ErrorKind.INVALID_REQUEST, f"{NAME}: {node} failed: {exception}: {message}"
    )


def _interrupted(data: Mapping[str, Any]) -> ProviderError:
    node = data.get("node_type") or data.get("node_id") or "?"
    return provider_error(
        ErrorKind.TRANSIENT, f"{NAME}: prompt was interrupted on the server (at {node})"
    )


def _saved_image(entry: Mapping[str, Any], output_node: str, prompt_id: str) -> _SavedImage:
    status = entry.get("status")
    if isinstance(status, Mapping) and status.get("status_str") == "error":
        raise _history_failure(status.get("messages"), prompt_id)
    outputs = entry.get("outputs")
    node_output = outputs.get(output_node) if isinstance(outputs, Mapping) else None
    images = node_output.get("images") if isinstance(node_output, Mapping) else None
    first = images[0] if isinstance(images, list) and images else None
    if isinstance(first, Mapping) and isinstance(first.get("filename"), str) and first["filename"]:
        return _SavedImage(
            filename=first["filename"],
            subfolder=str(first.get("subfolder") or ""),
            type=str(first.get("type") or "output"),
        )
    raise provider_error(
        ErrorKind.BAD_RESPONSE,
        f"{NAME}: prompt {prompt_id} finished without an image from node {output_node}",
    )


def _history_failure(messages: object, prompt_id: str) -> ProviderError:
    for message in messages if isinstance(messages, list) else []:
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
            continue
        if message[0] == "execution_error":
            return _execution_error(message[1])
        if message[0] == "execution_interrupted":
            return _interrupted(message[1])
    return provider_error(
        ErrorKind.TRANSIENT, f"{NAME}: prompt {prompt_id} failed and the server gave no reason"
    )
