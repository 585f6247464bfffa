"""An AUTOMATIC1111 Stable Diffusion WebUI API on loopback, as started with `--api`.

It behaves like the real server where an adapter can tell: one generation at a time behind a
global lock, `GET /sdapi/v1/progress` answering from another connection while `txt2img` runs
(progress, eta_relative, state{job_count, sampling_step, sampling_steps, ...}), the
`{images, parameters, info}` answer with `info` as a JSON string and a `parameters` text chunk in
each PNG, `X-Process-Time` on every response, `--api-auth` Basic auth (401 with
`WWW-Authenticate: Basic`), no `/sdapi` routes at all without `--api` (`api=False`: 404), an
unknown sampler refused with 400, and FastAPI's 422 for a body of the wrong shape. Images are
noise drawn with Pillow, `image_size` large (None: the requested width x height).

`script` holds misbehaviours; each txt2img call consumes the next entry, if any: a `Canned`
answer is sent as is (see the helpers: sampler_not_found, unauthorized, api_missing,
validation_error, out_of_memory, server_error, malformed_json, not_an_image), a `Slow` one makes
that generation take `seconds`. Every request is recorded in `requests`; the progress value of
every progress answer in `progress_answers`.

Run it for a local demo (Ctrl-C stops it):

    python -m tests.fakes.sdwebui_server --port 9103 [--api-auth user:pass] [--size 512]
    curl -s -H 'content-type: application/json' -d '{"prompt": "a cave", "steps": 20}' \\
        http://127.0.0.1:9103/sdapi/v1/txt2img | head -c 300
    curl -s 'http://127.0.0.1:9103/sdapi/v1/progress?skip_current_image=true'
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import io
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict
from PIL import Image, PngImagePlugin

from tests.fakes.base import LoopbackServer, serve_main

SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DDIM", "UniPC")
SCHEDULER_SUFFIXES = ("Karras", "Exponential", "SGM Uniform")
# stop() cuts deliberately slow answers short instead of waiting them out
SHUTDOWN_TIMEOUT = 0.1
MAX_SEED = 4_294_967_294
DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "styles": [],
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0,
    "sampler_name": None,
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 50,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "override_settings": {},
    "override_settings_restore_afterwards": True,
    "alwayson_scripts": {},
    "send_images": True,
    "save_images": False,
}
_INT_FIELDS = ("seed", "subseed", "batch_size", "n_iter", "steps", "width", "height")
_NUMBER_FIELDS = ("cfg_scale", "subseed_strength")
_STRING_FIELDS = ("prompt", "negative_prompt", "sampler_name", "scheduler")


# --- script --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Canned:
    """Answer the next txt2img with exactly this, without generating anything."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Slow:
    """The next generation takes `seconds` instead of the fake's usual duration."""

    seconds: float


Misbehaviour = Canned | Slow


def _handled(status: int, error: str, detail: str = "", errors: str = "") -> Canned:
    """The WebUI's own error shape for exceptions its middleware catches."""
    body = {"error": error, "detail": detail, "body": "", "errors": errors}
    return Canned(status, json.dumps(body).encode())


def sampler_not_found() -> Canned:
    return _handled(400, "HTTPException", "Sampler not found")


def unauthorized() -> Canned:
    body = json.dumps({"detail": "Incorrect username or password"}).encode()
    return Canned(401, body, headers={"WWW-Authenticate": "Basic"})


def api_missing() -> Canned:
    return Canned(404, json.dumps({"detail": "Not Found"}).encode())


def validation_error(field_name: str = "steps") -> Canned:
    detail = [
        {
            "loc": ["body", field_name],
            "msg": "value is not a valid integer",
            "type": "type_error.integer",
        }
    ]
    return Canned(422, json.dumps({"detail": detail}).encode())


def out_of_memory() -> Canned:
    return _handled(
        500,
        "OutOfMemoryError",
        "",
        "CUDA out of memory. Tried to allocate 2.25 GiB (GPU 0; 7.79 GiB total capacity)",
    )


def server_error() -> Canned:
    return _handled(500, "RuntimeError", "", "A tensor with all NaNs was produced in VAE.")


def malformed_json() -> Canned:
    return Canned(200, b'{"images": ["iVBORw0KGgo", "parameters": ')


def not_an_image() -> Canned:
    body = {
        "images": [base64.b64encode(b"this is not an image at all").decode()],
        "parameters": {},
        "info": json.dumps({"seed": 1, "sd_model_name": "fake"}),
    }
    return Canned(200, json.dumps(body).encode())


# --- server --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    json: Any
    at: float


@dataclass
class _State:
    """What /sdapi/v1/progress reports: the running job, or an idle server."""

    job: str = ""
    job_count: int = 0
    job_no: int = 0
    job_timestamp: str = "0"
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    started: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "skipped": False,
            "interrupted": self.interrupted,
            "stopping_generation": False,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }


class SDWebUIFake(LoopbackServer):
    """A WebUI whose generations take `duration` seconds; see the module docstring."""

    shutdown_timeout = SHUTDOWN_TIMEOUT

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        api: bool = True,
        duration: float = 0.15,
        image_size: tuple[int, int] | None = (64, 64),
        model_name: str = "caverna-test-xl",
        model_hash: str = "c0ffee1234",
        checkpoints: Sequence[str] = ("caverna-test-xl.safetensors [c0ffee1234]",),
        extra_images: int = 0,
        prepend_grid: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.auth = auth
        self.api = api
        self.duration = duration
        self.image_size = image_size
        self.model_name = model_name
        self.model_hash = model_hash
        self.checkpoints = tuple(checkpoints)
        self.extra_images = extra_images
        self.prepend_grid = prepend_grid
        self.script: list[Misbehaviour] = []
        self.requests: list[RecordedRequest] = []
        self.progress_answers: list[float] = []
        self.generated = 0
        self._lock = asyncio.Lock()
        self._state = _State()

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._timing, self._record, self._gate])
        app.router.add_post("/sdapi/v1/txt2img", self._txt2img)
        app.router.add_get("/sdapi/v1/progress", self._progress)
        app.router.add_post("/sdapi/v1/interrupt", self._interrupt)
        app.router.add_get("/sdapi/v1/samplers", self._samplers)
        app.router.add_get("/sdapi/v1/sd-models", self._models)
        return app

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]

    # --- middlewares -----------------------------------------------------------------------------

    @web.middleware
    async def _timing(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers["X-Process-Time"] = f"{time.perf_counter() - started:.4f}"
            raise
        response.headers["X-Process-Time"] = f"{time.perf_counter() - started:.4f}"
        return response

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
                request.method,
                request.path,
                dict(request.query),
                CIMultiDict(request.headers),
                body,
                time.monotonic(),
            )
        )
        return await handler(request)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Without --api the routes do not exist; with --api-auth every one wants Basic auth."""
        if not self.api:
            return web.json_response({"detail": "Not Found"}, status=404)
        if self.auth is not None and not self._authorized(request.headers.get("Authorization")):
            return web.json_response(
                {"detail": "Incorrect username or password"},
                status=401,
                headers={"WWW-Authenticate": "Basic"},
            )
        return await handler(request)

    def _authorized(self, header: str | None) -> bool:
        if self.auth is None:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user, password) == self.auth

    # --- routes ----------------------------------------------------------------------------------

    async def _txt2img(self, request: web.Request) -> web.Response:
        behaviour = self.script.pop(0) if self.script else None
        if isinstance(behaviour, Canned):
            return web.Response(
                status=behaviour.status,
                body=behaviour.body,
                content_type=behaviour.content_type,
                headers=behaviour.headers,
            )
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _validation([{"loc": ["body"], "msg": "invalid JSON", "type": "value_error"}])
        if not isinstance(body, dict):
            return _validation([{"loc": ["body"], "msg": "not an object", "type": "type_error"}])
        problems = _check_types(body)
        if problems:
            return _validation(problems)
        params = {**DEFAULTS, **body}
        if not _known_sampler(params.get("sampler_name")):
            return web.json_response(
                {"error": "HTTPException", "detail": "Sampler not found", "body": "", "errors": ""},
                status=400,
            )
        if params["alwayson_scripts"]:
            unknown = next(iter(params["alwayson_scripts"]))
            return _validation(
                [{"loc": ["body", "alwayson_scripts"], "msg": f"script '{unknown}' not found"}]
            )
        duration = behaviour.seconds if isinstance(behaviour, Slow) else self.duration
        async with self._lock:
            seeds = await self._run(params, duration)
        count = int(params["batch_size"]) * int(params["n_iter"])
        answer = await asyncio.to_thread(self._answer, params, seeds, count)
        return web.json_response(answer)

    async def _run(self, params: dict[str, Any], duration: float) -> list[int]:
        """Walk the sampling steps in real time so progress polls see the job advance."""
        steps = max(1, int(params["steps"]))
        count = int(params["batch_size"]) * int(params["n_iter"])
        seed = int(params["seed"])
        first = seed if seed >= 0 else random.randint(0, MAX_SEED - 1)
        self._state = _State(
            job="txt2img",
            job_count=int(params["n_iter"]),
            job_timestamp=time.strftime("%Y%m%d%H%M%S"),
            sampling_steps=steps,
            started=time.monotonic(),
        )
        try:
            for step in range(1, steps + 1):
                if self._state.interrupted:
                    break
                await asyncio.sleep(duration / steps)
                self._state.sampling_step = step
        finally:
            self._state = _State()
            self.generated += 1
        return [first + i for i in range(count)]

    def _answer(self, params: dict[str, Any], seeds: list[int], count: int) -> dict[str, Any]:
        width, height = self.image_size or (int(params["width"]), int(params["height"]))
        model = self._model(params)
        infotexts = [_infotext(params, seed, model, self.model_hash) for seed in seeds]
        images = [
            render_png((width, height), seed, text)
            for seed, text in zip(seeds, infotexts, strict=True)
        ]
        first_image = 0
        if self.prepend_grid:
            images.insert(0, render_png((width * 2, height), seeds[0], infotexts[0]))
            first_image = 1
        images += [render_png((width, height), 7 + i, "") for i in range(self.extra_images)]
        info = {
            "prompt": params["prompt"],
            "all_prompts": [params["prompt"]] * count,
            "negative_prompt": params["negative_prompt"],
            "all_negative_prompts": [params["negative_prompt"]] * count,
            "seed": seeds[0],
            "all_seeds": seeds,
            "subseed": seeds[0] + 1,
            "all_subseeds": [s + 1 for s in seeds],
            "subseed_strength": params["subseed_strength"],
            "width": params["width"],
            "height": params["height"],
            "sampler_name": params["sampler_name"] or "Euler",
            "cfg_scale": params["cfg_scale"],
            "steps": params["steps"],
            "batch_size": params["batch_size"],
            "restore_faces": None,
            "face_restoration_model": None,
            "sd_model_name": model,
            "sd_model_hash": self.model_hash,
            "sd_vae_name": None,
            "sd_vae_hash": None,
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": None,
            "extra_generation_params": {"Schedule type": params["scheduler"]},
            "index_of_first_image": first_image,
            "infotexts": infotexts,
            "styles": params["styles"],
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
            "clip_skip": 1,
            "is_using_inpainting_conditioning": False,
            "version": "v1.10.1",
        }
        return {
            "images": [base64.b64encode(data).decode() for data in images],
            "parameters": params,
            "info": json.dumps(info),
        }

    def _model(self, params: dict[str, Any]) -> str:
        """An override naming a known checkpoint switches model; an unknown one is dropped."""
        wanted = (params.get("override_settings") or {}).get("sd_model_checkpoint")
        for title in self.checkpoints:
            if wanted and title.startswith(str(wanted)):
                return title.split(".")[0]
        return self.model_name

    async def _progress(self, request: web.Request) -> web.Response:
        state = self._state
        if state.job_count == 0:
            progress, eta = 0.0, None
        else:
            progress = state.sampling_step / max(state.sampling_steps, 1)
            elapsed = time.monotonic() - state.started
            eta = elapsed / progress - elapsed if progress > 0 else None
        self.progress_answers.append(progress)
        return web.json_response(
            {
                "progress": progress,
                "eta_relative": eta if eta is not None else 0.0,
                "state": state.as_dict(),
                "current_image": None,
                "textinfo": None,
            }
        )

    async def _interrupt(self, request: web.Request) -> web.Response:
        self._state.interrupted = True
        return web.json_response(None)

    async def _samplers(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": n, "aliases": [], "options": {}} for n in SAMPLERS])

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "title": title,
                    "model_name": title.split(".")[0],
                    "hash": self.model_hash[:8],
                    "sha256": None,
                    "filename": f"/models/Stable-diffusion/{title.split(' ')[0]}",
                    "config": None,
                }
                for title in self.checkpoints
            ]
        )


# --- helpers -------------------------------------------------------------------------------------


def _validation(detail: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"detail": detail}, status=422)


def _check_types(body: dict[str, Any]) -> list[dict[str, Any]]:
    problems = []
    for name in _INT_FIELDS:
        if name in body and (not isinstance(body[name], int) or isinstance(body[name], bool)):
            problems.append(_type_problem(name, "value is not a valid integer", "integer"))
    for name in _NUMBER_FIELDS:
        value = body.get(name, 0)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(_type_problem(name, "value is not a valid float", "float"))
    for name in _STRING_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            problems.append(_type_problem(name, "str type expected", "str"))
    return problems


def _type_problem(name: str, message: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", name], "msg": message, "type": f"type_error.{kind}"}


def _known_sampler(name: object) -> bool:
    """Names carrying a scheduler suffix ("DPM++ 2M Karras") are split, as recent versions do."""
    if name is None:
        return True
    text = str(name)
    for suffix in SCHEDULER_SUFFIXES:
        text = text.removesuffix(f" {suffix}")
    return text in SAMPLERS


def _infotext(params: dict[str, Any], seed: int, model: str, model_hash: str) -> str:
    lines = [str(params["prompt"])]
    if params["negative_prompt"]:
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    settings = [
        f"Steps: {params['steps']}",
        f"Sampler: {params['sampler_name'] or 'Euler'}",
    ]
    if params["scheduler"]:
        settings.append(f"Schedule type: {params['scheduler']}")
    settings += [
        f"CFG scale: {params['cfg_scale']}",
        f"Seed: {seed}",
        f"Size: {params['width']}x{params['height']}",
        f"Model hash: {model_hash[:10]}",
        f"Model: {model}",
        "Version: v1.10.1",
    ]
    lines.append(", ".join(settings))
    return "\n".join(lines)


def render_png(size: tuple[int, int], seed: int, infotext: str) -> bytes:
    """Seeded noise as a PNG with the WebUI's `parameters` text chunk."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    info = PngImagePlugin.PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=1)
    return out.getvalue()


# --- demo ----------------------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-auth", default=None, help="user:pass, as the real --api-auth")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per generation")
    parser.add_argument(
        "--size", type=int, default=256, help="image side in pixels; 0 = the requested size"
    )


def _build(args: argparse.Namespace) -> SDWebUIFake:
    auth = None
    if args.api_auth:
        user, _, password = args.api_auth.partition(":")
        auth = (user, password)
    size = (args.size, args.size) if args.size else None
    return SDWebUIFake(
        auth=auth, duration=args.duration, image_size=size, host=args.host, port=args.port
    )


def main(argv: Sequence[str] | None = None) -> None:
    serve_main(
        _build,
        default_port=9103,
        description="A fake SD WebUI API for local demos.",
        add_arguments=_add_arguments,
        banner=lambda server, args: f"fake SD WebUI API on {server.base_url}/sdapi/v1",
        argv=argv,
    )


if __name__ == "__main__":
    main()
