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
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any, TextIO

from distqueue.aio import cancel_and_wait
from distqueue.clock import Clock, system_clock
from distqueue.config import ServerConfig, check_exposure, redact_url
from distqueue.errors import StoreError
from distqueue.protocol.guard import AuthThrottle
from distqueue.server.connection import INFLIGHT_LOW, Connection
from distqueue.service.core import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    Service,
    StoreHealth,
    keep_trying,
)
from distqueue.store import Store, open_store

if TYPE_CHECKING:
    from distqueue.beanstalk.listener import BeanstalkListener
    from distqueue.web.app import AdminSite

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
        #: commands in progress across every connection (connection.INFLIGHT_HIGH),
        #: and the connections waiting for it to go down before taking more requests
        self.inflight = 0
        self.starved: set[Connection] = set()
        #: wrong tokens by peer address, across connections
        self.auth_throttle = AuthThrottle()
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._side_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.stop_reason = ""
        #: it stopped because something failed (the CLI exits non-zero)
        self.failed = False
        #: it is stopping: /readyz says so while the last replies go out
        self.draining = False
        #: the admin port (metrics, health, dashboard), when it runs
        self.admin: AdminSite | None = None
        #: the beanstalkd-protocol listener, when asked for (--beanstalk)
        self.beanstalk: BeanstalkListener | None = None

    def command_done(self) -> None:
        """A command finished: below INFLIGHT_LOW, the connections it held back go on."""
        self.inflight -= 1
        if self.starved and self.inflight < INFLIGHT_LOW:
            starved, self.starved = self.starved, set()
            for conn in starved:
                conn.wake()

    @property
    def service(self) -> Service:
        return self._service

    async def start(self) -> None:
        """Open the store, listen, start the side tasks."""
        check_exposure(self.config)
        tls: dict[str, Any] = {}
        if self.config.tls_cert or self.config.tls_key or self.config.tls_ca:
            from distqueue.tls import server_context  # first: a bad file stops it at once

            context = server_context(self.config.tls_cert, self.config.tls_key, self.config.tls_ca)
            # a half-done handshake cannot hold a connection (or a slot) for long
            tls = {"ssl": context, "ssl_handshake_timeout": 10.0}
        _raise_file_limit()
        health = StoreHealth()
        if self._store is None:
            self._store = await self._open_store(health)
        self._service = Service(self._store, self.config, self.clock)
        self._service.health = health
        self._service.on_shutdown = self.request_stop
        try:
            await self._service.refresh_types()
        except StoreError as exc:  # housekeeping loads them again once the store answers
            health.failed(exc)
        self._service.start_watching()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), self.config.host, self.config.port, reuse_address=True,
            **tls,
        )  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]
        self._service.where = f"{self.config.host}:{self.port}"
        self._side_tasks = [
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
            asyncio.create_task(self._retention(), name="retention"),
        ]
        for task in self._side_tasks:
            task.add_done_callback(self._side_task_ended)
        await self._start_admin()
        if self.config.beanstalk is not None:
            from distqueue.beanstalk.listener import BeanstalkListener

            host, _, port = self.config.beanstalk.rpartition(":")
            listener = BeanstalkListener(self._service, host.strip("[]") or "127.0.0.1",
                                         int(port), draining=lambda: self.draining)  # fmt: skip
            try:
                await listener.start()
            except OSError as exc:
                why = _why(exc)
                raise OSError(
                    f"cannot listen for beanstalk clients on {self.config.beanstalk}: {why}"
                ) from None
            self.beanstalk = listener

    async def _start_admin(self) -> None:
        """Listen on the admin port, if one is asked for and distqueue[web] is here."""
        http = self.config.http
        if http is None:
            return
        from distqueue.web import WEB_MISSING, start_admin, web_available

        if not web_available():
            log.warning(WEB_MISSING)
            return
        host, _, port = http.rpartition(":")
        try:
            self.admin = await start_admin(self, host.strip("[]") or "127.0.0.1", int(port))
        except OSError as exc:
            why = _why(exc)
            if not self.config.http_given:
                log.warning("no admin port: %s: %s; give another with --http HOST:PORT",
                            http, why)  # fmt: skip
                return
            raise OSError(
                f"cannot listen on the admin port {http}: {why}"
                " (give another with --http HOST:PORT, or --http off)"
            ) from None

    async def _open_store(self, health: StoreHealth) -> Store:
        """Open the store. A shared store (Redis) that cannot be reached yet is waited
        for, with backoff; the embedded store's errors (in use by another process, not
        a distqueue file) are final."""
        delay = BACKOFF_MIN
        while True:
            try:
                store = await open_store(
                    self.config.data, synchronous=self.config.durability.upper(),
                    retry_policy=self.config.retry, poison_limit=self.config.poison_limit,
                )  # fmt: skip
            except StoreError as exc:
                url = self.config.data
                if "://" not in url or url.startswith("sqlite://"):  # embedded
                    raise
                health.failed(exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                if self._stop.is_set():
                    raise StoreError(f"stopped while waiting for the store: {exc}") from None
                delay = min(BACKOFF_MAX, delay * 2)
            else:
                health.ok()
                return store

    def request_stop(self, reason: str = "asked to stop") -> None:
        self.draining = True
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
        self.draining = True
        if self.beanstalk is not None:
            await self.beanstalk.close()
        if self.admin is not None:
            await self.admin.close()
        if self._server is not None:
            self._server.close()
        for task in self._side_tasks:
            task.cancel()  # (and again below, until they have ended)
        for conn in list(self.connections):
            if conn.session is not None:
                conn.session.worker = None  # a server stop is not the worker vanishing
            conn.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
        await cancel_and_wait(*self._side_tasks)
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
            tls = ""
            if self.config.tls_cert:
                tls = " (TLS, client certificates required)" if self.config.tls_ca else " (TLS)"
            print(
                f"distqueue server listening on {self.config.host}:{self.port}{tls}"
                f" (store: {redact_url(self.config.data)})",
                file=out, flush=True,
            )  # fmt: skip
            if self.beanstalk is not None:
                host = self.beanstalk.host
                print(f"distqueue beanstalk listener on {host}:{self.beanstalk.port}",
                      file=out, flush=True)  # fmt: skip
            if self.admin is not None:
                host = self.config.http.rpartition(":")[0] if self.config.http else ""
                print(f"distqueue admin on http://{host}:{self.admin.port}/"
                      " (dashboard, /metrics, /health)", file=out, flush=True)  # fmt: skip
            console_task = None
            if console is not None:
                console_task = asyncio.create_task(self._console(console, out), name="console")
            await self._stop.wait()
            if console_task is not None:
                console_task.cancel()
                await asyncio.gather(console_task, return_exceptions=True)
            print(f"distqueue server stopping: {self.stop_reason}", file=out, flush=True)
            # still under the handlers: a second Ctrl-C does not break off the shutdown
            await self.shutdown()

    # -- side tasks ---------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        await keep_trying(self.service.tick, self.service.health)

    async def _retention(self) -> None:
        async def purge() -> float:
            purged = await self.service.store.sweep(self.clock(), self.config.retention)
            if purged:
                log.info("purged %d finished jobs past retention", purged)
            return PURGE_EVERY

        await keep_trying(purge, self.service.health)

    def _side_task_ended(self, task: asyncio.Task[None]) -> None:
        # side tasks retry store faults forever (keep_trying): one that ends is a bug
        if task.cancelled() or self._stop.is_set():
            return
        exc = task.exception()
        log.error("side task %s died; stopping the server", task.get_name(), exc_info=exc)
        self.failed = True
        self.request_stop(f"{task.get_name()} failed: {exc}")

    async def _console(self, stream: TextIO, out: TextIO) -> None:
        print("type 'stats' for a snapshot, 'quit' to stop", file=out, flush=True)
        async with contextlib.aclosing(_lines(stream)) as lines:
            async for line in lines:  # until the end of input: then keep serving
                word = line.strip().lower()
                if word == "stats":
                    print(format_stats(await self.service.stats()), file=out, flush=True)
                elif word in ("quit", "exit"):
                    self.request_stop("quit on the console")
                    return
                elif word:
                    print(f"unknown console command {word!r}: try stats or quit",
                          file=out, flush=True)  # fmt: skip


def format_stats(stats: dict[str, Any]) -> str:
    """The live snapshot people read (console ``stats`` and ``distqueue stats``)."""
    jobs = stats["jobs"]
    workers = stats["workers"]
    rate = stats["success_rate"]
    by_prio = stats["queued_by_priority"]
    depth = ", ".join(f"p{p}={n}" for p, n in sorted(by_prio.items(), key=lambda i: int(i[0])))
    lines = [
        f"jobs processed: {stats['processed']}   success rate: {_percent(rate)}",
        f"workers: {workers['connected']} connected, {workers['active']} active,"
        f" {workers['idle']} idle",
        "jobs by state: " + ", ".join(f"{k}={v}" for k, v in jobs.items()),
        f"queue depth by priority: {depth or 'empty'}",
        f"uptime: {stats['server']['uptime']:.0f}s   as of {time.strftime('%H:%M:%S')}",
    ]
    return "\n".join(lines)


def _percent(rate: float | None) -> str:
    """A rate as people read it: never 100.0% while a job died, nor 0.0% while one
    succeeded (2000 of 2001 rounds to 100.0%)."""
    if rate is None:
        return "-"
    text = f"{rate:.1%}"
    if text == "100.0%" and rate < 1:
        return "99.9%"
    if text == "0.0%" and rate > 0:
        return "0.1%"
    return text


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


async def _lines(stream: TextIO) -> AsyncGenerator[str, None]:
    """The lines of the console ``stream``, read so that nothing waits for a line
    nobody types: never in the loop's executor, whose threads asyncio.run waits for
    at exit (one blocked in readline would hold up a stop until Enter is pressed).

    A terminal or pipe is watched by the loop (``add_reader``); anything the loop
    cannot watch (a file, /dev/null, a stream without a descriptor) is read by a
    daemon thread, which never keeps the process alive. The descriptor's blocking
    mode is left as it was: a terminal's is shared with stdout, stderr and the shell.
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()  # b"" = end of input
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation
        fd = -1

    def readable() -> None:
        try:
            data = os.read(fd, 65536)  # the loop saw data (or the end): this cannot block
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal hung up
            data = b""
        if not data:
            loop.remove_reader(fd)
        chunks.put_nowait(data)

    def pump() -> None:
        while True:
            try:
                data = os.read(fd, 65536) if fd >= 0 else stream.readline().encode(encoding)
            except (OSError, ValueError):
                data = b""
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, data)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return
            if not data:
                return

    watched = False
    blocking = True
    if fd >= 0:
        try:
            blocking = os.get_blocking(fd)
            loop.add_reader(fd, readable)
            watched = True
        except (OSError, ValueError, NotImplementedError):  # PermissionError: a file
            pass
        else:  # uvloop (libuv) made it non-blocking: for stderr too, if it is a terminal
            os.set_blocking(fd, blocking)
    if not watched:
        threading.Thread(target=pump, name="dq-console", daemon=True).start()
    buffer = b""
    try:
        while data := await chunks.get():
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.decode(encoding, errors="replace")
        if buffer:
            yield buffer.decode(encoding, errors="replace")
    finally:
        if watched:
            loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.set_blocking(fd, blocking)


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


def _why(exc: OSError) -> str:
    """An address that cannot be had, in words: the system's for an errno, the
    resolver's for a name that does not resolve (a negative code)."""
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)
