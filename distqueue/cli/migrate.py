"""``distqueue migrate``: bring a PostgreSQL store's schema to the version this
distqueue needs (or, with ``--to``, to an older one: each migration can be undone)."""

from __future__ import annotations

import asyncio

import click

from distqueue.cli.common import fail


@click.command()
@click.option(
    "--store",
    "store_url",
    required=True,
    metavar="postgresql://USER@HOST:PORT/DB",
    help="The PostgreSQL store (?schema=NAME on the URL, or --schema).",
)
@click.option("--schema", default=None, help="The store's schema (default: distqueue).")
@click.option(
    "--to",
    "to",
    type=int,
    default=None,
    help="Go to this schema version, up or down (0 removes the store's tables);"
    " default: the latest.",
)
@click.option("--status", is_flag=True, help="Say which version the schema is at; change nothing.")
def migrate(store_url: str, schema: str | None, to: int | None, status: bool) -> None:
    """Apply the store's pending schema migrations (servers do it at start unless
    --no-migrate; the store's URL may also say ?migrate=off)."""
    scheme = store_url.partition("://")[0]
    if scheme not in ("postgresql", "postgres"):
        fail("distqueue migrate is for PostgreSQL stores (postgresql://...)", 2)
    from distqueue.store import MissingExtra, require_backend

    try:
        require_backend(store_url)
    except MissingExtra as exc:
        fail(str(exc), 2)
    try:
        lines = asyncio.run(_migrate(store_url, schema, to, status))
    except ValueError as exc:
        fail(str(exc), 2)
    except Exception as exc:  # psycopg's errors, StoreError: one line, exit 1
        fail(f"migrate failed: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}")
    for line in lines:
        click.echo(line)


async def _migrate(url: str, schema: str | None, to: int | None, status: bool) -> list[str]:
    import psycopg

    from distqueue.store import postgres

    base, ours = postgres.split_url(url)
    name = schema or ours.get("schema") or postgres.DEFAULT_SCHEMA
    postgres.sql_for(name)  # a bad name: ValueError
    latest = postgres.migrations()[-1].version
    async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
        if status:
            current = await postgres.applied_version(conn, name)
            return [f"schema {name}: version {current} (latest {latest})"]
        done = await postgres.migrate(conn, name, to=to)
        current = await postgres.applied_version(conn, name)
    return [*done, f"schema {name}: version {current}" + (" (up to date)" if not done else "")]
