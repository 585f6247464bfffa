"""`caverna serve`: the API (and, in the embedded mode, the workers) in one process."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from caverna.api.app import ApiOptions, create_app
from caverna.bootstrap import Container
from caverna.domain.accounts import NewKey
from caverna.web.app import install_web

ContainerFactory = Callable[[list[Path] | None], Container]


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


def register(app: typer.Typer, make_container: ContainerFactory, _fail: Any) -> None:
    @app.command("serve")
    def serve(
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
        no_workers: Annotated[
            bool,
            typer.Option("--no-workers", help="API only: leave the queue to `caverna worker`s."),
        ] = False,
    ) -> None:
        """Serve the HTTP API on HOST:PORT (workers included unless --no-workers)."""
        container = make_container(None)
        api = create_app(
            container,
            options=ApiOptions(run_workers=not no_workers, announce_admin_key=announce),
        )
        install_web(api)
        config = uvicorn.Config(
            api,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)
        shown = f"[{host}]" if ":" in host else host
        workers = "API only" if no_workers else "with workers"
        typer.echo(f"Caverna {workers} on http://{shown}:{port}  (studio: /, API docs: /docs)")
        server.run()
