"""Nemeses: the faults a test applies, and the processes they are applied to.

- ``Fleet``: the real server and worker processes of one scenario (the CLI, as
  tests/procs.py starts them); kill -9 and restart on the same data and port;
  everything it started is stopped (SIGCONT first) at ``close()``.
- ``paused``: SIGSTOP a process, SIGCONT it at the end, whatever happens.
- ``RedisNemesis``: a redis-server of the test's own (AOF, ``appendfsync always``),
  stopped (SIGTERM or kill -9) and started again on the same port and directory.
- ``FullDisk``: a small tmpfs for a data directory, filled by a filler file until
  writes fail (ENOSPC), then freed; always unmounted.
- ``ClockJump``: libfaketime (Debian ``libfaketime``) preloaded into the processes
  started while it is active, their wall clock (only: not the monotonic one) moved
  by writing an offset to its timestamp file, as NTP or an operator stepping it.
- the TCP fault proxy (partitions) is in tests/faults/proxy.py.

Only processes started here are signalled, by their pid; only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.history import History
from tests.procs import Proc, ServerProc, WorkerProc
from tests.redis_server import free_port, redis_url, start_redis

__all__ = ["AOF", "ClockJump", "Fleet", "FullDisk", "RedisNemesis", "paused", "require_root"]

#: every write fsynced before Redis answers it
AOF = ("--appendonly", "yes", "--appendfsync", "always")
#: how workers of the fault suite are started
WORKER_ARGS = ("--tasks", "tests.faults.tasks", "--grace", "2")


class Fleet:
    """The servers and workers of one scenario."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.procs: list[Proc] = []

    def _track(self, proc: Proc) -> None:
        """Called as a process starts, before it is known to have started well, so
        one that never comes up is stopped at close() too."""
        if all(p is not proc for p in self.procs):
            self.procs.append(proc)

    def server(self, data: Path, *extra: str, port: int = 0) -> ServerProc:
        fleet = self

        class Server(ServerProc):
            def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
                fleet._track(self)
                return super().wait_for(pattern, timeout)

        proc = _retry_start(lambda: Server(data, *extra, port=port))
        self.history.note(f"server started pid {proc.popen.pid} on {proc.address}")
        return proc

    def restart_server(self, old: ServerProc, data: Path, *extra: str) -> ServerProc:
        """The same data directory and port (a killed server's port is free at once:
        the server listens with SO_REUSEADDR)."""
        if old.alive:
            old.kill()
        return self.server(data, *extra, port=old.port)

    def worker(self, address: str, *extra: str, concurrency: int = 8) -> WorkerProc:
        fleet = self

        class Worker(WorkerProc):
            def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
                fleet._track(self)
                return super().wait_for(pattern, timeout)

        proc = Worker(address, *WORKER_ARGS, "-c", str(concurrency), *extra)
        self.history.worker(proc.id, proc.popen.pid)
        self.history.note(f"worker {proc.id} started pid {proc.popen.pid}")
        return proc

    def kill(self, proc: Proc, what: str = "") -> None:
        """kill -9 (and reap)."""
        self.history.note(f"kill -9 {what or proc.args[3]} pid {proc.popen.pid}")
        proc.kill()

    def outputs(self, lines: int = 6) -> str:
        """The last lines of every process started, for a failure's message."""
        out = []
        for proc in self.procs:
            state = "running" if proc.alive else f"exited {proc.popen.returncode}"
            tail = "\n      ".join(proc.lines[-lines:])
            out.append(
                f"  {' '.join(proc.args[3:5])}... pid {proc.popen.pid} {state}:\n      {tail}"
            )
        return "\n".join(out)

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
        self.procs.clear()


def _retry_start(start: Callable[[], ServerProc], attempts: int = 3) -> ServerProc:
    """A restarted server may find its port or data lock still held for a moment."""
    last: BaseException | None = None
    for _ in range(attempts):
        try:
            return start()
        except AssertionError as exc:  # it exited without listening
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"the server would not start again: {last}")


@contextlib.contextmanager
def paused(proc: Proc, history: History, what: str = "") -> Iterator[None]:
    """SIGSTOP ``proc`` for the block; SIGCONT it afterwards, whatever happens."""
    history.note(f"SIGSTOP {what} pid {proc.popen.pid}")
    proc.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.signal(signal.SIGCONT)
        history.note(f"SIGCONT {what} pid {proc.popen.pid}")


class RedisNemesis:
    """A redis-server of the test's own, on a free port, persisting every write
    (AOF, fsync always) in ``directory``; restarted on the same port and files."""

    def __init__(self, directory: Path, history: History) -> None:
        redis_url()  # skips (or fails under DISTQUEUE_REQUIRE_REDIS) without redis-server
        self.directory = directory
        self.history = history
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> RedisNemesis:
        self.proc = start_redis(self.port, str(self.directory), *AOF)
        self.history.note(f"redis up on {self.port} pid {self.proc.pid}")
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def down(self, hard: bool) -> None:
        """kill -9 (hard) or SIGTERM, a clean shutdown (it fsyncs and exits)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self.history.note(f"redis {'kill -9' if hard else 'SIGTERM'} pid {proc.pid}")
        proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self, down_for: float, hard: bool) -> None:
        self.down(hard)
        time.sleep(down_for)
        deadline = time.monotonic() + 20
        while True:  # the port can linger a moment after a kill
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def require_root(what: str) -> None:
    """Skip without root, unless on CI (CI=true), where the suite must not skip."""
    if os.geteuid() == 0:
        return
    message = f"{what} needs root (mount a tmpfs); run the tests as root to include it"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: this must not be skipped)")
    pytest.skip(message)


class FullDisk:
    """A ``size`` tmpfs at ``mountpoint``, to hold a data directory; ``fill()`` takes
    every free byte with a filler file, ``free()`` deletes it. Unmounted on close,
    lazily if something still holds it open."""

    def __init__(self, mountpoint: Path, history: History, size: str = "16m") -> None:
        self.mountpoint = mountpoint
        self.history = history
        self.size = size
        self.filler = mountpoint / "filler"
        self.mounted = False

    def mount(self) -> FullDisk:
        require_root("the full-disk nemesis")
        if shutil.which("mount") is None:
            pytest.fail("mount(8) is missing")
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.mountpoint)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if out.returncode != 0:
            message = f"cannot mount a tmpfs at {self.mountpoint}: {out.stderr.strip()}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.mounted = True
        self.history.note(f"tmpfs {self.size} mounted at {self.mountpoint}")
        return self

    def free_bytes(self) -> int:
        st = os.statvfs(self.mountpoint)
        return st.f_bavail * st.f_frsize

    def fill(self, timeout: float = 30.0) -> int:
        """Write the filler until the disk is full (ENOSPC); returns bytes written.
        Keeps grabbing space others free for a moment, so the disk stays full."""
        written = 0
        deadline = time.monotonic() + timeout
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12):
                block = b"\0" * chunk
                while time.monotonic() < deadline:
                    try:
                        written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
            # a tmpfs has no fsync to wait for; the last page may still be partly free
            with contextlib.suppress(OSError):
                while time.monotonic() < deadline:
                    written += os.write(fd, b"\0" * 512)
        finally:
            os.close(fd)
        self.history.note(f"disk full: filler {written} bytes, {self.free_bytes()} free")
        return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()
        self.history.note(f"disk freed: {self.free_bytes()} bytes free")

    def close(self) -> None:
        if not self.mounted:
            return
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()
        out = subprocess.run(["umount", str(self.mountpoint)], capture_output=True, timeout=30)
        if out.returncode != 0:  # busy: detach it now, the kernel frees it when let go
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True,
                           timeout=30)  # fmt: skip
        self.mounted = False


#: where Debian's libfaketime package puts the library
LIBFAKETIME = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


class ClockJump:
    """Steps the wall clock of the processes started with ``env()``: libfaketime,
    preloaded, reads the offset from a file at every call (no cache), and leaves
    CLOCK_MONOTONIC alone (FAKETIME_DONT_FAKE_MONOTONIC), so only the wall clock
    jumps, as when NTP or an operator steps it."""

    def __init__(self, stamp: Path, history: History) -> None:
        self.stamp = stamp
        self.history = history
        self.library = next((lib for lib in LIBFAKETIME if Path(lib).exists()), None)
        self.offset = 0.0

    def require(self) -> None:
        if self.library is None:
            message = (
                "libfaketime is not installed (apt-get install libfaketime): the clock-jump"
                " nemesis cannot run"
            )
            if os.environ.get("CI") == "true":  # .ci/run installs it: never skip there
                pytest.fail(message)
            pytest.skip(message)

    def env(self) -> dict[str, str]:
        self.require()
        assert self.library is not None
        self.jump(0.0)
        return {
            "LD_PRELOAD": self.library,
            "FAKETIME_TIMESTAMP_FILE": str(self.stamp),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def jump(self, offset: float) -> None:
        """The wall clock of the preloaded processes is now ``offset`` seconds off."""
        tmp = self.stamp.with_suffix(".tmp")
        tmp.write_text(f"{offset:+.0f}\n")
        os.replace(tmp, self.stamp)  # never a half-written offset
        if offset != self.offset:
            self.history.note(f"wall clock stepped to {offset:+.0f} s")
        self.offset = offset
