"""A TCP fault proxy for tests: forward, blackhole (a partition), heal, reset.

    proxy = FaultProxy(("127.0.0.1", server_port)).start()
    worker = WorkerProc(proxy.address, ...)       # the worker talks through it
    proxy.blackhole()    # nothing passes either way; every socket stays open
    proxy.heal()         # what was held back flows again, in order
    proxy.reset()        # every connection closed with a RST (both sides)
    proxy.close()

A blackhole models a network partition of a TCP connection: packets are dropped,
so nothing arrives either way while the connections stay open (no FIN, no RST);
TCP retransmits, so once the partition heals the bytes sent meanwhile do arrive,
late. Here the proxy stops forwarding (it holds what it read and stops reading,
so the kernel buffers fill as they would) and forwards it all on heal. A new
connection made during a partition is accepted locally but connects upstream only
once healed (its SYN would be retransmitted until then).

It runs its own asyncio loop on a thread; only 127.0.0.1 is ever listened on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any

__all__ = ["FaultProxy"]

CHUNK = 1 << 16


class _Pair:
    """One proxied connection: the downstream (accepted) and upstream sockets."""

    def __init__(self, down: asyncio.StreamWriter) -> None:
        self.down = down
        self.up: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.down, self.up) if w is not None]


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], *, port: int = 0) -> None:
        host, _ = upstream
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the fault proxy only forwards to 127.0.0.1")
        self.upstream = ("127.0.0.1", upstream[1])
        self.port = port
        self.address = ""
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dq-proxy",
                                        daemon=True)  # fmt: skip
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._pairs: set[_Pair] = set()

    # -- control (from any thread) ------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def blackhole(self) -> None:
        """Stop forwarding both ways; keep every connection open."""
        self._call(self._set_flowing(False))

    def heal(self) -> None:
        """Forward again, starting with what was held back."""
        self._call(self._set_flowing(True))

    def reset(self) -> int:
        """Close every connection with a RST on both sides; returns how many."""
        n: int = self._call(self._reset())
        return n

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- on the proxy's loop ------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        pair = _Pair(writer)
        self._pairs.add(pair)
        self.connections += 1
        try:
            await self._flowing.wait()  # a partition: the SYN would not get through
            if writer.is_closing():  # reset meanwhile
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                _abort(writer)
                return
            pair.up = up_writer
            pair.tasks = [
                asyncio.create_task(self._pump(reader, up_writer, pair)),
                asyncio.create_task(self._pump(up_reader, writer, pair)),
            ]
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        finally:
            for w in pair.writers():
                w.close()
            self._pairs.discard(pair)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()  # held back during a partition
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # one side ended: end the other (the protocol has no half-close)
            for w in pair.writers():
                w.close()
            for task in pair.tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    async def _reset(self) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            for w in pair.writers():
                _abort(w)
            for task in pair.tasks:
                task.cancel()
        return len(pairs)

    async def _close(self) -> None:
        await self._reset()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self._flowing is not None:
            self._flowing.set()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
