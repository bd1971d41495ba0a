"""The dashboard's tests: a real server (store, protocol port, admin port) in a
thread of its own with its own event loop, so the tests (plain HTTP, or
Playwright's sync API, which refuses to run inside a running loop) stay sync.
Workers are real ``distqueue worker`` processes."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distqueue.client import Client
from distqueue.config import ServerConfig
from distqueue.server.server import Server
from tests.procs import WorkerProc


class AdminServer:
    """``Server`` with ``http="127.0.0.1:0"`` on a background thread's event loop."""

    def __init__(self, data: Path, token: str | None = None, **config: Any) -> None:
        self.token = token
        self.config = ServerConfig(
            host="127.0.0.1", port=0, data=str(data), http="127.0.0.1:0", token=token,
            durability="normal", **config,
        )  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        #: seconds the last stop() took, from the stop request to the thread's end
        self.stop_seconds: float | None = None
        self.thread = threading.Thread(target=self._run, name="dq-admin-server", daemon=True)
        self.thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the server did not start in 30 s")
        if self._error is not None:
            raise AssertionError(f"the server did not start: {self._error!r}")
        self.address = f"127.0.0.1:{self.server.port}"
        assert self.server.admin is not None, "no admin site: is distqueue[web] installed?"
        self.url = f"http://127.0.0.1:{self.server.admin.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self.server = Server(self.config)
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            await self.server.shutdown()
            return
        self._ready.set()
        await self.server.wait_stopped()
        await self.server.shutdown()

    def call(self, fn: Any, timeout: float = 10.0) -> Any:
        """Run ``await fn()`` on the server's loop; its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def wait_snapshot(self, check: Any, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until an admin snapshot taken after this call satisfies ``check``
        (its stats are what the pages show); the stats."""
        deadline = time.monotonic() + timeout
        admin = self.server.admin
        assert admin is not None
        # a refresh may be under way: the second one from now began after this call
        fresh = admin.snapshot.version + 2
        while True:
            stats = admin.snapshot.stats
            if stats is not None and admin.snapshot.version >= fresh and check(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"the snapshot never matched; last: {stats}")
            time.sleep(0.05)

    def client(self) -> Client:
        return Client(self.address, token=self.token)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        began = time.monotonic()
        self.loop.call_soon_threadsafe(self.server.request_stop, "test over")
        self.thread.join(30)
        self.stop_seconds = time.monotonic() - began
        assert not self.thread.is_alive(), "the server did not stop in 30 s"


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[Any]:
    """A factory of AdminServers (token optional); all stopped at teardown."""
    started: list[AdminServer] = []

    def start(token: str | None = None, **config: Any) -> AdminServer:
        srv = AdminServer(tmp_path / f"data{len(started)}", token=token, **config)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def workers() -> Iterator[Any]:
    """A factory of real worker processes; all stopped at teardown."""
    started: list[WorkerProc] = []

    def start(server: AdminServer, *extra: str) -> WorkerProc:
        args = list(extra)
        if server.token is not None:
            args += ["--token", server.token]
        proc = WorkerProc(server.address, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


class Http:
    """A tiny urllib client that keeps cookies and never follows redirects."""

    def __init__(self, base: str) -> None:
        import http.cookiejar

        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(
        self, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        body = None
        hdrs = {"Accept": "text/html", **(headers or {})}
        if data is not None:
            body = urllib.parse.urlencode(data, doseq=True).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=hdrs)
        try:
            with self.opener.open(req, timeout=20) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read()

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, **kw)

    def post(self, path: str, data: Any, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return self.request("POST", path, data=data, **kw)

    def cookie(self, name: str) -> str | None:
        for c in self.jar:
            if c.name == name:
                return c.value
        return None
