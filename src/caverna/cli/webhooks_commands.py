"""`caverna webhooks secret`: the key receivers check webhook signatures with.

Without CAVERNA_WEBHOOK_SECRET the key is derived from the signing secret, which nobody types;
this prints it, so an operator can hand it to the people who run the receivers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from caverna.bootstrap import Container, webhook_secret

ContainerFactory = Callable[[list[Path] | None], Container]


def register(app: typer.Typer, make_container: ContainerFactory, _fail: Any) -> None:
    webhooks_app = typer.Typer(help="Completion webhooks.", no_args_is_help=True)
    app.add_typer(webhooks_app, name="webhooks")

    @webhooks_app.command("secret")
    def secret(
        packs: Annotated[list[Path] | None, typer.Option("--packs", hidden=True)] = None,
    ) -> None:
        """Print the key of webhook signatures, alone on one line."""
        typer.echo(webhook_secret(make_container(packs).settings).decode())
