"""Stores: where jobs live. ``open_store(url)`` picks the backend by the URL's scheme."""

from __future__ import annotations

from typing import Any

from distqueue.config import redact_url
from distqueue.store.base import Enqueued, FailOutcome, Heartbeat, Stats, Store, WorkerRecord

__all__ = ["Enqueued", "FailOutcome", "Heartbeat", "Stats", "Store", "WorkerRecord", "open_store"]


async def open_store(url: str, **options: Any) -> Store:
    """Open a store: a directory or ``sqlite:///DIR`` (embedded), ``redis://HOST:PORT/DB``,
    ``redis+cluster://HOST:PORT`` (any node of a Redis Cluster) or
    ``redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]`` (the master the
    Sentinels name); a Redis URL may end in ``?wait=N`` (every change waits for N
    replicas, docs/scaling.md).

    Raises StoreError when it cannot be opened, ValueError for an unknown scheme.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "sqlite", url
    if scheme == "sqlite":
        from distqueue.store.sqlite import SQLiteStore

        return await SQLiteStore.open(rest, **options)
    if scheme in ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel"):
        from distqueue.store.redis import RedisStore

        options.pop("synchronous", None)  # Redis' durability is its own (appendfsync)
        if scheme == "redis+cluster":
            return await RedisStore.open("redis://" + rest, cluster=True, **options)
        return await RedisStore.open(url, **options)
    raise ValueError(
        f"unknown store {redact_url(url)!r}: expected a directory, sqlite:///DIR,"
        " redis://HOST:PORT/DB, "
        "redis+cluster://HOST:PORT or redis+sentinel://HOST:PORT/MASTER_NAME"
    )
