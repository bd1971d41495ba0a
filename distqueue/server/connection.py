"""One client or worker connection: read -> parse -> dispatch -> replies in order.

Commands of one connection start in the order they arrive, and each handler's
first step is its store call, so their effects happen in that order; a slow one
(a blocking FETCH or WAIT) does not hold back the *work* of those after it, only
their replies, which always go out in request order (pipelining). A handler that
raises becomes an error reply, never a dead connection or server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from distqueue.errors import (
    AuthError,
    DistQueueError,
    ProtocolError,
    UnknownCommand,
)
from distqueue.protocol.resp import RequestParser, encode_error, encode_reply
from distqueue.server.commands import (
    COMMANDS,
    OK,
    Command,
    Session,
    check_allowed,
    error_of,
    parse_ack,
)

if TYPE_CHECKING:
    from distqueue.server.server import Server

__all__ = ["Connection"]

log = logging.getLogger("distqueue.server")

STALLED = "a request stalled mid-frame"
#: stop reading from a peer with this many replies not yet sent; resume below LOW
HIGH_WATER, LOW_WATER = 4096, 512


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.parser = RequestParser(server.config.max_payload + 64 * 1024)
        #: replies in request order: bytes when ready, a task or future while running
        self.pending: deque[bytes | asyncio.Future[Any]] = deque()
        #: this read's pipelined ACKs, sent to the store together (see _group_ack)
        self._ack_group: list[tuple[tuple[int, int, Any], asyncio.Future[Any]]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_why = ""

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; uvloop's is not a subclass of asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.session = Session(self.server.service, str(peer))
        self.server.connections.add(self)
        if not self.session.authenticated:
            self._arm(self.server.config.auth_timeout, "no authentication")

    def data_received(self, data: bytes) -> None:
        try:
            commands = self.parser.feed(data)
        except ProtocolError as exc:
            # the stream has lost its framing: answer once and close
            self._queue(encode_error(exc))
            self._close_after_flush()
            return
        for args in commands:
            if self.closed or (self.session is not None and self.session.closing):
                break
            self._dispatch(args)
        self._close_ack_group()
        self._flush()
        if self.parser.pending:
            if self._timer_why != STALLED:
                self._arm(self.server.config.frame_timeout, STALLED)
        elif self.session is not None and self.session.authenticated:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        # cancel blocked FETCH/WAIT first, so no claim lands after the release below
        for task in self.tasks:
            task.cancel()
        self.server.connections.discard(self)
        session = self.session
        if session is not None and session.worker is not None:
            self.server.service.spawn(self.server.service.disconnect_worker(session.worker))

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._maybe_resume_reading()

    # -- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, args: list[bytes]) -> None:
        session = self.session
        assert session is not None
        verb = args[0].upper()
        command = COMMANDS.get(verb)
        if verb == b"ACK" and command is not None and self._group_ack(session, command, args):
            return
        # anything else starts after the ACKs before it reached the store: keeps order
        self._close_ack_group()
        try:
            if command is None:
                if not session.authenticated:
                    raise AuthError("authenticate first: HELLO 1 TOKEN <token>, or AUTH <token>")
                shown = verb[:40].decode("utf-8", "replace")
                raise UnknownCommand(f"unknown command {shown!r}; see docs/protocol.md")
            check_allowed(session, verb, command, len(args) - 1)
            result = command.handler(session, args[1:])
        except DistQueueError as exc:
            self._queue(encode_error(exc))
            return
        except Exception as exc:  # a handler bug: answer, log, keep serving
            log.exception("command %r failed", verb)
            self._queue(encode_error(error_of(exc)))
            return
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            self.tasks.add(task)
            task.add_done_callback(self._done)
            self._queue(task)
        else:
            self._queue(encode_reply(result))
        if session.closing:
            self._close_after_flush()

    def _group_ack(self, session: Session, command: Command, args: list[bytes]) -> bool:
        """Add a well-formed ACK to the group of this read's pipelined ACKs, which go
        to the store as one operation; each still gets its own reply, in order.
        False (not grouped) for an ACK with an error: it is answered the usual way."""
        try:
            check_allowed(session, b"ACK", command, len(args) - 1)
            item = parse_ack(args[1:])
        except DistQueueError:
            return False
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ack_group.append((item, fut))
        self._queue(fut)
        return True

    def _close_ack_group(self) -> None:
        group, self._ack_group = self._ack_group, []
        if not group:
            return
        session = self.session
        assert session is not None and session.worker is not None
        items = [item for item, _ in group]
        task = asyncio.ensure_future(self.server.service.ack_many(session.worker, items))
        self.tasks.add(task)  # referenced here until answer() runs

        def answer(task: asyncio.Task[list[DistQueueError | None]]) -> None:
            self.tasks.discard(task)
            if task.cancelled():
                errors: list[Any] = [DistQueueError("cancelled")] * len(group)
            elif task.exception() is not None:
                errors = [error_of(task.exception())] * len(group)  # type: ignore[arg-type]
            else:
                errors = task.result()
            for (_, fut), error in zip(group, errors, strict=True):
                if fut.done():
                    continue
                if error is None:
                    fut.set_result(OK)
                else:
                    fut.set_exception(error)
            self._done_group()

        task.add_done_callback(answer)

    def _done_group(self) -> None:
        if not self.closed:
            self._flush()
            session = self.session
            if session is not None and session.closing and not self.pending:
                self._close_after_flush()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not self.closed:
            self._flush()
            session = self.session
            if session is not None and session.closing and not self.pending:
                self._close_after_flush()

    def _queue(self, item: bytes | asyncio.Future[Any]) -> None:
        self.pending.append(item)
        if len(self.pending) >= HIGH_WATER:
            self._pause_reading()

    def _flush(self) -> None:
        if self.closed or self.transport is None:
            return
        out: list[bytes] = []
        pending = self.pending
        while pending:
            head = pending[0]
            if isinstance(head, bytes):
                out.append(head)
            elif head.done():
                out.append(self._reply_of(head))
            else:
                break
            pending.popleft()
        if out:
            self.transport.write(b"".join(out))
        self._maybe_resume_reading()

    def _reply_of(self, task: asyncio.Future[Any]) -> bytes:
        if task.cancelled():
            return encode_error(DistQueueError("cancelled: the server is shutting down"))
        exc = task.exception()
        if exc is None:
            try:
                return encode_reply(task.result())
            except Exception as bad:  # an unencodable reply is a bug; say so, keep serving
                log.exception("cannot encode a reply")
                return encode_error(error_of(bad))
        if not isinstance(exc, DistQueueError):
            log.error("command failed", exc_info=exc)
        return encode_error(error_of(exc))

    def _close_after_flush(self) -> None:
        self._flush()
        if self.pending:  # replies still being worked out: close when they are sent
            if self.session is not None:
                self.session.closing = True
            return
        if self.transport is not None and not self.closed:
            self.transport.close()

    # -- flow control and timers --------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self.reading_paused
            and not self.writing_paused
            and len(self.pending) < LOW_WATER
            and self.transport is not None
            and not self.closed
        ):
            self.reading_paused = False
            self.transport.resume_reading()

    def _arm(self, seconds: float, why: str) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(seconds, self._expired, why)
        self._timer_why = why

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_why = ""

    def _expired(self, why: str) -> None:
        self._timer, self._timer_why = None, ""
        if self.transport is not None and not self.closed:
            log.info("closing %s: %s", self.session.peer if self.session else "?", why)
            self._queue(encode_error(ProtocolError(f"closing the connection: {why}")))
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
