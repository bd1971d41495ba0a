"""One client or worker connection: read -> parse -> dispatch -> replies in order.

Commands of one connection start in the order they arrive, and each handler's
first step is its store call, so their effects happen in that order; a slow one
(a blocking FETCH or WAIT) does not hold back the *work* of those after it, only
their replies, which always go out in request order (pipelining). A handler that
raises becomes an error reply, never a dead connection or server.

What a client can cost is bounded (docs/security.md): before it authenticates, a
connection may send requests of 4 KiB and 32 arguments at most, 16 of them, within
a hard deadline; after, each request is checked against the size limits as its
headers arrive (protocol.resp.RequestParser); the replies it has not read are
bounded in bytes; what it gets wrong is answered, and logged at most a few lines
a period whatever the number of clients (guard.QuietLog).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from distqueue.errors import (
    AuthError,
    DistQueueError,
    ProtocolError,
    TooLarge,
    UnknownCommand,
)
from distqueue.protocol.commands import (
    COMMANDS,
    OK,
    Command,
    Session,
    check_allowed,
    error_of,
    parse_ack,
)
from distqueue.protocol.guard import refusals
from distqueue.protocol.resp import (
    RequestParser,
    Resp3,
    encode_error,
    encode_reply,
    encode_reply3,
)

if TYPE_CHECKING:
    from distqueue.server.server import Server

__all__ = ["Connection"]

#: the label of each verb in the commands-by-verb counter (an unknown verb: "unknown")
VERB_NAMES = {verb: verb.decode() for verb in COMMANDS}

log = logging.getLogger("distqueue.server")

STALLED = "a request stalled mid-frame"
NO_AUTH = "no authentication in time"
#: stop reading from a peer with this many replies not yet sent; resume below LOW
HIGH_WATER, LOW_WATER = 4096, 512
#: the most requests of one connection run per turn of the event loop: a deep
#: pipeline is taken in slices, other connections served between them
PER_TURN = 256
#: the most commands in progress in the whole server (a store operation each, most
#: of them): past it, no connection's requests are taken until it is back under
#: INFLIGHT_LOW — a few clients pipelining thousands of SUBMITs and hanging up cannot
#: pile up store work (and memory) without end
INFLIGHT_HIGH, INFLIGHT_LOW = 16384, 8192
#: commands that wait for something (a job, a job's end, the auth throttle): a
#: closed connection cancels them; any other command runs to its end (its store
#: operation is under way) and counts as in progress until then
BLOCKING = frozenset({b"FETCH", b"WAIT", b"AUTH", b"HELLO"})
#: a request may be this much larger than --max-payload (its command, spec, ...)
REQUEST_OVERHEAD = 64 * 1024
#: before authentication: the largest request, its most arguments, the most requests
PREAUTH_MAX_REQUEST = 4096
PREAUTH_MAX_ARGS = 32
PREAUTH_MAX_REQUESTS = 16
#: ... and the most bytes it may have sent that are not yet read as requests
PREAUTH_MAX_BUFFER = 64 * 1024
#: a connection closed for cause is cut off this long after, replies sent or not
CLOSE_GRACE = 10.0


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        config = server.config
        if config.token is None:
            self.parser = _parser(config.max_payload)
        else:  # small until it authenticates (see _authenticated)
            self.parser = RequestParser(
                PREAUTH_MAX_REQUEST,
                max_args=PREAUTH_MAX_ARGS,
                why="before authentication",
            )
        self._preauth_requests = 0
        #: an AUTH is being answered (held back by the throttle): nothing more is read
        self._preauth_busy = False
        #: closing: nothing more is read, whatever the client sends
        self.reading_stopped = False
        #: replies unread past ``_soft`` for long, or past ``_hard``, drop the client;
        #: one largest reply never does
        largest = config.max_payload + REQUEST_OVERHEAD
        self._soft = max(config.output_soft, largest)
        self._hard = max(config.max_output, 2 * largest)
        #: replies in request order: bytes when ready, a task or future while running
        self.pending: deque[bytes | asyncio.Future[Any]] = deque()
        #: this read's pipelined ACKs, sent to the store together (see _group_ack)
        self._ack_group: list[tuple[tuple[int, int, Any], asyncio.Future[Any]]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        #: ... of which those a close cancels (BLOCKING)
        self.blocking: set[asyncio.Task[Any]] = set()
        #: requests read and not yet run (see _pump)
        self._requests: deque[list[bytes]] = deque()
        self._pump_scheduled = False
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_why = ""
        #: the hard deadline to authenticate by (never moved by what arrives)
        self._auth_timer: asyncio.TimerHandle | None = None
        #: the check of a slow reader's output, armed while it is over the soft limit
        self._output_timer: asyncio.TimerHandle | None = None
        #: the abort of a connection closed for cause that will not finish closing
        self._cutoff_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; uvloop's is not a subclass of asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        self.session = Session(
            self.server.service, str(peer), host=host, throttle=self.server.auth_throttle
        )
        self.server.connections.add(self)
        if not self.session.authenticated:
            loop = asyncio.get_running_loop()
            self._auth_timer = loop.call_later(
                self.server.config.auth_timeout, self._expired, NO_AUTH
            )

    def data_received(self, data: bytes) -> None:
        session = self.session
        assert session is not None
        if self.reading_stopped:  # closing: what it sends now is never read
            return
        try:
            if session.authenticated:
                self._requests.extend(self.parser.feed(data))
                self._pump()
            else:
                self._preauth(self.parser.feed(data, 0 if self._preauth_busy else 1))
            if self.parser.error is not None and not session.closing and not self._requests:
                raise self.parser.error  # after the requests before it ran
        except ProtocolError as exc:  # TooLarge too
            self._refuse(exc)
            return
        self._read_done()

    def _read_done(self) -> None:
        self._close_ack_group()
        self._flush()
        if self.parser.pending and not self.closed and not self.reading_stopped:
            if self._timer_why != STALLED:
                self._arm(self.server.config.frame_timeout, STALLED)
        else:
            self._disarm()

    def _refuse(self, exc: ProtocolError) -> None:
        """The stream has lost its framing (or passed a limit): answer once, read
        nothing more, close once the replies before it are out (CLOSE_GRACE at most)."""
        self._close_ack_group()
        refusals.info("closing %s: %s", self.session.peer if self.session else "?", exc)
        self._queue(encode_error(exc))
        self._close_after_flush()
        self._cut_off_later()

    def _pump(self) -> None:
        """Run the requests read, as many as there is room for: PER_TURN a turn, fewer
        when this connection's replies pile up (HIGH_WATER) or the server's commands
        in progress do (INFLIGHT_HIGH). The rest wait in ``_requests`` (reading
        paused: at most one read's worth): the next turn takes them (call_soon), or
        the flush, or the server's wake() that makes room."""
        self._pump_scheduled = False
        requests = self._requests
        session = self.session
        if self.closed or self.reading_stopped or session is None or session.closing:
            requests.clear()
            return
        if not requests:
            return
        server = self.server
        room = min(PER_TURN, HIGH_WATER - len(self.pending), INFLIGHT_HIGH - server.inflight)
        if room <= 0:
            self._pause_reading()
            if server.inflight >= INFLIGHT_HIGH:
                server.starved.add(self)
            return
        if room >= len(requests):
            batch = list(requests)
            requests.clear()
        else:
            batch = [requests.popleft() for _ in range(room)]
        self._dispatch_all(batch)
        if requests and not self._pump_scheduled:
            self._pause_reading()  # what is read already comes before anything new
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def wake(self) -> None:
        """The server has room for commands again: go on with those read already."""
        if self._requests and not self._pump_scheduled and not self.closed:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._pump()
        session = self.session
        error = self.parser.error
        if (
            error is not None
            and not self._requests
            and session is not None
            and not (session.closing or self.closed)
        ):
            self._refuse(error)
            return
        self._read_done()

    def _dispatch_all(self, commands: list[list[bytes]]) -> None:
        session = self.session
        assert session is not None
        for args in commands:
            if self.closed or session.closing:
                break
            self._dispatch(args)

    def _preauth(self, commands: list[list[bytes]]) -> None:
        """Before authentication: one request at a time under the small limits, each
        answered before the next is read; what follows the one that authenticates is
        read under the full limits."""
        session = self.session
        assert session is not None
        while commands and not (self.closed or session.closing):
            self._preauth_requests += 1
            if self._preauth_requests > PREAUTH_MAX_REQUESTS:
                refusals.info("closing %s: too many requests before authenticating",
                              session.peer)  # fmt: skip
                self._queue(encode_error(AuthError(
                    f"{PREAUTH_MAX_REQUESTS} requests without authenticating: closing"
                )))  # fmt: skip
                self._close_after_flush()
                return
            self._dispatch(commands[0])
            if session.authenticated:
                self._authenticated()
                self._requests.extend(self.parser.feed(b""))
                self._pump()
                return
            last = self.pending[-1] if self.pending else None
            if isinstance(last, asyncio.Future) and not last.done():
                # an AUTH the throttle holds back: read nothing more until it is answered
                self._preauth_busy = True
                self._pause_reading()
                last.add_done_callback(self._preauth_answered)
                return
            commands = self.parser.feed(b"", 1)
        if not session.authenticated and self.parser.buffered > PREAUTH_MAX_BUFFER:
            raise TooLarge(f"more than {PREAUTH_MAX_BUFFER} bytes before authenticating")

    def _preauth_answered(self, _: asyncio.Future[Any]) -> None:
        self._preauth_busy = False
        session = self.session
        if self.closed or self.reading_stopped or session is None:
            return
        try:
            if session.authenticated:
                self._authenticated()
                self._dispatch_all(self.parser.feed(b""))
            elif not session.closing:
                self._preauth(self.parser.feed(b"", 1))
            if self.parser.error is not None and not session.closing:
                raise self.parser.error
        except ProtocolError as exc:
            self._refuse(exc)
            return
        self._read_done()

    def _authenticated(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        max_payload = self.server.config.max_payload
        self.parser.set_limits(
            max_payload + REQUEST_OVERHEAD, max_arg=max_payload, why="the server's --max-payload"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        for timer in (self._auth_timer, self._output_timer, self._cutoff_timer):
            if timer is not None:
                timer.cancel()
        # cancel blocked FETCH/WAIT first, so no claim lands after the release below;
        # the rest run to their end (their store operations are under way), unanswered
        for task in self.blocking:
            task.cancel()
        self.server.starved.discard(self)
        # replies that were waiting behind a slower one will never be sent: their
        # errors (the client's own doing) are seen here, not logged as unretrieved
        for item in self.pending:
            if not isinstance(item, bytes) and item.done() and not item.cancelled():
                item.exception()
        self.pending.clear()
        self.server.connections.discard(self)
        session = self.session
        if session is not None and session.worker is not None:
            self.server.service.spawn(self.server.service.disconnect_worker(session.worker))

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._output_timer is not None:  # it read its replies down: not a slow reader
            self._output_timer.cancel()
            self._output_timer = None
        self._maybe_resume_reading()

    # -- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, args: list[bytes]) -> None:
        session = self.session
        assert session is not None
        verb = args[0].upper()
        command = COMMANDS.get(verb)
        commands = self.server.service.metrics.commands
        name = VERB_NAMES.get(verb, "unknown")
        commands[name] = commands.get(name, 0) + 1
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
            if session.closing:  # a third wrong token
                self._close_after_flush()
            return
        except Exception as exc:  # a handler bug: answer, log, keep serving
            log.exception("command %r failed", verb)
            self._queue(encode_error(error_of(exc)))
            return
        if asyncio.iscoroutine(result):
            if session.resp3:  # encoded when done, in the forms of now (resp.Resp3)
                result = _in_resp3(result)
            task = asyncio.ensure_future(result)
            self.tasks.add(task)
            if verb in BLOCKING:
                self.blocking.add(task)
            self.server.inflight += 1
            task.add_done_callback(self._done)
            self._queue(task)
        else:
            self._queue(encode_reply3(result) if session.resp3 else encode_reply(result))
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
        self.server.inflight += 1

        def answer(task: asyncio.Task[list[DistQueueError | None]]) -> None:
            self.tasks.discard(task)
            self.server.command_done()
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
                    if self.closed:  # nobody will send it: not an unretrieved error
                        fut.exception()
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
        self.blocking.discard(task)
        self.server.command_done()
        if self.closed:
            # its client is gone: the reply will never be sent, and its error (the
            # client's own doing, like a bad LIST) is no "exception never retrieved"
            if not task.cancelled():
                exc = task.exception()
                if exc is not None and not isinstance(exc, DistQueueError):
                    log.error("command failed", exc_info=exc)
            return
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
            self._check_output()
        self._maybe_resume_reading()

    def _check_output(self) -> None:
        """Drop a client whose unread replies pass the hard limit, or stay over the
        soft one too long (Redis' client-output-buffer-limit)."""
        transport = self.transport
        if transport is None or self.closed:
            return
        size = transport.get_write_buffer_size()
        if size > self._hard:
            self._drop_reader(f"{size} bytes of replies unread, over the limit of {self._hard}")
        elif size > self._soft and self._output_timer is None:
            loop = asyncio.get_running_loop()
            seconds = self.server.config.output_soft_seconds
            self._output_timer = loop.call_later(seconds, self._soft_expired)

    def _soft_expired(self) -> None:
        self._output_timer = None
        if self.transport is None or self.closed:
            return
        size = self.transport.get_write_buffer_size()
        if size > self._soft:
            seconds = self.server.config.output_soft_seconds
            self._drop_reader(f"replies unread over {self._soft} bytes for {seconds:g}s")

    def _drop_reader(self, why: str) -> None:
        refusals.warning("dropping %s: %s (a client that does not read its replies)",
                         self.session.peer if self.session else "?", why)  # fmt: skip
        assert self.transport is not None
        self.transport.abort()  # its unsent replies go with it

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
        self._stop_reading()
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

    def _stop_reading(self) -> None:
        """Closing: read nothing more (no buffer grows while the last replies go)."""
        self.reading_stopped = True
        self._disarm()
        self._pause_reading()
        self.parser.discard()  # what it sent past its last request is never read

    def _cut_off_later(self) -> None:
        """Abort the connection CLOSE_GRACE from now if it has not closed by then (a
        client that reads nothing holds a close forever)."""
        if not self.closed and self._cutoff_timer is None:
            self._cutoff_timer = asyncio.get_running_loop().call_later(CLOSE_GRACE, self.abort_now)

    def abort_now(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def _maybe_resume_reading(self) -> None:
        if (
            self.reading_paused
            and not self.reading_stopped
            and not self._preauth_busy
            and not self.writing_paused
            and len(self.pending) < LOW_WATER
            and self.transport is not None
            and not self.closed
        ):
            if self._requests:  # requests read already come before any new ones
                if self not in self.server.starved:  # (a starved one: the server wakes
                    self.wake()  # it once it has room; woken now, it would spin here)
                return
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
        if why == NO_AUTH:
            self._auth_timer = None
        else:
            self._timer, self._timer_why = None, ""
        if self.transport is not None and not self.closed:
            refusals.info("closing %s: %s", self.session.peer if self.session else "?", why)
            self._stop_reading()
            self._queue(encode_error(ProtocolError(f"closing the connection: {why}")))
            self._flush()
            self.transport.close()
            self._cut_off_later()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


async def _in_resp3(reply: Coroutine[Any, Any, Any]) -> Resp3:
    """The reply of a command sent on a RESP3 connection, marked to be encoded in
    RESP3 whatever the connection speaks when it is done (a HELLO 2 behind it)."""
    return Resp3(await reply)


def _parser(max_payload: int) -> RequestParser:
    """The parser of an authenticated connection: any argument up to --max-payload,
    the whole request up to 64 KiB more."""
    return RequestParser(max_payload + REQUEST_OVERHEAD, max_arg=max_payload)
