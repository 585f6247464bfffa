"""`caverna keys`: create, list and revoke API keys from the machine that runs Caverna.

Whoever can run this command can already read the database, so it needs no key of its own;
its actions are audited with the actor `cli`.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from caverna.bootstrap import Container, Runtime
from caverna.cli.options import JsonOpt
from caverna.cli.render import problems_table
from caverna.cli.runtime_scope import EXIT_INVALID, run_on_runtime
from caverna.domain.accounts import KeyInfo, NewKey, Role, check_user_id, parse_role
from caverna.domain.problems import (
    InvalidParametersError,
    NotFound,
    Problem,
    ProblemCode,
    ProblemsError,
)

T = TypeVar("T")
ACTOR = "cli"

ContainerFactory = Callable[[list[Path] | None], Container]
FailHandler = Callable[[ProblemsError, bool], Any]


def register(app: typer.Typer, make_container: ContainerFactory, fail: FailHandler) -> None:
    keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    def run(work: Callable[[Runtime], Awaitable[T]], as_json: bool = False) -> T:
        container = make_container(None)

        try:
            return run_on_runtime(container, work)
        except ProblemsError as exc:
            fail(exc, as_json)
            raise typer.Exit(EXIT_INVALID) from None
        except NotFound as exc:
            _not_found(exc, as_json)

    @keys_app.command("create")
    def keys_create(
        user: Annotated[str, typer.Option("--user", help="The key's owner; created if new.")],
        role: Annotated[
            str | None,
            typer.Option("--role", help="Role of a new user: user (default) or admin."),
        ] = None,
        name: Annotated[str, typer.Option("--name", help="A label to tell keys apart.")] = "",
    ) -> None:
        """Create an API key. The key is printed once, alone on the last line."""
        # checked before anything opens the database, so a typo creates nothing at all
        problems: list[Problem] = []
        wanted: Role | None = None
        try:
            check_user_id(user, "--user")
        except ProblemsError as exc:
            problems.extend(exc.problems)
        try:
            wanted = parse_role(role, "--role") if role is not None else None
        except ProblemsError as exc:
            problems.extend(exc.problems)
        if problems:
            fail(InvalidParametersError(tuple(problems), "invalid key request"), False)
            raise typer.Exit(EXIT_INVALID)

        async def work(runtime: Runtime) -> NewKey:
            return await runtime.accounts.create_key(user, role=wanted, name=name, actor=ACTOR)

        new = run(work)
        key = new.key
        console = Console(highlight=False, soft_wrap=True)
        owner = f"new user [bold]{key.user_id}[/]" if new.user_created else key.user_id
        label = f" '{key.name}'" if key.name else ""
        console.print(f"[green]✓[/] API key {key.prefix}…{label} for {owner} (id {key.id})")
        if new.user_created:
            console.print(f"  role: {wanted or Role.USER}")
        console.print("  [yellow]it is shown only now; store it somewhere safe[/]")
        typer.echo(new.token)

    @keys_app.command("list")
    def keys_list(
        user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """List API keys (prefixes only: the keys themselves are never stored)."""

        async def work(runtime: Runtime) -> list[KeyInfo]:
            return await runtime.accounts.list_keys(user)

        keys = run(work, as_json)
        if as_json:
            typer.echo(json.dumps([_key_dict(key) for key in keys], indent=2))
            return
        table = Table(title=f"API keys of {user}" if user else "API keys")
        table.add_column("id", no_wrap=True, min_width=36)  # whole, to paste into revoke
        table.add_column("user")
        table.add_column("prefix", no_wrap=True)
        for column in ("name", "created (UTC)", "last used (UTC)", "revoked (UTC)"):
            table.add_column(column)
        for key in keys:
            table.add_row(
                str(key.id),
                key.user_id,
                key.prefix,
                key.name,
                _when(key.created_at),
                _when(key.last_used_at),
                _when(key.revoked_at),
            )
        Console(highlight=False).print(table)

    @keys_app.command("revoke")
    def keys_revoke(
        key_id: Annotated[str, typer.Argument(help="The key's id, as `caverna keys list` shows.")],
    ) -> None:
        """Revoke an API key at once; revoking it again changes nothing."""
        try:
            parsed = uuid.UUID(key_id)
        except ValueError:
            problem = Problem(ProblemCode.INVALID_TYPE, "KEY_ID", f"'{key_id}' is not a key id")
            fail(InvalidParametersError((problem,), "invalid key id"), False)
            raise typer.Exit(EXIT_INVALID) from None

        async def work(runtime: Runtime) -> KeyInfo:
            return await runtime.accounts.revoke_key(parsed, actor=ACTOR)

        key = run(work)
        assert key.revoked_at is not None
        typer.echo(
            f"revoked {key.prefix}… of {key.user_id} ({key.id}) at {_when(key.revoked_at)} UTC"
        )

    users_app = typer.Typer(help="Users: passwords for the web studio.", no_args_is_help=True)
    app.add_typer(users_app, name="users")

    @users_app.command("set-password")
    def users_set_password(
        user: Annotated[str, typer.Argument(help="The user (see `caverna keys list`).")],
        password_stdin: Annotated[
            bool,
            typer.Option("--password-stdin", help="Read the password from standard input."),
        ] = False,
    ) -> None:
        """Set the password a user signs in to the web studio with (10 characters or more)."""
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = typer.prompt("password", hide_input=True, confirmation_prompt=True)

        async def work(runtime: Runtime) -> None:
            await runtime.accounts.set_password(user, password, actor=ACTOR)

        run(work)
        typer.echo(f"password set for {user}")


def _not_found(error: NotFound, as_json: bool) -> NoReturn:
    if as_json:
        typer.echo(json.dumps(error.to_dict(), indent=2))
    else:
        Console(highlight=False).print(problems_table([error.problem], error.summary))
    raise typer.Exit(EXIT_INVALID)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _key_dict(key: KeyInfo) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "user_id": key.user_id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }
