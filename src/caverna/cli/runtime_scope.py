"""How a command gets a runtime: opened for the command, closed after it, exit codes shared."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from caverna.bootstrap import Container, DatabaseNotMigrated, Runtime, open_runtime

T = TypeVar("T")

EXIT_FAILED = 1  # the work could not be done (database not migrated, service away, quota)
EXIT_INVALID = 2  # the input was refused, with its problems printed


def run_on_runtime(container: Container, work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run `work` on a runtime of its own and close the runtime whatever happens.

    A shared database that is behind the code ends the command with the reason and
    EXIT_FAILED rather than a traceback: `caverna db upgrade` is the operator's step to take.
    """

    async def main() -> T:
        try:
            runtime = await open_runtime(container)
        except DatabaseNotMigrated as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_FAILED) from None
        try:
            return await work(runtime)
        finally:
            await runtime.aclose()

    return asyncio.run(main())
