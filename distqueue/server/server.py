"""The server: start -> serve -> shutdown (uvicorn's shape).

It never runs jobs. It stores them, hands them to workers, and keeps two side
tasks: housekeeping (promote due jobs, take back expired leases, several times a
second) and retention (purge old finished jobs, hourly). A monitor stops the
server if either dies, rather than serve with a broken store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from distqueue.clock import Clock, system_clock
from distqueue.config import ServerConfig
from distqueue.server.connection import Connection
from distqueue.server.service import Service
from distqueue.store import Store, open_store

__all__ = ["Server", "format_stats"]

log = logging.getLogger("distqueue.server")

#: seconds between purges of old finished jobs
PURGE_EVERY = 3600.0


class Server:
    def __init__(
        self, config: ServerConfig, *, store: Store | None = None, clock: Clock = system_clock
    ) -> None:
        self.config = config
        self.clock = clock
        self._store = store
        self._own_store = store is None
        self.connections: set[Connection] = set()
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._side_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.stop_reason = ""

    @property
    def service(self) -> Service:
        return self._service

    async def start(self) -> None:
        """Open the store, listen, start the side tasks."""
        _raise_file_limit()
        if self._store is None:
            self._store = await open_store(
                self.config.data, synchronous=self.config.durability.upper()
            )
        self._service = Service(self._store, self.config, self.clock)
        await self._service.refresh_types()
        self._service.start_watching()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), self.config.host, self.config.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._side_tasks = [
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
            asyncio.create_task(self._retention(), name="retention"),
        ]
        for task in self._side_tasks:
            task.add_done_callback(self._side_task_ended)

    def request_stop(self, reason: str = "asked to stop") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        """Stop listening, close every connection, close the store.

        Jobs that workers are running stay theirs: a worker that reconnects to the
        restarted server with the same id goes on heartbeating and ACKing them, and
        one that never comes back loses them when their leases run out.
        """
        if self._server is not None:
            self._server.close()
        for task in self._side_tasks:
            task.cancel()
        for conn in list(self.connections):
            if conn.session is not None:
                conn.session.worker = None  # a server stop is not the worker vanishing
            conn.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        if hasattr(self, "_service"):
            await self._service.stop_watching()
            await self._service.drain_background()
        if self._store is not None and self._own_store:
            await self._store.close()

    async def serve(self, *, console: TextIO | None = None, out: TextIO = sys.stderr) -> None:
        """Run until SIGTERM/SIGINT, ``quit`` on the console, or a side task dies."""
        with _signals(self.request_stop):
            # the handlers are in place before anyone can know where we listen
            await self.start()
            print(
                f"distqueue server listening on {self.config.host}:{self.port}"
                f" (store: {self.config.data})",
                file=out, flush=True,
            )  # fmt: skip
            console_task = None
            if console is not None:
                console_task = asyncio.create_task(self._console(console, out), name="console")
            await self._stop.wait()
            if console_task is not None:
                console_task.cancel()
        print(f"distqueue server stopping: {self.stop_reason}", file=out, flush=True)
        await self.shutdown()

    # -- side tasks ---------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            nap = await self.service.tick()
            await asyncio.sleep(nap)

    async def _retention(self) -> None:
        while True:
            purged = await self.service.store.purge(self.clock(), self.config.retention)
            if purged:
                log.info("purged %d finished jobs past retention", purged)
            await asyncio.sleep(PURGE_EVERY)

    def _side_task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop.is_set():
            return
        exc = task.exception()
        log.error("side task %s died; stopping the server", task.get_name(), exc_info=exc)
        self.request_stop(f"{task.get_name()} failed: {exc}")

    async def _console(self, stream: TextIO, out: TextIO) -> None:
        loop = asyncio.get_running_loop()
        print("type 'stats' for a snapshot, 'quit' to stop", file=out, flush=True)
        while True:
            line = await loop.run_in_executor(None, stream.readline)
            if not line:
                return  # end of input: keep serving
            word = line.strip().lower()
            if word == "stats":
                print(format_stats(await self.service.stats()), file=out, flush=True)
            elif word in ("quit", "exit"):
                self.request_stop("quit on the console")
                return
            elif word:
                print(f"unknown console command {word!r}: try stats or quit", file=out, flush=True)


def format_stats(stats: dict[str, Any]) -> str:
    """The live snapshot people read (console ``stats`` and ``distqueue stats``)."""
    jobs = stats["jobs"]
    workers = stats["workers"]
    rate = stats["success_rate"]
    by_prio = stats["queued_by_priority"]
    depth = ", ".join(f"p{p}={n}" for p, n in sorted(by_prio.items(), key=lambda i: int(i[0])))
    lines = [
        f"jobs processed: {stats['processed']}"
        f"   success rate: {'-' if rate is None else f'{rate:.1%}'}",
        f"workers: {workers['connected']} connected, {workers['active']} active,"
        f" {workers['idle']} idle",
        "jobs by state: " + ", ".join(f"{k}={v}" for k, v in jobs.items()),
        f"queue depth by priority: {depth or 'empty'}",
        f"uptime: {stats['server']['uptime']:.0f}s   as of {time.strftime('%H:%M:%S')}",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def _signals(handler: Callable[[str], None]) -> Any:
    """SIGTERM and SIGINT call ``handler``; the old handlers come back afterwards."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, handler, f"signal {sig.name}")
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _raise_file_limit() -> None:
    """Allow as many connections as the system lets this process have: a thousand
    workers hold two thousand sockets, past the usual soft limit of 1024."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # not permitted: keep the soft limit
        pass
