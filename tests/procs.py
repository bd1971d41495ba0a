"""Real distqueue processes for tests: servers and workers started with the CLI."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "distqueue"]
LISTENING = re.compile(r"listening on (\S+):(\d+)")


class Proc:
    """A child process whose stderr is collected in the background."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait until a line of output matches ``pattern``; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    m = regex.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"no line matching {pattern!r} from {self.args}:\n{self.output}"
                    )
                self._changed.wait(min(remaining, 0.2))

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def killpg(self, sig: int) -> None:
        """``sig`` to its whole process group, as a terminal sends Ctrl-C (SIGINT) to
        the foreground group (it was started in a session, so a group, of its own)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.signal(signal.SIGKILL)
        self.popen.wait(10)
        self._close()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; SIGKILL if it does not stop. Returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        self._close()
        return code

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for it to exit by itself; return the exit code."""
        code = self.popen.wait(timeout)
        self._close()
        return code

    def _close(self) -> None:
        self._reader.join(5)
        if self.popen.stdout is not None and not self._reader.is_alive():
            self.popen.stdout.close()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


class ServerProc(Proc):
    """``distqueue server`` on a free port; ``address`` is HOST:PORT once it listens."""

    def __init__(
        self, data: Path, *extra: str, port: int = 0, env: dict[str, str] | None = None
    ) -> None:
        # no admin port unless asked for: it is the web extra's import (0.2 s) at each
        # of the suite's hundreds of server starts (tests/web and test_metrics ask)
        http = () if "--http" in extra else ("--http", "off")
        super().__init__([*CLI, "server", "--port", str(port), "--data", str(data),
                          "--no-console", *http, *extra], env=env)  # fmt: skip
        m = self.wait_for(LISTENING.pattern)
        self.host, self.port = m.group(1), int(m.group(2))
        self.address = f"{self.host}:{self.port}"


class WorkerProc(Proc):
    """``distqueue worker`` connected to ``server`` (HOST:PORT[,...])."""

    def __init__(self, server: str, *extra: str) -> None:
        super().__init__([*CLI, "worker", "--server", server, *extra])
        self.id = self.wait_for(r"distqueue worker (\S+) serving").group(1)

    def wait_connected(self, timeout: float = 20.0) -> None:
        self.wait_for(r"connected to", timeout)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run one ``distqueue`` command to completion."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
        input=None if input is None else input.decode(),
    )  # fmt: skip


def wait_until(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something true (returned); bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


class Peer:
    """A raw TCP connection to a server (a ServerProc, or anything with ``host`` and
    ``port``) that reads whole RESP replies; ``Peer.close_all()`` closes every one."""

    opened: list[Peer] = []

    def __init__(self, server: Any, timeout: float = 10.0) -> None:
        import hiredis

        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.reader = hiredis.Reader()
        Peer.opened.append(self)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> Any:
        """The next reply (an error reply as a hiredis.ReplyError); EOFError (the class)
        when the server closed the connection first."""
        while (item := self.reader.gets()) is False:
            data = self.sock.recv(1 << 20)
            if not data:
                return EOFError
            self.reader.feed(data)
        return item

    def call(self, *args: Any) -> Any:
        from distqueue.protocol.resp import encode_command

        self.send(encode_command(*args))
        return self.reply()

    def closed(self) -> bool:
        """True once the server has closed this connection (within the timeout);
        what it sent before is kept for reply()."""
        try:
            while data := self.sock.recv(1 << 16):
                self.reader.feed(data)
            return True
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    @classmethod
    def close_all(cls) -> None:
        while cls.opened:
            cls.opened.pop().close()
