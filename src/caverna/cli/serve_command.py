"""`caverna serve`: the API (and, in the embedded mode, the workers) in one or more processes.

One process serves the API from one event loop, which is one core at most. `--processes N` runs
N copies of it on the same port (uvicorn's supervisor: one listening socket shared by N spawned
processes, a process that dies is replaced), each with its own runtime, workers included: the job
queue, bulk operations and webhooks are claimed under leases in the database, so N processes on
one SQLite file never take the same work. What must happen once happens in the supervisor before
any of them starts: migrating the database and making (and printing) the first admin key.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from caverna.api.app import ApiOptions, create_app
from caverna.bootstrap import Container, DatabaseNotMigrated, open_runtime
from caverna.cli.runtime_scope import EXIT_FAILED
from caverna.domain.accounts import NewKey
from caverna.web.app import install_web

ContainerFactory = Callable[[list[Path] | None], Container]
PROCESSES_ENV = "CAVERNA_SERVE_PROCESSES"
MAX_PROCESSES = 64


def announce(new: NewKey) -> None:
    """The first admin key is shown exactly once, on the very first start; it is not stored."""
    lines = [
        "",
        "First start: created the admin user 'admin' and an API key for it.",
        "It is shown only this once; keep it somewhere safe (make more: caverna keys create).",
        f"  admin API key: {new.token}",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def server_stack() -> str:
    """What uvicorn's "auto" picks: uvloop and httptools when installed (about a fifth less CPU
    per request than asyncio's loop and h11), else the pure-Python pair."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop}, {http}"


def build_app(
    make_container: ContainerFactory,
    run_workers: bool,
    announce_admin_key: Callable[[NewKey], None] | None = announce,
) -> FastAPI:
    """The whole app (API and studio) over a new container: one per serving process."""
    container = make_container(None)
    api = create_app(
        container,
        options=ApiOptions(run_workers=run_workers, announce_admin_key=announce_admin_key),
    )
    install_web(api)
    return api


async def prepare(container: Container) -> NewKey | None:
    """Migrate the database and make the first admin key, once, before the processes start.

    Each process does both again on start, as a no-op: doing them here first means the key is
    printed by the supervisor alone and no two processes ever race to migrate.
    """
    runtime = await open_runtime(container)
    try:
        return await runtime.accounts.ensure_first_admin()
    finally:
        await runtime.aclose()


def _config(app: Any, host: str, port: int, processes: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        factory=processes > 1,
        host=host,
        port=port,
        workers=processes,
        loop="auto",
        http="auto",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


def register(app: typer.Typer, make_container: ContainerFactory, _fail: Any) -> None:
    @app.command("serve")
    def serve(
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
        no_workers: Annotated[
            bool,
            typer.Option("--no-workers", help="API only: leave the queue to `caverna worker`s."),
        ] = False,
        processes: Annotated[
            int,
            typer.Option(
                "--processes",
                min=1,
                max=MAX_PROCESSES,
                envvar=PROCESSES_ENV,
                help="Serving processes on the same port, each with its own workers.",
            ),
        ] = 1,
    ) -> None:
        """Serve the HTTP API on HOST:PORT (workers included unless --no-workers)."""
        shown = f"[{host}]" if ":" in host else host
        workers = "API only" if no_workers else "with workers"
        if processes == 1:
            server = uvicorn.Server(
                _config(build_app(make_container, not no_workers), host, port, 1)
            )
            typer.echo(
                f"Caverna {workers} on http://{shown}:{port}  (studio: /, API docs: /docs)"
                f"  [{server_stack()}]"
            )
            server.run()
            return
        container = make_container(None)  # settings are checked before anything starts
        try:
            first = asyncio.run(prepare(container))
        except DatabaseNotMigrated as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_FAILED) from None
        if first is not None:
            announce(first)
        # the processes are spawned, not forked: each builds its own container and runtime
        factory = functools.partial(build_app, make_container, not no_workers, None)
        config = _config(factory, host, port, processes)
        socket = config.bind_socket()
        bound = socket.getsockname()[1]  # the port asked for, or the free one --port 0 got
        typer.echo(
            f"Caverna {workers} on http://{shown}:{bound}, {processes} processes"
            f"  (studio: /, API docs: /docs)  [{server_stack()}]"
        )
        Multiprocess(config, sockets=[socket]).run()
