"""Direct mode: clients and workers on a shared store, without a server.

``DirectConnection`` speaks the same commands as a server connection, answered
in this process by the server's own command handlers and rules (commands.py,
service.py) over a store opened from its URL (``redis://...``): the same leases,
retries and fencing, because the store enforces them. What a server would do in
the background — promote due jobs, take back expired leases — each direct-mode
worker does too (both are atomic and idempotent in the store). As on a server, a
pipeline's consecutive ACKs reach the store as one operation. A worker that
dies loses its jobs when their leases run out, as there is no connection to drop.
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import Sequence
from typing import Any

from distqueue import codec
from distqueue.aio import cancel_and_wait
from distqueue.client.connection import Arg, hello_args
from distqueue.config import ServerConfig, redact_url
from distqueue.errors import DistQueueError, UnknownCommand
from distqueue.protocol.commands import COMMANDS, OK, Session, check_allowed, parse_ack
from distqueue.protocol.resp import Simple
from distqueue.service.core import Service, keep_trying
from distqueue.store import Store, open_store, require_backend

__all__ = ["DirectConnection", "is_store_url"]

#: seconds between a direct-mode worker's promote/expire rounds
HOUSEKEEPING_EVERY = 0.25


def is_store_url(address: str | None) -> bool:
    schemes = (
        "redis", "rediss", "unix", "redis+cluster", "redis+sentinel", "postgresql", "postgres",
    )  # fmt: skip
    return address is not None and address.split("://", 1)[0] in schemes


def _wire(value: Any) -> Any:
    """A handler's reply as a RESP client would read it back."""
    if isinstance(value, Simple | str):
        return value.encode()
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    if isinstance(value, bool):
        return int(value)
    return value


def _arg(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()


class DirectConnection:
    """The AsyncConnection interface, answered in-process over a shared store."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        role: str = "client",
        hello: Sequence[Arg] = (),
        housekeeping: bool = False,
        lease: float | None = None,
        share: DirectConnection | None = None,
    ) -> None:
        require_backend(url)  # a missing extra is said now, not at the first call
        self.url = url
        self.lease = lease
        self.role = role
        self.hello_extra = list(hello)
        self.info: dict[str, Any] = {}
        self.address: tuple[str, int] | None = None
        self.addresses: list[tuple[str, int]] = []
        self._housekeeping = housekeeping
        self._store: Store | None = None
        self._service: Service | None = None
        self._session: Session | None = None
        self._tick: asyncio.Task[None] | None = None
        #: another connection whose store and service this one uses (a direct-mode
        #: worker's fetcher shares its control connection's: what one of them does —
        #: an ACK that frees a limited slot or releases a waiting job — wakes a FETCH
        #: blocked on the other, as on a server); that one opens and closes them
        self._share = share

    @property
    def connected(self) -> bool:
        return self._session is not None

    async def connect(self) -> None:
        if self._session is not None:
            return
        if self._share is not None:
            await self._share.connect()
            self._store, self._service = self._share._store, self._share._service
        else:
            self._store = await open_store(self.url)
            config = ServerConfig(data=self.url)
            if self.lease is not None:
                config.lease = self.lease
            self._service = Service(self._store, config)
            await self._service.refresh_types()
        assert self._service is not None
        self._session = Session(self._service, f"local:{redact_url(self.url)}")
        self.info = codec.loads(await self.call(*hello_args(None, self.role, self.hello_extra)))
        if self._housekeeping:
            self._tick = asyncio.create_task(self._keep_house(), name="housekeeping")

    async def _keep_house(self) -> None:
        service = self._service
        assert service is not None

        async def step() -> float:
            await service.tick()
            return HOUSEKEEPING_EVERY

        await keep_trying(step, service.health)  # a store outage is waited out

    async def call(self, *args: Arg) -> Any:
        """One command; raise the error a server would have answered."""
        if self._session is None:
            await self.connect()
        session = self._session
        assert session is not None
        words = [_arg(a) for a in args]
        verb = words[0].upper()
        command = COMMANDS.get(verb)
        if command is None:
            raise UnknownCommand(f"unknown command {verb.decode(errors='replace')!r}")
        check_allowed(session, verb, command, len(words) - 1)
        if verb in (b"FETCH", b"WAIT"):  # blocking: wake on other processes' events
            session.service.start_watching()
        reply = command.handler(session, words[1:])
        if asyncio.iscoroutine(reply):
            reply = await reply
        return _wire(reply)

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Many commands in order; errors come back as exception objects.

        Consecutive well-formed ACKs go to the store as one operation (``ack_many``,
        as a server groups a read's pipelined ACKs), each still answered on its own."""
        if self._session is None:
            await self.connect()
        out: list[Any] = []
        acks: list[tuple[int, int, Any]] = []
        for command in commands:
            item = self._ack_item(command)
            if item is not None:
                acks.append(item)
                continue
            if acks:  # what came after them starts once they are in the store
                out += await self._ack_many(acks)
                acks = []
            try:
                out.append(await self.call(*command))
            except DistQueueError as exc:
                out.append(exc)
        if acks:
            out += await self._ack_many(acks)
        return out

    def _ack_item(self, command: Sequence[Arg]) -> tuple[int, int, Any] | None:
        """A well-formed ACK's (job id, token, result); None for anything else (an ACK
        with an error is answered the usual way, by call)."""
        session = self._session
        if session is None or not command or _arg(command[0]).upper() != b"ACK":
            return None
        words = [_arg(a) for a in command[1:]]
        try:
            check_allowed(session, b"ACK", COMMANDS[b"ACK"], len(words))
            return parse_ack(words)
        except DistQueueError:
            return None

    async def _ack_many(self, items: list[tuple[int, int, Any]]) -> list[Any]:
        """One store operation for these ACKs; each one's reply (OK or its error)."""
        session = self._session
        assert session is not None and session.worker is not None
        try:
            errors: Sequence[DistQueueError | None] = await session.service.ack_many(
                session.worker, items
            )
        except DistQueueError as exc:  # the store refused them all (an outage)
            errors = [exc] * len(items)
        return [_wire(OK) if error is None else error for error in errors]

    async def close(self) -> None:
        if self._tick is not None:
            await cancel_and_wait(self._tick)
            self._tick = None
        if self._share is None:  # (a shared store and service are their owner's to close)
            if self._service is not None:
                await self._service.stop_watching()
                await self._service.drain_background()
            if self._store is not None:
                await self._store.close()
        self._store = self._service = self._session = None


class SyncDirectConnection:
    """The blocking Connection interface over DirectConnection (an event loop of its
    own on a background thread)."""

    def __init__(self, url: str, **options: Any) -> None:
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="distqueue-direct")  # fmt: skip
        self._thread.start()
        self._local = DirectConnection(url, **options)
        # a client nobody closed still lets go of its store cleanly at exit
        atexit.register(self.close)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def call(self, *args: Arg) -> Any:
        return self._run(self._local.call(*args))

    def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        return list(self._run(self._local.pipeline(commands)))

    def close(self) -> None:
        atexit.unregister(self.close)
        if self._loop.is_running():
            self._run(self._local.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
