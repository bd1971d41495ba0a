"""Stores: where jobs live. ``open_store(url)`` picks the backend by the URL's scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distqueue.config import redact_url
from distqueue.store.base import Enqueued, FailOutcome, Heartbeat, Stats, Store, WorkerRecord

if TYPE_CHECKING:
    from distqueue.store.postgres import PostgresStore
    from distqueue.store.redis import RedisStore

__all__ = [
    "Enqueued",
    "FailOutcome",
    "Heartbeat",
    "MissingExtra",
    "Stats",
    "Store",
    "WorkerRecord",
    "open_store",
    "require_backend",
]

#: the URL schemes of the Redis store (the redis extra)
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel")
#: the URL schemes of the PostgreSQL store (the postgres extra)
POSTGRES_SCHEMES = ("postgresql", "postgres")


class MissingExtra(ImportError):
    """An optional dependency is not installed: the message names the extra to install
    (the CLI prints it as its one line, exit 2)."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs the {extra} extra: pip install 'distqueue[{extra}]'")
        self.extra = extra


def _redis_store() -> type[RedisStore]:
    """The RedisStore class; MissingExtra when redis-py is not installed."""
    try:
        from distqueue.store import redis
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "redis":
            raise  # something else is broken: show it
        raise MissingExtra("the Redis store", "redis") from None
    return redis.RedisStore


def _postgres_store() -> type[PostgresStore]:
    """The PostgresStore class; MissingExtra when psycopg (or psycopg-pool) is not
    installed."""
    try:
        from distqueue.store import postgres
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in ("psycopg", "psycopg_pool"):
            raise  # something else is broken: show it
        raise MissingExtra("the PostgreSQL store", "postgres") from None
    return postgres.PostgresStore


def require_backend(url: str) -> None:
    """Raise MissingExtra now, not at the first call, if the store ``url`` names needs an
    extra that is not installed."""
    scheme = url.partition("://")[0]
    if scheme in REDIS_SCHEMES:
        _redis_store()
    elif scheme in POSTGRES_SCHEMES:
        _postgres_store()


async def open_store(url: str, **options: Any) -> Store:
    """Open a store: a directory or ``sqlite:///DIR`` (embedded), ``redis://HOST:PORT/DB``,
    ``redis+cluster://HOST:PORT`` (any node of a Redis Cluster) or
    ``redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]`` (the master the
    Sentinels name); a Redis URL may end in ``?wait=N`` (every change waits for N
    replicas, docs/scaling.md). ``postgresql://USER@HOST:PORT/DB`` (or ``postgres://``)
    opens the PostgreSQL store, in schema ``distqueue`` unless ``?schema=NAME``,
    applying pending migrations unless ``?migrate=off``.

    Raises StoreError when it cannot be opened, ValueError for an unknown scheme,
    MissingExtra when the backend's extra is not installed (redis-py for Redis, psycopg
    for PostgreSQL).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "sqlite", url
    if scheme == "sqlite":
        from distqueue.store.sqlite import SQLiteStore

        return await SQLiteStore.open(rest, **options)
    if scheme in REDIS_SCHEMES:
        redis_store = _redis_store()
        options.pop("synchronous", None)  # Redis' durability is its own (appendfsync)
        if scheme == "redis+cluster":
            return await redis_store.open("redis://" + rest, cluster=True, **options)
        return await redis_store.open(url, **options)
    if scheme in POSTGRES_SCHEMES:
        return await _postgres_store().open(url, **options)
    raise ValueError(
        f"unknown store {redact_url(url)!r}: expected a directory, sqlite:///DIR,"
        " redis://HOST:PORT/DB, "
        "redis+cluster://HOST:PORT, redis+sentinel://HOST:PORT/MASTER_NAME or"
        " postgresql://USER@HOST:PORT/DB"
    )
