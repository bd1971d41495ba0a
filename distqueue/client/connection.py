"""Connections to a server: RESP over TCP, HELLO on connect, failover across addresses.

``Connection`` is blocking (one request at a time, or a pipeline); ``AsyncConnection``
pipelines any number of concurrent requests on one socket, answering each
caller in order. Both raise the DistQueueError the server's error reply names,
and ServerUnavailable when no server can be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis

from distqueue import codec
from distqueue.config import server_addresses
from distqueue.errors import DistQueueError, ServerUnavailable, from_wire
from distqueue.protocol import PROTOCOL_VERSION
from distqueue.protocol.resp import encode_command

__all__ = ["AsyncConnection", "Connection", "hello_args"]

Arg = bytes | str | int | float
CONNECT_TIMEOUT = 5.0


def _convert(reply: Any) -> Any:
    """hiredis' reply -> Python values, error replies -> exceptions (not raised)."""
    if isinstance(reply, hiredis.ReplyError):
        code, _, message = str(reply).partition(" ")
        return from_wire(code, message)
    if isinstance(reply, list):
        return [_convert(item) for item in reply]
    return reply


def _raise_if_error(value: Any) -> Any:
    if isinstance(value, DistQueueError):
        raise value
    return value


def hello_args(token: str | None, role: str, extra: Sequence[Arg] = ()) -> list[Arg]:
    args: list[Arg] = ["HELLO", PROTOCOL_VERSION, "ROLE", role]
    if token is not None:
        args += ["TOKEN", token]
    return args + list(extra)


class Connection:
    """A blocking connection. Thread-safe: calls are serialized by a lock."""

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        role: str = "client",
        hello: Sequence[Arg] = (),
        timeout: float | None = None,
    ) -> None:
        self.addresses = server_addresses(server)
        self.token = token
        self.role = role
        self.hello_extra = list(hello)
        self.timeout = timeout
        self.info: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader()
        self._lock = threading.Lock()
        self._next = 0

    def _connect(self) -> socket.socket:
        errors = []
        for i in range(len(self.addresses)):
            host, port = self.addresses[(self._next + i) % len(self.addresses)]
            try:
                sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            except OSError as exc:
                errors.append(f"{host}:{port}: {exc.strerror or exc}")
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
            self._sock, self._reader = sock, hiredis.Reader()
            self._next = (self._next + i) % len(self.addresses)
            try:
                reply = self._roundtrip([hello_args(self.token, self.role, self.hello_extra)])[0]
                self.info = codec.loads(_raise_if_error(reply), "HELLO reply")
            except BaseException:
                self.close()
                raise
            return sock
        raise ServerUnavailable("cannot reach a distqueue server: " + "; ".join(errors))

    def _roundtrip(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        sock = self._sock
        assert sock is not None
        try:
            sock.sendall(b"".join(encode_command(*c) for c in commands))
            out: list[Any] = []
            while len(out) < len(commands):
                reply = self._reader.gets()
                if reply is False:
                    data = sock.recv(1 << 20)
                    if not data:
                        raise ConnectionResetError("the server closed the connection")
                    self._reader.feed(data)
                    continue
                out.append(_convert(reply))
            return out
        except (OSError, hiredis.ProtocolError) as exc:
            self.close()
            if isinstance(exc, TimeoutError):
                raise ServerUnavailable("the server did not answer in time") from None
            raise ServerUnavailable(f"lost the connection to the server: {exc}") from None

    def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send many commands at once; return their replies (errors as exception
        objects, not raised), in order."""
        with self._lock:
            if self._sock is None:
                self._connect()
            return self._roundtrip(commands)

    def call(self, *args: Arg) -> Any:
        """One command; raise the server's error."""
        return _raise_if_error(self.pipeline([args])[0])

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


class AsyncConnection:
    """An asyncio connection; concurrent calls are pipelined on one socket."""

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        role: str = "client",
        hello: Sequence[Arg] = (),
    ) -> None:
        self.addresses = server_addresses(server)
        self.token = token
        self.role = role
        self.hello_extra = list(hello)
        self.info: dict[str, Any] = {}
        self.address: tuple[str, int] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._read_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self._next = 0

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None:
                return
            errors = []
            for i in range(len(self.addresses)):
                index = (self._next + i) % len(self.addresses)
                host, port = self.addresses[index]
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port, limit=1 << 20), CONNECT_TIMEOUT
                    )
                except (OSError, TimeoutError) as exc:
                    errors.append(f"{host}:{port}: {getattr(exc, 'strerror', None) or exc}")
                    continue
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._next, self.address = index, (host, port)
                self._writer = writer
                self._read_task = asyncio.create_task(self._read(reader), name="dq-reader")
                try:
                    hello = hello_args(self.token, self.role, self.hello_extra)
                    reply = await self._send([hello])
                    self.info = codec.loads(_raise_if_error(reply[0]), "HELLO reply")
                except BaseException:
                    await self.close()
                    raise
                return
            raise ServerUnavailable("cannot reach a distqueue server: " + "; ".join(errors))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        parser = hiredis.Reader()
        error: BaseException = ServerUnavailable("the server closed the connection")
        try:
            while True:
                data = await stream.read(1 << 20)
                if not data:
                    break
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    fut = self._waiting.popleft()
                    if not fut.done():
                        fut.set_result(_convert(reply))
        except (OSError, hiredis.ProtocolError) as exc:
            error = ServerUnavailable(f"lost the connection to the server: {exc}")
        except asyncio.CancelledError:
            error = ServerUnavailable("the connection was closed")
        finally:
            self._drop(error)

    def _drop(self, error: BaseException) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(error)

    async def _send(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        writer = self._writer
        if writer is None:
            raise ServerUnavailable("not connected")
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in commands]
        self._waiting.extend(futs)
        writer.write(b"".join(encode_command(*c) for c in commands))
        try:
            await writer.drain()
        except OSError as exc:
            raise ServerUnavailable(f"lost the connection to the server: {exc}") from None
        return list(await asyncio.gather(*futs))

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send many commands at once; their replies in order (errors as objects)."""
        if self._writer is None:
            await self.connect()
        return await self._send(commands)

    async def call(self, *args: Arg) -> Any:
        """One command; raise the server's error."""
        return _raise_if_error((await self.pipeline([args]))[0])

    async def close(self) -> None:
        task, self._read_task = self._read_task, None
        self._drop(ServerUnavailable("the connection was closed"))
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
