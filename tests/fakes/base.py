"""Plumbing shared by the fake provider servers: serving an aiohttp app, scripted faults, a CLI.

A fake subclasses `LoopbackServer`, builds its routes in `build_app()`, and gets `start()`,
`stop()` and `async with` for free; `ScriptedFaults` adds the `fail_next()` queue of `Fault`s
that the OpenAI and Stability fakes answer with; `serve_main()` is the body of each module's
`main()` that serves a fake until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

from aiohttp import web

LOOPBACK = "127.0.0.1"


class LoopbackServer:
    """An aiohttp app served on `host` (loopback by default), on a free port unless given one.

    Subclasses implement `build_app()` and may hook `on_started()` / `on_stopping()`. `stop()`
    sets `_closing` first, so handlers that wait on it (scripted delays) end at once.
    """

    #: seconds `stop()` gives in-flight handlers before cutting them off
    shutdown_timeout: float = 0.5
    #: cancel a handler when its client disconnects (so slow answers do not linger)
    handler_cancellation: bool = False
    #: appended to "http://host:port" to make `base_url` (e.g. an API prefix such as "/v1")
    url_suffix: str = ""

    def __init__(self, *, host: str = LOOPBACK, port: int = 0) -> None:
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def on_started(self) -> None:
        """Called once the socket is listening and `base_url` is set."""

    async def on_stopping(self) -> None:
        """Called by `stop()` before the runner is cleaned up."""

    async def start(self, port: int | None = None) -> str:
        """Serve on `port` (None: the one given to the constructor; 0: a free one)."""
        runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            handler_cancellation=self.handler_cancellation,
            shutdown_timeout=self.shutdown_timeout,
        )
        await runner.setup()
        bind_port = self._port if port is None else port
        family = socket.getaddrinfo(self._host, bind_port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, bind_port))
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        host, bound = sock.getsockname()[:2]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.base_url = f"http://{shown}:{bound}{self.url_suffix}"
        await self.on_started()
        return self.base_url

    async def stop(self) -> None:
        self._closing.set()
        await self.on_stopping()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@dataclass(frozen=True)
class Fault:
    """One scripted answer that replaces the normal one for a single call.

    With `status` None the call is answered normally, after `delay` seconds.
    """

    status: int | None = None
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


class ScriptedFaults(LoopbackServer):
    """A fake whose next calls can be scripted to misbehave with `fail_next(*faults)`."""

    def __init__(self, *, host: str = LOOPBACK, port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.script: deque[Fault] = deque()

    def fail_next(self, *faults: Fault) -> None:
        """Queue misbehaviours: the next calls get them in order, later calls answer normally."""
        self.script.extend(faults)

    def fault_headers(self) -> dict[str, str]:
        """Headers every scripted answer carries (a fault's own headers override them)."""
        return {}

    async def _next_fault(self) -> web.StreamResponse | None:
        """The scripted answer for this call, or None to answer normally (after any delay)."""
        if not self.script:
            return None
        fault = self.script.popleft()
        if fault.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.delay)
        if fault.status is None:
            return None
        return web.Response(
            status=fault.status,
            body=fault.body,
            headers={"Content-Type": fault.content_type, **self.fault_headers(), **fault.headers},
        )


def serve_main(
    factory: Callable[[argparse.Namespace], LoopbackServer],
    *,
    default_port: int,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    banner: Callable[[LoopbackServer, argparse.Namespace], str] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Parse `--port` plus `add_arguments`' options, then serve `factory(args)` until Ctrl-C.

    `banner(server, args)` is the line printed once the server is up (default: its URL).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=default_port)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)

    async def serve() -> None:
        server = factory(args)
        await server.start(args.port)
        line = banner(server, args) if banner is not None else f"serving on {server.base_url}"
        print(line, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
