"""A Midjourney proxy on loopback that speaks the wire protocol of novicezk/midjourney-proxy.

With `flavour="trueai"` it takes on the trueai-org/midjourney-proxy differences an adapter can
see: a `seed` and `buttons` on tasks, 204 for an unknown task, HTTP 404 {code: 3} when a change
names an unknown task, no `/mj/task/queue` route, and a plain-text 401.

Tasks advance one step per fetch: NOT_START -> SUBMITTED -> IN_PROGRESS ("0%", then each of
`progress_steps`) -> SUCCESS ("100%"). A finished IMAGINE points `imageUrl` at a 2x2 grid served
by the fake itself, each quadrant a different colour (QUADRANT_COLORS) under light noise; an
UPSCALE points at a single image in its quadrant's colour, twice a grid tile's size.

`script` holds misbehaviours; each submit (imagine or change) consumes the next entry, if any:
a `Reply` answers the submit instead of creating a task, the others shape the task it creates.
Every request is recorded in `requests`.

Run it for a local demo (Ctrl-C stops it):

    python -m tests.fakes.midjourney_server --port 9102 [--secret s3cret] [--flavour trueai]
    curl -s -H 'mj-api-secret: s3cret' -H 'content-type: application/json' \\
        -d '{"prompt": "a cave --v 7"}' http://127.0.0.1:9102/mj/submit/imagine
    curl -s -H 'mj-api-secret: s3cret' http://127.0.0.1:9102/mj/task/<result>/fetch
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict
from PIL import Image

from tests.fakes.base import LoopbackServer, serve_main

Flavour = Literal["novicezk", "trueai"]
ImageFormat = Literal["png", "webp"]

QUADRANT_COLORS: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40),
    (40, 200, 60),
    (40, 70, 220),
    (230, 210, 40),
)
# stop() cuts deliberately slow answers short instead of waiting them out
SHUTDOWN_TIMEOUT = 0.1
NOISE_SHARE = 0.2  # how much of each pixel is noise: enough to be a photo, not a flat fill


# --- script --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    """The submit behaves normally (a placeholder to reach a later entry)."""


@dataclass(frozen=True)
class Reply:
    """The submit answers this instead of creating a task (code 23, 24, 3, 4, 9, ...)."""

    code: int
    description: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    result: str | None = None
    status: int = 200


@dataclass(frozen=True)
class Fail:
    """The task ends in FAILURE with `reason` after `after` in-progress polls."""

    reason: str
    after: int = 1


@dataclass(frozen=True)
class ForeignImage:
    """The finished task's imageUrl points at `host` (same port) instead of the fake's address."""

    host: str = "localhost"


@dataclass(frozen=True)
class Vanish:
    """Fetching the task answers nothing, as for an id the proxy does not know."""


@dataclass(frozen=True)
class Stall:
    """The task never finishes: it stays IN_PROGRESS at a fixed percentage."""

    progress: str = "12%"


@dataclass(frozen=True)
class Slow:
    """Every fetch of the task waits `delay` seconds before answering."""

    delay: float


@dataclass(frozen=True)
class Queued:
    """The submit is accepted with code 22, `ahead` tasks in front of it."""

    ahead: int = 2


@dataclass(frozen=True)
class WebpImage:
    """The finished task's image is served as WebP instead of the fake's default format."""


Misbehaviour = Accept | Reply | Fail | ForeignImage | Vanish | Stall | Slow | Queued | WebpImage


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    json: Any


@dataclass
class FakeTask:
    id: str
    action: str
    prompt: str
    state: str | None
    index: int | None
    behaviour: Misbehaviour
    fetches: int = 0
    submit_time: int = 0
    seed: str = ""
    image_format: ImageFormat = "png"


class MidjourneyProxyFake(LoopbackServer):
    """A proxy whose tasks finish after a few polls; see the module docstring for the script."""

    shutdown_timeout = SHUTDOWN_TIMEOUT

    def __init__(
        self,
        *,
        secret: str | None = None,
        flavour: Flavour = "novicezk",
        tile_size: tuple[int, int] = (48, 48),
        image_format: ImageFormat = "png",
        progress_steps: Sequence[int] = (0, 35, 70),
        banned_words: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.secret = secret
        self.flavour: Flavour = flavour
        self.tile_size = tile_size
        self.image_format: ImageFormat = image_format
        self.progress_steps = tuple(progress_steps)
        self.banned_words = tuple(banned_words)
        self.script: list[Misbehaviour] = []
        self.requests: list[RecordedRequest] = []
        self.tasks: dict[str, FakeTask] = {}
        self._ids = itertools.count(1_700_000_000_000_001)

    # --- lifecycle -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._authorize])
        app.router.add_post("/mj/submit/imagine", self._imagine)
        app.router.add_post("/mj/submit/change", self._change)
        app.router.add_get("/mj/task/{id}/fetch", self._fetch)
        app.router.add_get("/mj/task/list", self._list)
        app.router.add_post("/mj/task/list-by-condition", self._list_by_condition)
        if self.flavour == "novicezk":
            app.router.add_get("/mj/task/queue", self._queue)
        app.router.add_get("/mj/image/{name}", self._image)
        return app

    # --- queries for tests -----------------------------------------------------------------------

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path.startswith(path_prefix) and (method is None or r.method == method)
        ]

    # --- middlewares -----------------------------------------------------------------------------

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
            )
        )
        return await handler(request)

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.secret is not None:
            given = request.headers.get("mj-api-secret")
            if self.flavour == "trueai" and given is None:
                given = request.headers.get("Authorization")
            if given != self.secret:
                if self.flavour == "trueai":
                    return web.Response(status=401, text="unauthorized")
                return web.Response(status=401)
        return await handler(request)

    # --- submit ----------------------------------------------------------------------------------

    async def _imagine(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        prompt = str(body.get("prompt") or "").strip()
        behaviour = self._next()
        if isinstance(behaviour, Reply):
            return _reply(behaviour)
        if not prompt:
            return _submit_result(4, "prompt不能为空")
        lowered = prompt.lower()
        for word in self.banned_words:
            if word.lower() in lowered:
                return _submit_result(
                    24, "可能包含敏感词", properties={"promptEn": prompt, "bannedWord": word}
                )
        task = self._create("IMAGINE", prompt, body.get("state"), None, behaviour)
        return self._accepted(task, behaviour)

    async def _change(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        behaviour = self._next()
        if isinstance(behaviour, Reply):
            return _reply(behaviour)
        task_id = str(body.get("taskId") or "")
        action = body.get("action")
        index = body.get("index")
        if not task_id:
            return _submit_result(4, "taskId不能为空")
        if action not in ("UPSCALE", "VARIATION", "REROLL"):
            return _submit_result(4, "action参数错误")
        target = self.tasks.get(task_id)
        if target is None:
            status = 404 if self.flavour == "trueai" else 200
            return _submit_result(3, "关联任务不存在或已失效", status=status)
        if self._status(target)[0] != "SUCCESS":
            return _submit_result(4, "关联任务状态错误")
        if target.action not in ("IMAGINE", "VARIATION", "REROLL", "BLEND"):
            return _submit_result(4, "关联任务不允许执行变化")
        if action != "REROLL" and index not in (1, 2, 3, 4):
            return _submit_result(4, "index参数错误")
        task = self._create(str(action), target.prompt, body.get("state"), index, behaviour)
        return self._accepted(task, behaviour)

    def _next(self) -> Misbehaviour:
        return self.script.pop(0) if self.script else Accept()

    def _create(
        self,
        action: str,
        prompt: str,
        state: object,
        index: object,
        behaviour: Misbehaviour,
    ) -> FakeTask:
        task_id = str(next(self._ids))
        task = FakeTask(
            id=task_id,
            action=action,
            prompt=prompt,
            state=None if state is None else str(state),
            index=index if isinstance(index, int) else None,
            behaviour=behaviour,
            submit_time=int(asyncio.get_running_loop().time() * 1000),
            seed=str(random.Random(task_id).randrange(10**9, 4 * 10**9)),
            image_format="webp" if isinstance(behaviour, WebpImage) else self.image_format,
        )
        self.tasks[task_id] = task
        return task

    def _accepted(self, task: FakeTask, behaviour: Misbehaviour) -> web.Response:
        properties = {"discordInstanceId": "fake-instance"}
        if isinstance(behaviour, Queued):
            return _submit_result(
                22,
                f"排队中\uff0c前面还有{behaviour.ahead}个任务",
                result=task.id,
                properties={**properties, "numberOfQueues": behaviour.ahead},
            )
        return _submit_result(1, "提交成功", result=task.id, properties=properties)

    # --- tasks -----------------------------------------------------------------------------------

    def _status(self, task: FakeTask) -> tuple[str, str | None]:
        """The task's (status, progress) after `task.fetches` polls."""
        behaviour = task.behaviour
        schedule: list[tuple[str, str | None]] = [("NOT_START", None), ("SUBMITTED", "0%")]
        if isinstance(behaviour, Stall):
            schedule.append(("IN_PROGRESS", behaviour.progress))
        elif isinstance(behaviour, Fail):
            schedule += [("IN_PROGRESS", "0%")] * behaviour.after + [("FAILURE", "")]
        else:
            schedule += [("IN_PROGRESS", f"{step}%") for step in self.progress_steps]
            schedule.append(("SUCCESS", "100%"))
        return schedule[min(task.fetches, len(schedule) - 1)]

    async def _fetch(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["id"])
        if task is not None and isinstance(task.behaviour, Slow):
            await asyncio.sleep(task.behaviour.delay)
        if task is None or isinstance(task.behaviour, Vanish):
            # novicezk: Spring writes nothing for a null result; trueai: ASP.NET answers 204
            return web.Response(status=204 if self.flavour == "trueai" else 200)
        view = self._view(task)
        task.fetches += 1
        return web.json_response(view)

    def _view(self, task: FakeTask) -> dict[str, Any]:
        status, progress = self._status(task)
        image_url = None
        if status == "IN_PROGRESS":
            image_url = f"{self.base_url}/mj/image/{task.id}-preview.{task.image_format}"
        elif status == "SUCCESS":
            image_url = f"{self.base_url}/mj/image/{task.id}.{task.image_format}"
            if isinstance(task.behaviour, ForeignImage):
                port = self.base_url.rsplit(":", 1)[1]
                image_url = f"http://{task.behaviour.host}:{port}/mj/image/{task.id}.png"
        fail_reason = task.behaviour.reason if isinstance(task.behaviour, Fail) else None
        started = status not in ("NOT_START",)
        finished = status in ("SUCCESS", "FAILURE")
        description = (
            f"/imagine {task.prompt}"
            if task.action == "IMAGINE"
            else f"/up {task.id} {task.action[0]}{task.index}"
        )
        view: dict[str, Any] = {
            "id": task.id,
            "action": task.action,
            "status": status,
            "prompt": task.prompt,
            "promptEn": task.prompt,
            "description": description,
            "state": task.state,
            "submitTime": task.submit_time,
            "startTime": task.submit_time + 500 if started else None,
            "finishTime": task.submit_time + 9_000 if finished else None,
            "progress": progress,
            "imageUrl": image_url,
            "failReason": fail_reason if status == "FAILURE" else None,
            "properties": {
                "finalPrompt": task.prompt,
                "discordInstanceId": "fake-instance",
            },
        }
        if self.flavour == "trueai":
            view["botType"] = "MID_JOURNEY"
            view["mode"] = "FAST"
            if status == "SUCCESS":
                view["seed"] = task.seed
                view["imageUrls"] = [{"url": image_url}]
                if task.action == "IMAGINE":
                    view["buttons"] = [
                        {
                            "customId": f"MJ::JOB::upsample::{n}::{task.id}",
                            "emoji": "",
                            "label": f"U{n}",
                            "type": 2,
                            "style": 2,
                        }
                        for n in range(1, 5)
                    ]
        return view

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([self._view(task) for task in self.tasks.values()])

    async def _queue(self, request: web.Request) -> web.Response:
        waiting = [t for t in self.tasks.values() if self._status(t)[0] == "NOT_START"]
        return web.json_response([self._view(task) for task in waiting])

    async def _list_by_condition(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ids = body.get("ids") or []
        found = [self.tasks[str(i)] for i in ids if str(i) in self.tasks]
        return web.json_response([self._view(task) for task in found])

    async def _image(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        task_id, _, extension = name.partition(".")
        task = self.tasks.get(task_id.removesuffix("-preview"))
        if task is None or extension not in ("png", "webp"):
            raise web.HTTPNotFound()
        size = self.tile_size
        image_format: ImageFormat = "webp" if extension == "webp" else "png"
        if task.action == "UPSCALE" and task.index is not None:
            data = await asyncio.to_thread(
                render_tile,
                QUADRANT_COLORS[task.index - 1],
                (size[0] * 2, size[1] * 2),
                image_format,
                task.id,
            )
        else:
            data = await asyncio.to_thread(render_grid, size, image_format, task.id)
        return web.Response(body=data, content_type=f"image/{image_format}")


# --- images --------------------------------------------------------------------------------------


def _noisy(color: tuple[int, int, int], size: tuple[int, int], seed: str) -> Image.Image:
    noise = Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))
    return Image.blend(Image.new("RGB", size, color), noise, NOISE_SHARE)


def render_tile(
    color: tuple[int, int, int], size: tuple[int, int], image_format: ImageFormat, seed: str
) -> bytes:
    out = io.BytesIO()
    _noisy(color, size, seed).save(out, format=image_format.upper())
    return out.getvalue()


def render_grid(tile: tuple[int, int], image_format: ImageFormat, seed: str) -> bytes:
    """A 2x2 grid, quadrant n (U1..U4 order: left to right, top to bottom) in colour n."""
    width, height = tile
    grid = Image.new("RGB", (width * 2, height * 2))
    for n, color in enumerate(QUADRANT_COLORS):
        grid.paste(_noisy(color, tile, f"{seed}-{n}"), ((n % 2) * width, (n // 2) * height))
    out = io.BytesIO()
    grid.save(out, format=image_format.upper())
    return out.getvalue()


# --- wire helpers --------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _submit_result(
    code: int,
    description: str,
    *,
    result: str | None = None,
    properties: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "description": description,
            "result": result,
            "properties": properties or {},
        },
        status=status,
    )


def _reply(reply: Reply) -> web.Response:
    return _submit_result(
        reply.code,
        reply.description,
        result=reply.result,
        properties=reply.properties,
        status=reply.status,
    )


# --- demo ----------------------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secret", default=None, help="require this mj-api-secret header")
    parser.add_argument("--flavour", choices=("novicezk", "trueai"), default="novicezk")
    parser.add_argument("--size", type=int, default=256, help="side of one grid tile, in pixels")
    parser.add_argument("--banned", action="append", default=[], help="a banned word (repeat)")


def _build(args: argparse.Namespace) -> MidjourneyProxyFake:
    return MidjourneyProxyFake(
        secret=args.secret,
        flavour=args.flavour,
        tile_size=(args.size, args.size),
        host=args.host,
        port=args.port,
        banned_words=args.banned,
    )


def main(argv: Sequence[str] | None = None) -> None:
    serve_main(
        _build,
        default_port=9102,
        description="A fake Midjourney proxy for local demos.",
        add_arguments=_add_arguments,
        banner=lambda server, args: (
            f"fake Midjourney proxy ({args.flavour}) on {server.base_url}/mj"
        ),
        argv=argv,
    )


if __name__ == "__main__":
    main()
