"""Shared fixtures. The ``store`` fixture is parametrized over every backend: a test
written against it runs on each (only sqlite today; redis and postgres join here)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from distqueue.store import Store
from distqueue.store.sqlite import SQLiteStore
from tests.redis_server import redis_cluster_url, redis_url

# no per-example deadline: the machines are shared and noisy, and a slow example is
# not a wrong one (a test that means to bound time sets its own)
settings.register_profile("distqueue", deadline=None)
settings.load_profile("distqueue")

BACKENDS = ["sqlite", "redis", "redis-cluster", "postgres"]
_PREFIXES = itertools.count(1)


class Backend:
    """Opens stores of one backend on one underlying storage, so a test can close a
    store and open it again on the same data (a restart)."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self.tmp_path = tmp_path
        self.prefix = f"t{next(_PREFIXES)}"
        self._open: list[Store] = []
        #: postgres: this backend's own schema (made by its first open, dropped at close_all)
        self.schema: str | None = None

    async def open(self, *, fast: bool = False, **options: Any) -> Store:
        """Open a store on this backend's data. ``fast``: skip the fsyncs (for tests of
        logic, not of durability)."""
        if self.name == "sqlite":
            if fast:
                options.setdefault("synchronous", "OFF")
            store: Store = await SQLiteStore.open(self.tmp_path / "data", **options)
        elif self.name in ("redis", "redis-cluster"):
            from distqueue.store import open_store

            # one redis-server (or cluster) for the session; each Backend its own prefix
            url = redis_url() if self.name == "redis" else redis_cluster_url()
            store = await open_store(url, prefix=self.prefix, **options)
        elif self.name == "postgres":
            from distqueue.store import open_store
            from tests.postgres_server import new_schema, postgres_url

            # one database for the session; each Backend a fresh schema of its own
            url = postgres_url()
            if self.schema is None:
                self.schema = new_schema(self.prefix)
            if fast:
                options.setdefault("synchronous", "OFF")
            store = await open_store(url, schema=self.schema, **options)
        else:  # pragma: no cover - a backend listed but not wired here
            raise AssertionError(f"unknown backend {self.name}")
        self._open.append(store)
        return store

    async def close_all(self) -> None:
        for store in self._open:
            await store.close()
        self._open.clear()
        if self.schema is not None:
            from tests.postgres_server import drop_schema

            drop_schema(self.schema)
            self.schema = None


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    await b.close_all()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()


@pytest.fixture
def server_proc(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A factory of real ``distqueue server`` processes; all stopped at teardown."""
    from tests.procs import ServerProc

    started: list[ServerProc] = []

    def start(*extra: str, data: Path | None = None, port: int = 0) -> ServerProc:
        proc = ServerProc(data or tmp_path / "server-data", *extra, port=port)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def worker_proc():  # type: ignore[no-untyped-def]
    """A factory of real ``distqueue worker`` processes; all stopped at teardown."""
    from tests.procs import WorkerProc

    started: list[WorkerProc] = []

    def start(server: str, *extra: str) -> WorkerProc:
        proc = WorkerProc(server, *extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def own_redis():  # type: ignore[no-untyped-def]
    """A redis-server of this test's own (a free port, a temp dir); its URL."""
    import tempfile

    from tests.redis_server import free_port, redis_url, start_redis

    redis_url()  # skips (or fails under DISTQUEUE_REQUIRE_REDIS) without redis-server
    port = free_port()
    proc = start_redis(port, tempfile.mkdtemp(prefix="dq-redis-"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()
