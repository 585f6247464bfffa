"""A ComfyUI server in miniature: the real HTTP routes and websocket events, on loopback only.

The adapter is tested against this over real sockets, so what is checked is the wire protocol
(request bodies, event order, history shape, /view rules) rather than calls on a mock. Graphs are
validated the way ComfyUI does it, far enough to produce its real 400 bodies, and "executed"
step by step with the events the real server sends; the saved image is random noise.

Tests put misbehaviours in `script`: each POST /prompt takes the next one and it applies to that
prompt only.

Local demo (binds 127.0.0.1 only):

    python -m tests.fakes.comfyui_server --port 9105 --step-delay 0.05
    CAVERNA_COMFYUI_URL=http://127.0.0.1:9105 caverna ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import posixpath
import random
import struct
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.fakes.base import LoopbackServer, serve_main

DEFAULT_CHECKPOINTS = ("sd_xl_base_1.0.safetensors",)
LOOPBACK = "127.0.0.1"
PREVIEW_IMAGE_EVENT = 1  # binary frame: 4-byte event type, 4-byte image format, image bytes
PNG_FORMAT = 2
FOLDER_TYPES = ("output", "input", "temp")
MIN_SIDE, MAX_SIDE = 16, 16384


class Misbehaviour(StrEnum):
    """What the next queued prompt does wrong."""

    OUT_OF_MEMORY = "out_of_memory"  # the sampler fails with torch.OutOfMemoryError
    NODE_EXCEPTION = "node_exception"  # VAEDecode fails with a RuntimeError
    INTERRUPTED = "interrupted"  # interrupted halfway through sampling, as from the UI
    DROP_WEBSOCKET = "drop_websocket"  # the client's socket is closed mid-run; the run finishes
    SLOW = "slow"  # every sampler step takes `slow_step_delay`
    FORBIDDEN = "forbidden"  # POST /prompt answers 403, as the origin check does
    SERVER_ERROR = "server_error"  # POST /prompt answers `server_error_status`
    MALFORMED_HISTORY = "malformed_history"  # the finished history entry is truncated JSON
    NOT_AN_IMAGE = "not_an_image"  # /view serves an HTML page for the saved file
    FILE_MISSING = "file_missing"  # the saved file is gone from the output folder: /view 404s


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass(frozen=True)
class _NodeSchema:
    required: tuple[str, ...]
    output: bool = False


# The core nodes a text-to-image graph uses; required inputs as ComfyUI declares them.
NODE_SCHEMAS: dict[str, _NodeSchema] = {
    "CheckpointLoaderSimple": _NodeSchema(("ckpt_name",)),
    "EmptyLatentImage": _NodeSchema(("width", "height", "batch_size")),
    "CLIPTextEncode": _NodeSchema(("text", "clip")),
    "KSampler": _NodeSchema(
        (
            "model",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "denoise",
        )
    ),
    "VAEDecode": _NodeSchema(("samples", "vae")),
    "SaveImage": _NodeSchema(("images", "filename_prefix"), output=True),
    "PreviewImage": _NodeSchema(("images",), output=True),
}


@dataclass
class _Job:
    number: int
    prompt_id: str
    graph: dict[str, Any]
    client_id: str | None
    outputs: list[str]
    misbehaviour: Misbehaviour | None
    extra_data: dict[str, Any] = field(default_factory=dict)

    def queue_item(self) -> list[Any]:
        return [self.number, self.prompt_id, self.graph, self.extra_data, self.outputs]


class _Interrupted(Exception):
    pass


class _NodeFailed(Exception):
    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_link(value: object) -> bool:
    return isinstance(value, list)


class FakeComfyUI(LoopbackServer):
    """One fake server: `await start()` gives its base URL, `await stop()` tears it down."""

    shutdown_timeout = 1.0

    def __init__(
        self,
        *,
        checkpoints: Iterable[str] = DEFAULT_CHECKPOINTS,
        max_image_side: int | None = 64,
        step_delay: float = 0.0,
        slow_step_delay: float = 5.0,
        websocket_enabled: bool = True,
        server_error_status: int = 500,
        legacy_errors: bool = False,
        assigns_prompt_ids: bool = False,
    ) -> None:
        super().__init__(host=LOOPBACK)
        self.checkpoints = list(checkpoints)
        self.max_image_side = max_image_side
        self.step_delay = step_delay
        self.slow_step_delay = slow_step_delay
        self.websocket_enabled = websocket_enabled
        self.server_error_status = server_error_status
        # Servers from before structured errors sent `error` as a plain string.
        self.legacy_errors = legacy_errors
        # Servers from before client-chosen ids ignored `prompt_id` and made their own.
        self.assigns_prompt_ids = assigns_prompt_ids
        self.script: list[Misbehaviour] = []
        self.requests: list[RecordedRequest] = []
        self.ws_client_ids: list[str] = []
        self.history: dict[str, dict[str, Any]] = {}
        self.files: dict[tuple[str, str, str], bytes] = {}
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._pending: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._running: _Job | None = None
        self._interrupt = asyncio.Event()
        self._numbers = 0
        self._counters: dict[tuple[str, str], int] = {}
        self._misbehaving: dict[str, Misbehaviour] = {}  # prompt id or file name -> misbehaviour
        self._worker: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._origin_check])
        for prefix in ("", "/api"):  # ComfyUI serves every route under /api as well
            router = app.router
            router.add_get(f"{prefix}/ws", self._ws)
            router.add_post(f"{prefix}/prompt", self._post_prompt)
            router.add_get(f"{prefix}/prompt", self._get_prompt)
            router.add_get(f"{prefix}/queue", self._get_queue)
            router.add_post(f"{prefix}/queue", self._post_queue)
            router.add_post(f"{prefix}/interrupt", self._post_interrupt)
            router.add_get(f"{prefix}/history", self._get_history_all)
            router.add_get(f"{prefix}/history/{{prompt_id}}", self._get_history)
            router.add_get(f"{prefix}/view", self._view)
            router.add_get(f"{prefix}/system_stats", self._system_stats)
        return app

    async def on_started(self) -> None:
        self._worker = asyncio.create_task(self._work())

    async def on_stopping(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for ws in list(self._sockets.values()):
            await ws.close()

    # --- what tests look at ----------------------------------------------------------------------

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Requests for `path` with or without the /api prefix."""
        return [
            r
            for r in self.requests
            if r.method == method and (r.path == path or r.path == f"/api{path}")
        ]

    async def wait_until_idle(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self._running is not None or self._pending:
                await asyncio.sleep(0.01)

    # --- middleware ------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                body=body,
                headers=dict(request.headers),
            )
        )
        return await handler(request)

    @web.middleware
    async def _origin_check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """ComfyUI's guard against browser pages on other sites driving a local server."""
        host = request.headers.get("Host")
        origin = request.headers.get("Origin")
        if host and origin:
            host_name = urlsplit(f"//{host}").hostname
            if host_name in ("127.0.0.1", "localhost", "::1") and urlsplit(origin).netloc != host:
                return web.Response(status=403)
        return await handler(request)

    # --- websocket -------------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self.websocket_enabled:
            return web.Response(status=404, text="404: Not Found")
        ws = web.WebSocketResponse(timeout=1.0)  # a close left unanswered must not stall stop()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.ws_client_ids.append(sid)
        self._sockets[sid] = ws
        try:
            await self._send_to(sid, "status", {"status": self._status(), "sid": sid})
            async for message in ws:
                if message.type is WSMsgType.ERROR:
                    break
        finally:
            if self._sockets.get(sid) is ws:
                del self._sockets[sid]
        return ws

    async def _send_to(self, client_id: str | None, kind: str, data: Mapping[str, Any]) -> None:
        ws = self._sockets.get(client_id) if client_id else None
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError):
            await ws.send_str(json.dumps({"type": kind, "data": data}))

    async def _send_bytes_to(self, client_id: str | None, payload: bytes) -> None:
        ws = self._sockets.get(client_id) if client_id else None
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(payload)

    async def _broadcast_status(self) -> None:
        for sid in list(self._sockets):
            await self._send_to(sid, "status", {"status": self._status()})

    def _status(self) -> dict[str, Any]:
        remaining = len(self._pending) + (1 if self._running else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    # --- queueing --------------------------------------------------------------------------------

    async def _post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "prompt" not in body:
            return self._bad_request(
                _error("no_prompt", "No prompt provided", "No prompt provided")
            )
        misbehaviour = self.script.pop(0) if self.script else None
        if misbehaviour is Misbehaviour.FORBIDDEN:
            return web.Response(status=403)
        if misbehaviour is Misbehaviour.SERVER_ERROR:
            return web.Response(
                status=self.server_error_status,
                text=f"{self.server_error_status}: Server got itself in trouble",
            )
        prompt_id = body.get("prompt_id")
        if prompt_id is None or self.assigns_prompt_ids:
            prompt_id = str(uuid.uuid4())
        elif not _canonical_uuid(prompt_id):
            return self._bad_request(
                _error(
                    "invalid_prompt_id",
                    "Invalid prompt_id",
                    f"prompt_id must be a lowercase canonical UUID, got {prompt_id!r}",
                )
            )
        graph = body["prompt"]
        failure, outputs, node_errors = self._validate(graph)
        if failure is not None:
            return self._bad_request(failure, node_errors)
        if not outputs:
            return self._bad_request(
                _error("prompt_outputs_failed_validation", "Prompt outputs failed validation"),
                node_errors,
            )
        self._numbers += 1
        client_id = body.get("client_id")
        extra_data = body.get("extra_data")
        job = _Job(
            number=self._numbers,
            prompt_id=prompt_id,
            graph=graph,
            client_id=client_id if isinstance(client_id, str) else None,
            outputs=outputs,
            misbehaviour=misbehaviour,
            extra_data=extra_data if isinstance(extra_data, dict) else {},
        )
        if misbehaviour is not None:
            self._misbehaving[prompt_id] = misbehaviour
        self._pending.append(job)
        self._wakeup.set()
        await self._broadcast_status()
        return web.json_response(
            {"prompt_id": prompt_id, "number": job.number, "node_errors": node_errors}
        )

    def _bad_request(
        self, error: dict[str, Any], node_errors: dict[str, Any] | None = None
    ) -> web.Response:
        if self.legacy_errors:
            body = {"error": error["message"], "node_errors": node_errors or []}
        else:
            body = {"error": error, "node_errors": node_errors or {}}
        return web.json_response(body, status=400)

    def _validate(self, graph: object) -> tuple[dict[str, Any] | None, list[str], dict[str, Any]]:
        """(top-level error, outputs that passed, node errors), as ComfyUI's validate_prompt."""
        if not isinstance(graph, dict):
            return _error("invalid_prompt", "Prompt is not an object"), [], {}
        outputs = []
        for node_id, node in graph.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return (
                    _error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                    {},
                )
            if not isinstance(node.get("inputs"), dict):
                return (
                    _error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the inputs property.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                    {},
                )
            schema = NODE_SCHEMAS.get(str(node["class_type"]))
            if schema is None:
                return (
                    _error(
                        "missing_node_type",
                        f"Cannot execute because node {node['class_type']} does not exist.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                    {},
                )
            if schema.output:
                outputs.append(node_id)
        if not outputs:
            return _error("prompt_no_outputs", "Prompt has no outputs"), [], {}
        good: list[str] = []
        node_errors: dict[str, Any] = {}
        validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        for output in outputs:
            if self._node_valid(graph, output, validated, set()):
                good.append(output)
                continue
            for node_id, (_, reasons) in validated.items():
                if not reasons:
                    continue
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": reasons,
                        "dependent_outputs": [],
                        "class_type": graph[node_id]["class_type"],
                    },
                )
                if output not in entry["dependent_outputs"]:
                    entry["dependent_outputs"].append(output)
        return None, good, node_errors

    def _node_valid(
        self,
        graph: dict[str, Any],
        node_id: str,
        validated: dict[str, tuple[bool, list[dict[str, Any]]]],
        visiting: set[str],
    ) -> bool:
        """Whether a node and everything it links to validate; errors land on the failing node."""
        if node_id in validated:
            return validated[node_id][0]
        visiting.add(node_id)
        node = graph[node_id]
        schema = NODE_SCHEMAS[node["class_type"]]
        inputs: dict[str, Any] = node["inputs"]
        reasons: list[dict[str, Any]] = []
        upstream_ok = True
        for name in schema.required:
            if name not in inputs:
                reasons.append(
                    _error(
                        "required_input_missing",
                        "Required input is missing",
                        name,
                        input_name=name,
                    )
                )
                continue
            value = inputs[name]
            if not _is_link(value):
                reasons.extend(self._value_errors(node["class_type"], name, value))
            elif len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
                reasons.append(
                    _error(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [string, int]",
                        f"{name}, {value}",
                        input_name=name,
                    )
                )
            elif value[0] not in graph:
                reasons.append(
                    _error(
                        "bad_linked_input",
                        "Linked node does not exist",
                        f"{name}: node '{value[0]}' is not in the prompt",
                        input_name=name,
                    )
                )
            elif value[0] in visiting:
                reasons.append(_error("dependency_cycle", "Dependency cycle detected", name))
            elif not self._node_valid(graph, value[0], validated, visiting):
                upstream_ok = False
        visiting.discard(node_id)
        valid = upstream_ok and not reasons
        validated[node_id] = (valid, reasons)
        return valid

    def _value_errors(self, class_type: str, name: str, value: object) -> list[dict[str, Any]]:
        if (
            class_type == "CheckpointLoaderSimple"
            and name == "ckpt_name"
            and value not in self.checkpoints
        ):
            return [
                _error(
                    "value_not_in_list",
                    "Value not in list",
                    f"{name}: '{value}' not in {self.checkpoints}",
                    input_name=name,
                    input_config=[self.checkpoints],
                    received_value=value,
                )
            ]
        if class_type == "EmptyLatentImage" and name in ("width", "height"):
            if not isinstance(value, int):
                return [_error("invalid_input_type", "Failed to convert an input value", name)]
            if value < MIN_SIDE:
                return [
                    _error(
                        "value_smaller_than_min",
                        f"Value {value} smaller than min of {MIN_SIDE}",
                        f"{name}",
                        input_name=name,
                        received_value=value,
                    )
                ]
            if value > MAX_SIDE:
                return [
                    _error(
                        "value_bigger_than_max",
                        f"Value {value} bigger than max of {MAX_SIDE}",
                        f"{name}",
                        input_name=name,
                        received_value=value,
                    )
                ]
        return []

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": self._status()["exec_info"]})

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._running.queue_item()] if self._running else []
        pending = [job.queue_item() for job in self._pending]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("clear"):
            self._pending.clear()
        delete = body.get("delete")
        if isinstance(delete, list):
            self._pending = deque(job for job in self._pending if job.prompt_id not in delete)
        await self._broadcast_status()
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        target = body.get("prompt_id")
        # A prompt id that is not the running one is a no-op, as in ComfyUI.
        if self._running is not None and (target is None or target == self._running.prompt_id):
            self._interrupt.set()
        return web.Response(status=200)

    # --- history and files -----------------------------------------------------------------------

    async def _get_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        if entry is None:
            return web.json_response({})
        if self._misbehaving.get(prompt_id) is Misbehaviour.MALFORMED_HISTORY:
            return web.Response(
                text=json.dumps({prompt_id: entry})[:40], content_type="application/json"
            )
        return web.json_response({prompt_id: entry})

    async def _get_history_all(self, request: web.Request) -> web.Response:
        items = list(self.history.items())
        max_items = request.query.get("max_items")
        if max_items and max_items.isdigit():
            items = items[-int(max_items) :]
        return web.json_response(dict(items))

    async def _view(self, request: web.Request) -> web.Response:
        query = request.query
        filename = query.get("filename")
        if filename is None:
            return web.Response(status=404)
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        folder = query.get("type", "output")
        if folder not in FOLDER_TYPES:
            return web.Response(status=400)
        subfolder = query.get("subfolder", "")
        resolved = posixpath.normpath(posixpath.join("/root", subfolder))
        if resolved != "/root" and not resolved.startswith("/root/"):
            return web.Response(status=403)
        key = (folder, resolved.removeprefix("/root").lstrip("/"), filename)
        data = self.files.get(key)
        misbehaviour = self._misbehaving.get(filename)
        if data is None or misbehaviour is Misbehaviour.FILE_MISSING:
            return web.Response(status=404)
        if misbehaviour is Misbehaviour.NOT_AN_IMAGE:
            data = b"<!DOCTYPE html><html><body>Bad Gateway</body></html>"
        return web.Response(
            body=data,
            content_type="image/png",
            headers={"Content-Disposition": f'filename="{filename}"'},
        )

    async def _system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "system": {
                    "os": "posix",
                    "python_version": "3.12.3",
                    "embedded_python": False,
                    "comfyui_version": "0.3.0-fake",
                    "ram_total": 0,
                    "ram_free": 0,
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": 0,
                        "vram_free": 0,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
            }
        )

    # --- execution -------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            job = self._pending.popleft()
            self._running = job
            self._interrupt.clear()
            try:
                await self._execute(job)
            finally:
                self._running = None
            await self._broadcast_status()

    async def _execute(self, job: _Job) -> None:
        """Run one prompt with the event sequence of ComfyUI's prompt worker."""
        client = job.client_id
        messages: list[list[Any]] = []

        async def event(kind: str, data: dict[str, Any], *, keep: bool = False) -> None:
            if keep:
                messages.append([kind, data])
            await self._send_to(client, kind, data)

        await self._broadcast_status()
        await event(
            "execution_start", {"prompt_id": job.prompt_id, "timestamp": _now_ms()}, keep=True
        )
        await event(
            "execution_cached",
            {"nodes": [], "prompt_id": job.prompt_id, "timestamp": _now_ms()},
            keep=True,
        )
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        status = "success"
        node_id = ""
        try:
            for node_id in _execution_order(job.graph, job.outputs):
                await event(
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": job.prompt_id},
                )
                output = await self._run_node(job, node_id)
                if output is not None:
                    outputs[node_id] = output
                    await event(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": output,
                            "prompt_id": job.prompt_id,
                        },
                    )
                executed.append(node_id)
        except _NodeFailed as failure:
            status = "error"
            await event(
                "execution_error",
                {
                    "prompt_id": job.prompt_id,
                    "node_id": node_id,
                    "node_type": job.graph[node_id]["class_type"],
                    "executed": executed,
                    "exception_message": failure.message,
                    "exception_type": failure.exception_type,
                    "traceback": ['  File "execution.py", line 496, in execute\n'],
                    "current_inputs": {},
                    "current_outputs": {},
                    "timestamp": _now_ms(),
                },
                keep=True,
            )
        except _Interrupted:
            status = "error"
            await event(
                "execution_interrupted",
                {
                    "prompt_id": job.prompt_id,
                    "node_id": node_id,
                    "node_type": job.graph[node_id]["class_type"],
                    "executed": executed,
                    "timestamp": _now_ms(),
                },
                keep=True,
            )
        else:
            # Sent before the history entry exists, exactly as ComfyUI does.
            await event(
                "execution_success", {"prompt_id": job.prompt_id, "timestamp": _now_ms()}, keep=True
            )
        self.history[job.prompt_id] = {
            "prompt": job.queue_item(),
            "outputs": outputs,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": messages,
            },
            "meta": {
                node: {
                    "node_id": node,
                    "display_node": node,
                    "parent_node": None,
                    "real_node_id": node,
                }
                for node in outputs
            },
        }
        await event("executing", {"node": None, "prompt_id": job.prompt_id})

    async def _run_node(self, job: _Job, node_id: str) -> dict[str, Any] | None:
        node = job.graph[node_id]
        class_type = node["class_type"]
        if class_type == "KSampler":
            await self._sample(job, node_id)
        elif class_type == "VAEDecode" and job.misbehaviour is Misbehaviour.NODE_EXCEPTION:
            raise _NodeFailed(
                "RuntimeError",
                "Given groups=1, weight of size [512, 4, 3, 3], expected input[1, 16, 168, 96] "
                "to have 4 channels, but got 16 channels instead",
            )
        elif _is_output_node(class_type):
            return await self._save(job, node_id)
        return None

    async def _sample(self, job: _Job, node_id: str) -> None:
        steps = job.graph[node_id]["inputs"].get("steps")
        total = steps if isinstance(steps, int) and steps > 0 else 20
        delay = self.slow_step_delay if job.misbehaviour is Misbehaviour.SLOW else self.step_delay
        for value in range(1, total + 1):
            if await self._pause(delay):
                raise _Interrupted
            if value == total // 2:
                if job.misbehaviour is Misbehaviour.OUT_OF_MEMORY:
                    raise _NodeFailed(
                        "torch.OutOfMemoryError",
                        "Allocation on device 0 would exceed allowed memory. (out of memory)\n"
                        "Currently allocated     : 7.61 GiB\nRequested               : 1.27 GiB",
                    )
                if job.misbehaviour is Misbehaviour.INTERRUPTED:
                    raise _Interrupted
                if job.misbehaviour is Misbehaviour.DROP_WEBSOCKET and job.client_id:
                    ws = self._sockets.get(job.client_id)
                    if ws is not None:
                        await ws.close()
            progress = {"value": value, "max": total, "prompt_id": job.prompt_id, "node": node_id}
            await self._send_to(job.client_id, "progress", progress)
            await self._send_to(
                job.client_id,
                "progress_state",
                {
                    "prompt_id": job.prompt_id,
                    "nodes": {
                        node_id: {
                            "value": value,
                            "max": total,
                            "state": "running",
                            "node_id": node_id,
                            "display_node_id": node_id,
                            "parent_node_id": None,
                            "real_node_id": node_id,
                        }
                    },
                },
            )
            if value == 1:
                header = struct.pack(">II", PREVIEW_IMAGE_EVENT, PNG_FORMAT)
                await self._send_bytes_to(job.client_id, header + _noise_png(8, 8, value))

    async def _pause(self, delay: float) -> bool:
        """Sleep one step; True when an interrupt arrived meanwhile."""
        if self._interrupt.is_set():
            return True
        if delay <= 0:
            await asyncio.sleep(0)
            return self._interrupt.is_set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._interrupt.wait()
        return self._interrupt.is_set()

    async def _save(self, job: _Job, node_id: str) -> dict[str, Any]:
        inputs = job.graph[node_id]["inputs"]
        prefix = str(inputs.get("filename_prefix") or "ComfyUI")
        subfolder, base = posixpath.split(prefix)
        counter = self._counters.get((subfolder, base), 0) + 1
        self._counters[(subfolder, base)] = counter
        filename = f"{base}_{counter:05}_.png"
        width, height = self._image_size(job.graph)
        folder = "output" if job.graph[node_id]["class_type"] == "SaveImage" else "temp"
        data = await asyncio.to_thread(
            _noise_png, width, height, _seed(job.graph), json.dumps(job.graph)
        )
        self.files[(folder, subfolder, filename)] = data
        if job.misbehaviour is not None:
            self._misbehaving[filename] = job.misbehaviour
        return {"images": [{"filename": filename, "subfolder": subfolder, "type": folder}]}

    def _image_size(self, graph: Mapping[str, Any]) -> tuple[int, int]:
        latent: Mapping[str, Any] = next(
            (n["inputs"] for n in graph.values() if n["class_type"] == "EmptyLatentImage"), {}
        )
        width, height = int(latent.get("width", 512)), int(latent.get("height", 512))
        cap = self.max_image_side
        if cap and max(width, height) > cap:
            scale = cap / max(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
        return width, height


def _is_output_node(class_type: str) -> bool:
    schema = NODE_SCHEMAS.get(class_type)
    return schema is not None and schema.output


def _execution_order(graph: Mapping[str, Any], outputs: Sequence[str]) -> list[str]:
    """Every node the outputs need, each after the nodes it links to."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        for value in graph[node_id]["inputs"].values():
            if _is_link(value) and value and value[0] in graph:
                visit(value[0])
        order.append(node_id)

    for output in outputs:
        visit(output)
    return order


def _seed(graph: Mapping[str, Any]) -> int:
    for node in graph.values():
        if node["class_type"] == "KSampler" and isinstance(node["inputs"].get("seed"), int):
            seed: int = node["inputs"]["seed"]
            return seed
    return 0


def _noise_png(width: int, height: int, seed: int, prompt: str | None = None) -> bytes:
    """Random noise from the seed, with the graph embedded as SaveImage does."""
    noise = random.Random(seed).randbytes(width * height * 3)
    image = Image.frombytes("RGB", (width, height), noise)
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", prompt)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _canonical_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def _json_or_empty(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --- local demo ----------------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        action="append",
        help=f"an available checkpoint name (repeatable; default: {DEFAULT_CHECKPOINTS[0]})",
    )
    parser.add_argument("--step-delay", type=float, default=0.05, help="seconds per sampler step")
    parser.add_argument(
        "--max-side", type=int, default=0, help="cap the image's longer side (0: latent size)"
    )


def _build(args: argparse.Namespace) -> FakeComfyUI:
    return FakeComfyUI(
        checkpoints=args.checkpoint or DEFAULT_CHECKPOINTS,
        max_image_side=args.max_side or None,
        step_delay=args.step_delay,
    )


def _banner(server: LoopbackServer, args: argparse.Namespace) -> str:
    checkpoints = args.checkpoint or DEFAULT_CHECKPOINTS
    return f"fake ComfyUI listening on {server.base_url} (checkpoints: {', '.join(checkpoints)})"


def main(argv: Sequence[str] | None = None) -> None:
    serve_main(
        _build,
        default_port=8188,
        description="A fake ComfyUI server on 127.0.0.1.",
        add_arguments=_add_arguments,
        banner=_banner,
        argv=argv,
    )


if __name__ == "__main__":
    main()
