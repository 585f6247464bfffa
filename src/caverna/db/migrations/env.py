"""Alembic environment: runs on a connection handed over by caverna.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from caverna.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` command line: synchronous driver
        url = config.get_main_option("sqlalchemy.url") or ""
        url = url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")
        with create_engine(url).connect() as sync_connection:
            _run(sync_connection)
        return
    _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite's ALTER TABLE is limited
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
