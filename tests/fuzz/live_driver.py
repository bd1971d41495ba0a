"""The load of the live-server fuzzer (test_fuzz_live.py), in a process of its own
so that it cannot starve the test's canary (and runs niced below the server).

    python -m tests.fuzz.live_driver HOST PORT TOKEN SECONDS SEED [CONNECTIONS]

Keeps CONNECTIONS (default 50) clients busy for SECONDS, each one behaviour after
another (see BEHAVIOURS): valid commands, generated and mutated frames, partial
frames left hanging (slowloris), huge declared sizes, unauthenticated floods, wrong
tokens, clients that send and never read, random bytes, resets. Then it closes
everything and prints one JSON line of counts. DISTQUEUE_FUZZ_ONLY=name,name runs
only those behaviours (to find which one a finding comes from).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from tests.fuzz import frames

resp = frames.resp
#: the connections of the behaviour running in this task (closed when it ends)
_owned: contextvars.ContextVar[set[asyncio.StreamWriter]] = contextvars.ContextVar("owned")


class Driver:
    def __init__(self, host: str, port: int, token: str, seed: int) -> None:
        self.host, self.port, self.token = host, port, token.encode()
        self.rnd = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.writers: set[asyncio.StreamWriter] = set()
        self.never_readers = asyncio.Semaphore(2)

    # -- connections ----------------------------------------------------------------------

    async def connect(
        self, *, source: str | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        local = (source, 0) if source else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 20, local_addr=local), 10
        )
        self.writers.add(writer)
        _owned.get().add(writer)
        self.counts["connections"] += 1
        return reader, writer

    def send(self, writer: asyncio.StreamWriter, data: bytes, frames_: int = 1) -> None:
        writer.write(data)
        self.counts["frames"] += frames_
        self.counts["bytes"] += len(data)

    async def drain(
        self, reader: asyncio.StreamReader, seconds: float, idle: float | None = None
    ) -> int:
        """Read (and drop) what comes for ``seconds``, until the end, or until nothing
        came for ``idle`` seconds; bytes read."""
        got = 0
        end = time.monotonic() + seconds
        with contextlib.suppress(OSError, TimeoutError):
            while (left := end - time.monotonic()) > 0:
                wait = left if idle is None else min(left, idle)
                data = await asyncio.wait_for(reader.read(1 << 16), wait)
                if not data:
                    self.counts["closed by server"] += 1
                    break
                got += len(data)
        return got

    def close(self, writer: asyncio.StreamWriter, *, reset: bool = False) -> None:
        self.writers.discard(writer)
        if reset:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    def auth(self) -> bytes:
        return resp([b"AUTH", self.token])

    def maybe_auth(self) -> bytes:
        return self.auth() if self.rnd.random() < 0.5 else b""

    # -- behaviours -----------------------------------------------------------------------

    async def valid(self) -> None:
        r = self.rnd
        reader, writer = await self.connect()
        commands = [self.auth()]
        for _ in range(r.choice((1, 5, 20, 100, 500))):
            commands.append(resp(r.choice([
                [b"PING"], [b"SUBMIT", b"echo", b"live %d" % r.randrange(1000)],
                [b"STATUS", b"%d" % r.randint(1, 50)], [b"STATS"], [b"LIST", b"LIMIT", b"5"],
                [b"WAIT", b"%d" % r.randint(1, 50), b"0.05"], [b"CANCEL", b"%d" % r.randint(1, 50)],
            ])))  # fmt: skip
        self.send(writer, b"".join(commands), len(commands))
        await self.drain(reader, 5.0, idle=0.2)
        self.close(writer)

    async def fuzz(self) -> None:
        r = self.rnd
        reader, writer = await self.connect()
        data = [self.maybe_auth()]
        for _ in range(r.choice((1, 5, 20, 100))):
            frame = resp(frames.random_command(r))
            if r.random() < 0.2:
                frame = frames.mutate(frame, frames.random_mutations(r))
            data.append(frame)
        self.send(writer, b"".join(data), len(data))
        await self.drain(reader, 3.0, idle=r.uniform(0.05, 0.5))
        self.close(writer, reset=r.random() < 0.2)

    async def slowloris(self) -> None:
        """A partial frame, then a byte now and then: held until the server drops it."""
        r = self.rnd
        reader, writer = await self.connect()
        frame = resp([b"SUBMIT", b"echo", r.randbytes(r.randint(10, 200))])
        cut = r.randint(1, len(frame) - 1)
        self.send(writer, self.maybe_auth() + frame[:cut])
        end = time.monotonic() + r.uniform(5, 35)
        while time.monotonic() < end and cut < len(frame) - 1:
            if await self.drain(reader, r.uniform(0.5, 3.0)) or reader.at_eof():
                break
            writer.write(frame[cut : cut + 1])
            cut += 1
        self.close(writer)

    async def huge(self) -> None:
        r = self.rnd
        reader, writer = await self.connect()
        header = r.choice([
            b"*2000000000\r\n", b"$4294967295\r\n", b"*1\r\n$4294967295\r\n", b"*1048576\r\n",
            b"*2\r\n$4\r\nPING\r\n$67108864\r\n", b"*1\r\n$99999999999\r\n",
            b"*2\r\n$6\r\nSUBMIT\r\n$2000000000\r\n", b"*9223372036854775807\r\n",
        ])  # fmt: skip
        self.send(writer, self.maybe_auth() + header)
        for _ in range(r.randint(0, 20)):  # a trickle of what it declared
            writer.write(r.randbytes(r.randint(1, 4096)))
            if await self.drain(reader, 0.1) or reader.at_eof():
                break
        await self.drain(reader, 0.5)
        self.close(writer)

    async def unauthenticated_flood(self) -> None:
        r = self.rnd
        reader, writer = await self.connect()
        n = r.randint(10, 2000)
        one = resp(r.choice([[b"STATUS", b"1"], [b"SUBMIT", b"echo", b"x"], [b"PING"],
                             [b"FROB"], [b"LIST"]]))  # fmt: skip
        self.send(writer, one * n, n)
        await self.drain(reader, r.uniform(0.2, 2.0))
        self.close(writer)

    async def wrong_auth(self) -> None:
        r = self.rnd
        # some from an address of their own (the throttle counts per address), some
        # from 127.0.0.1: the canary's address, which must not be slowed by them
        source = None if r.random() < 0.5 else f"127.0.{r.randint(1, 250)}.{r.randint(1, 250)}"
        reader, writer = await self.connect(source=source)
        for _ in range(r.randint(1, 5)):
            guess = resp(
                r.choice(
                    [
                        [b"AUTH", r.randbytes(6)],
                        [b"HELLO", b"1", b"TOKEN", b"guess%d" % r.randrange(99)],
                    ]
                )
            )
            self.send(writer, guess)
            await self.drain(reader, 0.3)
            if reader.at_eof():
                break
        self.close(writer)

    async def never_read(self) -> None:
        """Asks for replies and never reads them; hangs up after a while. At most two
        at a time, with modest replies: the server holds what they do not read (up
        to its output limits, per connection) and the allocator keeps that memory
        after they leave, which the RSS check at the end would take for a leak."""
        r = self.rnd
        if self.never_readers.locked():
            return await self.fuzz()  # two already: do something else
        async with self.never_readers:
            reader, writer = await self.connect()
            ask = resp(r.choice([[b"LIST", b"LIMIT", b"100"], [b"STATS"],
                                 [b"PING", b"m" * 10_000]]))  # fmt: skip
            self.send(writer, self.auth())
            for _ in range(r.randint(1, 20)):
                if writer.transport.get_write_buffer_size() > 256 << 10:
                    break  # the server stopped reading: this process keeps no more
                n = r.randint(10, 50)
                self.send(writer, ask * n, n)
                await asyncio.sleep(r.uniform(0.1, 1.0))
                if writer.is_closing() or reader.at_eof():
                    break
            await asyncio.sleep(r.uniform(1, 10))
            self.close(writer, reset=r.random() < 0.5)

    async def random_bytes(self) -> None:
        r = self.rnd
        reader, writer = await self.connect()
        self.send(writer, self.maybe_auth() + r.randbytes(r.randint(1, 10_000)))
        await self.drain(reader, 0.3)
        self.close(writer)

    async def big_upload(self) -> None:
        """A large request before authenticating (refused at its header), or a
        moderate one after (stored: kept small, so that the store's page cache does
        not grow with the run and hide a leak)."""
        r = self.rnd
        reader, writer = await self.connect()
        authenticated = r.random() < 0.3
        size = r.randint(10_000, 64_000) if authenticated else r.randint(100_000, 60_000_000)
        spec = b'{"type": "echo", "payload": true, "check_type": false}'
        head = b"*3\r\n$6\r\nSUBMIT\r\n$%d\r\n%s\r\n$%d\r\n" % (len(spec), spec, size)
        self.send(writer, (self.auth() if authenticated else b"") + head)
        sent = 0
        while sent < min(size, 2_000_000) and not reader.at_eof():
            piece = min(size - sent, 65536)
            writer.write(r.randbytes(piece))
            sent += piece
            with contextlib.suppress(OSError):
                await asyncio.wait_for(writer.drain(), 2)
            await asyncio.sleep(0.01)
        if sent == size:
            writer.write(b"\r\n")
        await self.drain(reader, 1.0)
        self.close(writer)

    async def half_close(self) -> None:
        reader, writer = await self.connect()
        self.send(writer, self.auth() + resp([b"SUBMIT", b"echo", b"bye"]) + resp([b"STATS"]), 3)
        with contextlib.suppress(OSError):
            writer.write_eof()
        await self.drain(reader, 1.0)
        self.close(writer)

    async def worker(self) -> None:
        """A worker that fetches and acks (or fails) a few jobs, sometimes vanishing."""
        r = self.rnd
        reader, writer = await self.connect()
        hello = resp([b"HELLO", b"1", b"ROLE", b"worker", b"ID", b"live-%d" % r.randrange(20),
                      b"TYPES", b"echo"])  # fmt: skip
        self.send(writer, self.auth() + hello + resp([b"FETCH", b"5", b"0.1"]), 3)
        await self.drain(reader, 0.5)
        for i in range(1, r.randint(1, 6)):
            self.send(writer, resp([b"ACK", b"%d" % i, b"%d" % i, b'"done"']))
        self.send(writer, resp([b"BYE"]) if r.random() < 0.5 else b"")
        await self.drain(reader, 0.3)
        self.close(writer, reset=r.random() < 0.3)

    BEHAVIOURS: list[tuple[str, int]] = [
        ("valid", 20), ("fuzz", 25), ("slowloris", 8), ("huge", 10),
        ("unauthenticated_flood", 8), ("wrong_auth", 6), ("never_read", 4),
        ("random_bytes", 10), ("big_upload", 3), ("half_close", 3), ("worker", 5),
    ]  # fmt: skip

    async def client(self, end: float) -> None:
        only = os.environ.get("DISTQUEUE_FUZZ_ONLY", "").split(",")  # to look into one
        chosen = [(n, w) for n, w in self.BEHAVIOURS if n in only] or self.BEHAVIOURS
        names = [name for name, _ in chosen]
        weights = [w for _, w in chosen]
        while time.monotonic() < end:
            name = self.rnd.choices(names, weights)[0]
            behaviour: Callable[[], Awaitable[None]] = getattr(self, name)
            owned: set[asyncio.StreamWriter] = set()
            _owned.set(owned)
            try:
                await asyncio.wait_for(behaviour(), max(1.0, end - time.monotonic()))
                self.counts[f"ran {name}"] += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.counts[f"error {type(exc).__name__}"] += 1
            finally:
                for writer in owned:
                    if writer in self.writers:
                        self.close(writer)
            await asyncio.sleep(self.rnd.uniform(0, 0.05))

    async def run(self, seconds: float, connections: int) -> None:
        end = time.monotonic() + seconds
        await asyncio.gather(*(self.client(end) for _ in range(connections)))
        for writer in list(self.writers):
            self.close(writer)
        await asyncio.sleep(0.2)


def main() -> None:
    host, port, token, seconds, seed = sys.argv[1:6]
    default = os.environ.get("DISTQUEUE_FUZZ_CONNECTIONS", "50")
    connections = int(sys.argv[6] if len(sys.argv) > 6 else default)
    driver = Driver(host, int(port), token, int(seed))
    started = time.monotonic()
    asyncio.run(driver.run(float(seconds), connections))
    driver.counts["seconds"] = round(time.monotonic() - started)
    print(json.dumps(dict(driver.counts)), flush=True)


if __name__ == "__main__":
    main()
