"""Shared fixtures. The ``store`` fixture is parametrized over every backend: a test
written against it runs on each (only sqlite today; redis and postgres join here)."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
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


# -- tests in parallel (pytest-xdist, ``-n`` in pyproject.toml's addopts) ---------------------
#
# Most tests wait: on leases, processes starting, timers. They run three at a time. A test
# marked ``serial`` asserts on time as it passes (a canary's PING within 100 ms, a
# completion recorded within 50 ms): it runs alone, with no other test loading the
# machine's two cores. A lock shared by the run's workers (flock: released if a worker
# dies): every test holds it shared, a serial test exclusive. A turnstile in front keeps
# a waiting serial test from being starved by the others' stream of shared holds.


@contextlib.contextmanager
def _flock(path: str, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # (closing releases the lock)


@contextlib.contextmanager
def _turn(alone: bool) -> Iterator[None]:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:  # not in parallel: nothing to wait for
        yield
        return
    base = os.path.join(tempfile.gettempdir(), f"distqueue-tests-{run}")
    with contextlib.ExitStack() as held:
        with _flock(base + ".turnstile", fcntl.LOCK_EX):
            held.enter_context(_flock(base + ".lock", fcntl.LOCK_EX if alone else fcntl.LOCK_SH))
        if alone:
            _settle()
        yield


def _cpu_idle() -> tuple[float, float]:
    """(idle, total) jiffies of all CPUs so far (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def _settle(idle: float = 0.8, within: float = 10.0) -> None:
    """Before a serial test: let what the tests before it left winding down (a browser
    exiting, a store's last writes) end — until the CPUs are ``idle`` idle for half a
    second, for at most ``within`` seconds."""
    if not os.path.exists("/proc/stat"):
        return
    deadline = time.monotonic() + within
    quiet = 0
    before = _cpu_idle()
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.25)
        now = _cpu_idle()
        spent = now[1] - before[1]
        quiet = quiet + 1 if spent > 0 and (now[0] - before[0]) / spent >= idle else 0
        before = now


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    with _turn(item.get_closest_marker("serial") is not None):
        yield


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
