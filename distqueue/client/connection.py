"""Connections to a server: RESP over TCP or TLS, HELLO on connect, failover across
addresses.

``Connection`` is blocking (one request at a time, or a pipeline); ``AsyncConnection``
pipelines any number of concurrent requests on one socket, answering each
caller in order. Both raise the DistQueueError the server's error reply names,
and ServerUnavailable when no server can be reached.

TLS is on for an address written ``tls://host:port``, and for every address when
``tls`` is true or a CA or client certificate is given; each of these, when not
given, is read from the environment like the server address (DISTQUEUE_TLS=1,
DISTQUEUE_TLS_CA, DISTQUEUE_TLS_CERT, DISTQUEUE_TLS_KEY). The server's certificate
is verified, and its name: the host of the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import hiredis

from distqueue import codec
from distqueue.config import Address, server_addresses
from distqueue.errors import DistQueueError, ServerUnavailable, from_wire
from distqueue.protocol import PROTOCOL_VERSION
from distqueue.protocol.resp import encode_command

if TYPE_CHECKING:
    import ssl

__all__ = ["AsyncConnection", "Connection", "TLSOptions", "hello_args"]

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


def opening(token: str | None, role: str, extra: Sequence[Arg] = ()) -> list[list[Arg]]:
    """A connection's first requests: ``AUTH`` on its own (a server reads requests of
    4 KiB at most before authentication; a worker's HELLO may be longer), then
    ``HELLO``, pipelined: one round trip."""
    hello = hello_args(None, role, extra)
    return [hello] if token is None else [["AUTH", token], hello]


def hello_reply(replies: list[Any]) -> dict[str, Any]:
    """The HELLO reply's fields, or the first error (a wrong token) raised."""
    for reply in replies:
        _raise_if_error(reply)
    return codec.loads(replies[-1], "HELLO reply")  # type: ignore[no-any-return]


class TLSOptions:
    """Which of a connection's addresses speak TLS, and the SSL context they use (built
    at once, so a missing or bad CA or certificate file is a ValueError up front).

    ``tls``: true for TLS to every address (an ``ssl.SSLContext`` to use that one);
    None reads DISTQUEUE_TLS. ``ca``: trust this CA file instead of the system's
    trust store; ``cert``/``key``: a client certificate. Either implies TLS to every
    address; None reads DISTQUEUE_TLS_CA, DISTQUEUE_TLS_CERT, DISTQUEUE_TLS_KEY.
    """

    def __init__(
        self,
        addresses: Sequence[Address],
        tls: bool | ssl.SSLContext | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        env = os.environ
        ca = ca if ca is not None else env.get("DISTQUEUE_TLS_CA") or None
        cert = cert if cert is not None else env.get("DISTQUEUE_TLS_CERT") or None
        key = key if key is not None else env.get("DISTQUEUE_TLS_KEY") or None
        if tls is None:
            tls = env.get("DISTQUEUE_TLS", "").strip().lower() in ("1", "true", "yes", "on")
        #: TLS to every address, not only to those written tls://
        self.everywhere = tls is not False or bool(ca or cert or key)
        #: it trusts a CA file of its own, it presents a client certificate (for the
        #: words of a failure; a context of the caller's own may do either)
        self.ca = bool(ca) or not isinstance(tls, bool)
        self.client_cert = bool(cert) or not isinstance(tls, bool)
        self.context: ssl.SSLContext | None = None
        if not isinstance(tls, bool):
            self.context = tls
        elif self.everywhere or any(getattr(a, "tls", False) for a in addresses):
            from distqueue.tls import client_context

            self.context = client_context(ca, cert, key)

    def context_for(self, address: tuple[str, int]) -> ssl.SSLContext | None:
        """The SSL context for this address; None: plain TCP."""
        if self.everywhere or getattr(address, "tls", False):
            return self.context
        return None

    def failure(
        self, address: tuple[str, int], exc: BaseException | None, *, in_hello: bool = True
    ) -> str:
        """One line for a connection to ``address`` lost in its TLS handshake or, with
        ``in_hello``, in HELLO (``exc``: what was raised; None: the server closed it)."""
        where = f"{address[0]}:{address[1]}"
        if self.context_for(address) is not None:
            from distqueue.tls import describe_failure

            return describe_failure(exc, where, ca=self.ca, client_cert=self.client_cert,
                                    handshake_done=in_hello)  # fmt: skip
        if exc is None or isinstance(exc, ConnectionError | hiredis.ProtocolError):
            return (
                f"the server at {where} closed the connection during HELLO: is it a TLS"
                " server? use --tls (or a tls:// address)"
            )
        if isinstance(exc, TimeoutError):
            return f"the server at {where} did not answer HELLO in time"
        return f"lost the connection to the server at {where} during HELLO: {exc}"


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
        tls: bool | ssl.SSLContext | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        self.addresses = server_addresses(server)
        self.tls = TLSOptions(self.addresses, tls, tls_ca, tls_cert, tls_key)
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
            address = self.addresses[(self._next + i) % len(self.addresses)]
            host, port = address
            try:
                sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            except OSError as exc:
                errors.append(f"{host}:{port}: {exc.strerror or exc}")
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = self.tls.context_for(address)
            if context is not None:
                try:  # the handshake, within the connect timeout
                    sock = context.wrap_socket(sock, server_hostname=host)
                except OSError as exc:
                    sock.close()
                    errors.append(self.tls.failure(address, exc, in_hello=False))
                    continue
            sock.settimeout(self.timeout)
            self._sock, self._reader = sock, hiredis.Reader()
            self._next = (self._next + i) % len(self.addresses)
            try:
                first = opening(self.token, self.role, self.hello_extra)
                try:
                    replies = self._exchange(first)
                except (OSError, hiredis.ProtocolError) as exc:
                    raise ServerUnavailable(self.tls.failure(address, exc)) from None
                self.info = hello_reply(replies)
            except BaseException:
                self.close()
                raise
            return sock
        raise ServerUnavailable("cannot reach a distqueue server: " + "; ".join(errors))

    def _exchange(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send the commands, read their replies; OSError, hiredis.ProtocolError."""
        sock = self._sock
        assert sock is not None
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

    def _roundtrip(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        try:
            return self._exchange(commands)
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
        tls: bool | ssl.SSLContext | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        self.addresses = server_addresses(server)
        self.tls = TLSOptions(self.addresses, tls, tls_ca, tls_cert, tls_key)
        self.token = token
        self.role = role
        self.hello_extra = list(hello)
        self.info: dict[str, Any] = {}
        self.address: Address | None = None
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
                address = self.addresses[index]
                host, port = address
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
                except (OSError, TimeoutError) as exc:
                    errors.append(f"{host}:{port}: {getattr(exc, 'strerror', None) or exc}")
                    continue
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                context = self.tls.context_for(address)
                if context is not None:
                    try:
                        async with asyncio.timeout(CONNECT_TIMEOUT):
                            await writer.start_tls(
                                context,
                                server_hostname=host,
                                ssl_handshake_timeout=CONNECT_TIMEOUT + 1,
                            )
                    except (OSError, TimeoutError) as exc:
                        writer.close()
                        errors.append(self.tls.failure(address, exc, in_hello=False))
                        continue
                self._next, self.address = index, address
                self._writer = writer
                self._read_task = asyncio.create_task(self._read(reader), name="dq-reader")
                try:
                    first = opening(self.token, self.role, self.hello_extra)
                    try:
                        replies = await self._send(first)
                    except ServerUnavailable as exc:  # its cause: what the reader met
                        raise ServerUnavailable(self.tls.failure(address, exc.__cause__)) from None
                    self.info = hello_reply(replies)
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
            error.__cause__ = exc
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
        if writer.transport.is_closing():
            # the server closed it, and the reader has not said so yet: uvloop raises
            # RuntimeError ("the handler is closed") on a write now, asyncio drops it
            raise ServerUnavailable("lost the connection to the server: it closed")
        data = b"".join(encode_command(*c) for c in commands)
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in commands]
        self._waiting.extend(futs)
        try:
            writer.write(data)
        except RuntimeError as exc:  # (closed between the check and the write)
            for fut in futs:
                fut.cancel()
            raise ServerUnavailable(f"lost the connection to the server: {exc}") from exc
        try:
            await writer.drain()
        except OSError as exc:
            for fut in futs:  # no answers will come: nobody waits for them
                fut.cancel()
            raise ServerUnavailable(f"lost the connection to the server: {exc}") from exc
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
