"""Structure-aware fuzzing of the command layer over real sockets.

A real ``Server`` (a SQLite store in tmp_path, a token) runs in a thread of this
process, on its own event loop; hypothesis makes sessions: a prelude (none, AUTH,
HELLO, worker HELLO), then requests — known verbs in any case with plausible,
mutated or junk arguments, unknown verbs, wrong arities, binary junk, job specs —
framed inline or as RESP, sent one at a time or pipelined, maybe ended by a
mutated raw frame. Properties:

- every request gets exactly one reply, in order; the connection is closed only
  after an error reply (PROTO and TOOBIG always close; a third wrong token, too
  many requests before AUTH do) or the +OK of QUIT or BYE, after which nothing
  more is answered; otherwise it stays usable (PING answers);
- a well-formed request under the size limits is never refused as malformed or too
  big (as it would be if a bad frame behind it in the same read spoilt it);
- error replies carry a documented code, and never "internal error";
- a second connection (the witness) answers PING after every session;
- nothing is logged at ERROR level by "distqueue" (a handler bug is logged with
  log.exception: a finding).

Runs hypothesis again and again for its budget (budget.py): ~30 s in CI.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distqueue.config import ServerConfig
from distqueue.protocol.commands import COMMANDS
from distqueue.server.connection import PREAUTH_MAX_ARGS, PREAUTH_MAX_REQUEST
from distqueue.server.server import Server
from tests.fuzz import budget, frames

TOKEN = "secret"
MAX_PAYLOAD = 200_000
#: seconds a reply may take (blocking commands get at most 0.2 s: frames.bound_blocking)
REPLY_TIMEOUT = 5.0
CODES = {
    "ERR", "PROTO", "UNKNOWN", "ARGS", "TOOBIG", "AUTH", "ROLE", "INVALID", "NOTYPE",
    "NOTFOUND", "STATE", "STALE", "PENDING", "FAILED", "TIMEOUT", "STORE",
}  # fmt: skip
#: error codes after which the server closes the connection
CLOSING = {"PROTO", "TOOBIG"}
#: placeholders, replaced when sent by the last job id and token this connection saw
LAST_ID, LAST_TOKEN = b"<id>", b"<token>"

pytestmark = pytest.mark.fuzz


# -- the server, in a thread -------------------------------------------------------------


class ThreadServer:
    """A ``Server`` on its own event loop in a thread; ``port`` once started."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(30), "the server did not start"
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = Server(self.config)
        await server.start()
        self.port = server.port
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.shutdown()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the server did not stop"
        if self._error is not None:
            raise self._error


class Closed(Exception):
    """The server closed the connection."""


class Peer:
    """A raw connection reading whole RESP replies (errors as hiredis.ReplyError)."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=REPLY_TIMEOUT, source_address=(source, 0)
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:  # reset or broken pipe: the server closed it
            raise Closed(str(exc)) from None

    def reply(self, timeout: float = REPLY_TIMEOUT) -> Any:
        """The next reply; Closed at the end of the stream; TimeoutError if none comes."""
        self.sock.settimeout(timeout)
        while (item := self.reader.gets()) is False:
            try:
                data = self.sock.recv(1 << 16)
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise Closed(str(exc)) from None
            if not data:
                raise Closed("end of stream")
            self.reader.feed(data)
        return item

    def close(self) -> None:
        self.sock.close()


def code_of(reply: Any) -> str | None:
    return str(reply).split(" ", 1)[0] if isinstance(reply, hiredis.ReplyError) else None


# -- strategies ----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=8,
)  # fmt: skip
NAMES = st.sampled_from(["echo", "noop", "wordcount", "sleep", "nosuch", "", "a b", "x" * 201,
                         "q:1/2-3", "default", "_", "é"])  # fmt: skip
NUMBER = st.one_of(
    st.integers(-5, 20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(10**30),
    st.sampled_from(["high", "normal", "low", "1", "x"]),
)
SPEC = st.fixed_dictionaries(
    {"type": NAMES},
    optional={
        "args": JSON, "queue": NAMES, "priority": NUMBER, "retries": NUMBER,
        "timeout": NUMBER, "delay": NUMBER, "run_at": NUMBER, "deadline": NUMBER,
        "deadline_in": NUMBER, "unique_key": st.text(max_size=4) | st.integers(),
        "payload": st.booleans() | st.integers(0, 2), "check_type": st.booleans() | st.none(),
        "bogus": JSON,
    },
)  # fmt: skip
ERROR_OBJ = st.fixed_dictionaries(
    {}, optional={"kind": st.text(max_size=6) | st.integers(), "message": JSON,
                  "traceback": JSON, "retryable": st.booleans() | JSON},
)  # fmt: skip


def as_json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN, Infinity: not strict JSON


ARG = st.one_of(
    st.sampled_from(frames.WORDS),
    st.sampled_from([LAST_ID, LAST_TOKEN]),
    st.integers(-(2**64), 2**64).map(lambda i: str(i).encode()),
    st.integers(0, 8).map(lambda i: str(i).encode()),
    st.floats().map(lambda f: repr(f).encode()),
    st.binary(max_size=32),
    st.text(max_size=16).map(str.encode),
    SPEC.map(as_json),
    st.lists(SPEC, max_size=3).map(as_json),
    ERROR_OBJ.map(as_json),
    JSON.map(as_json),
    st.binary(min_size=100, max_size=1000),
    # long arguments, written short (hypothesis prints its examples): see expand()
    st.sampled_from([b"<big:5000>", b"<big:70000>", b"<big:%d>" % (MAX_PAYLOAD + 1)]),
)
_BIG = re.compile(rb"<big:(\d+)>\Z")


def expand(arg: bytes) -> bytes:
    """``<id>`` and ``<token>`` are replaced when sent; ``<big:N>`` is N bytes."""
    m = _BIG.match(arg)
    return bytes(i % 251 for i in range(int(m.group(1)))) if m else arg


#: every verb but SHUTDOWN, which stops the server on purpose (tests/protocol has it)
FUZZED_VERBS = [verb for verb in COMMANDS if verb != b"SHUTDOWN"]
VERB = st.one_of(
    st.sampled_from(FUZZED_VERBS),
    st.sampled_from(FUZZED_VERBS).map(bytes.lower),
    st.sampled_from([b"FROB", b"SET", b"GET", b"", b"PIN", b"PINGX", b"\x00", b"*", b"$"]),
    st.binary(min_size=1, max_size=8),
)


def _b(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda v: v if isinstance(v, bytes) else str(v).encode())


JOB_ID = _b(st.one_of(st.just(LAST_ID), st.integers(1, 60)))
JOB_TOKEN = _b(st.one_of(st.just(LAST_TOKEN), st.integers(0, 60)))
TEXT = _b(st.text(max_size=12))
OPTIONAL = st.lists  # (readability below: an optional tail is a list of 0 or 1)

#: well-formed commands, argument by argument; ``command`` mutates some of them
TEMPLATES: dict[bytes, st.SearchStrategy[list[bytes]]] = {
    b"PING": st.lists(TEXT, max_size=1),
    b"AUTH": st.lists(st.sampled_from([TOKEN.encode(), b"wrong"]), min_size=1, max_size=1),
    b"QUIT": st.just([]),
    b"SUBMIT": st.one_of(
        st.tuples(NAMES.map(str.encode), st.lists(TEXT, max_size=3)).map(
            lambda t: [t[0], *t[1]]
        ),
        st.tuples(SPEC.map(as_json), st.lists(st.binary(max_size=20), max_size=1)).map(
            lambda t: [t[0], *t[1]]
        ),
        st.tuples(st.lists(SPEC, min_size=1, max_size=3).map(as_json),
                  st.lists(st.binary(max_size=20), max_size=3)).map(lambda t: [t[0], *t[1]]),
    ),
    b"STATUS": st.tuples(JOB_ID).map(list),
    b"RESULT": st.tuples(JOB_ID).map(list),
    b"WAIT": st.tuples(JOB_ID, st.sampled_from([b"0", b"0.05"])).map(list),
    b"CANCEL": st.tuples(JOB_ID).map(list),
    b"RETRY": st.tuples(JOB_ID).map(list),
    b"PURGE": st.tuples(JOB_ID).map(list),
    b"LIST": st.lists(
        st.one_of(
            st.tuples(st.just(b"STATE"), st.sampled_from([b"queued", b"running", b"dead",
                                                           b"succeeded", b"cancelled"])),
            st.tuples(st.just(b"QUEUE"), NAMES.map(str.encode)),
            st.tuples(st.just(b"TYPE"), NAMES.map(str.encode)),
            st.tuples(st.just(b"LIMIT"), _b(st.integers(0, 1001))),
            st.tuples(st.just(b"BEFORE"), JOB_ID),
        ),
        max_size=3,
    ).map(lambda pairs: [x for pair in pairs for x in pair]),
    b"STATS": st.just([]),
    b"METRICS_GET": st.just([]),
    b"JOB_STATUS": st.tuples(JOB_ID).map(list),
    b"FETCH": st.tuples(_b(st.integers(0, 3)), st.just(b"0")).map(list),
    b"ACK": st.tuples(
        JOB_ID, JOB_TOKEN,
        OPTIONAL(st.tuples(JSON.map(as_json), st.sampled_from([b"json", b"bytes"])), max_size=1),
    ).map(lambda t: [t[0], t[1], *(t[2][0] if t[2] else ())]),
    b"FAIL": st.tuples(JOB_ID, JOB_TOKEN, ERROR_OBJ.map(as_json)).map(list),
    b"PROGRESS": st.tuples(JOB_ID, JOB_TOKEN, _b(st.integers(-1, 101)),
                           st.lists(TEXT, max_size=1)).map(lambda t: [*t[:3], *t[3]]),
    b"BEAT": st.lists(JOB_ID, max_size=3).map(lambda ids: [b"HOLDING", *ids] if ids else []),
    b"BYE": st.just([]),
    # what Redis client libraries send on connect (HELLO 2|3 is in PRELUDES)
    b"INFO": st.lists(st.sampled_from([b"server", b"persistence", b"all", b"nosuch"]),
                      max_size=2),
    b"CLIENT": st.one_of(
        st.tuples(st.just(b"SETINFO"), st.sampled_from([b"LIB-NAME", b"LIB-VER", b"x"]),
                  TEXT).map(list),
        st.tuples(st.just(b"SETNAME"), TEXT).map(list),
        st.sampled_from([[b"GETNAME"], [b"ID"], [b"INFO"], [b"MAINT_NOTIFICATIONS", b"ON"]]),
    ),
    b"SELECT": st.lists(st.sampled_from([b"0", b"1"]), min_size=1, max_size=1),
}  # fmt: skip


@st.composite
def command(draw: Any) -> list[bytes]:
    """A request: a well-formed command (maybe with an argument or two replaced by
    junk), or a verb, known or not, with an arity near the allowed one or any."""
    roll = draw(st.integers(0, 9))
    if roll < 6:
        verb = draw(st.sampled_from(sorted(TEMPLATES)))
        args = draw(TEMPLATES[verb])
        if roll == 0 and args:  # a mutated argument
            i = draw(st.integers(0, len(args) - 1))
            args[i] = draw(ARG)
        if draw(st.integers(0, 4)) == 0:
            verb = verb.lower()
        return frames.bound_blocking([verb, *args])
    verb = draw(VERB)
    spec = COMMANDS.get(verb.upper())
    if spec is not None and roll < 9:
        # an arity near the allowed one; sometimes one off
        low = max(0, spec.min_args - 1)
        high = (spec.max_args if spec.max_args is not None else spec.min_args + 4) + 1
        n = draw(st.integers(low, high))
    else:
        n = draw(st.integers(0, 6))
    return frames.bound_blocking([verb, *draw(st.lists(ARG, min_size=n, max_size=n))])


PRELUDES: list[list[list[bytes]]] = [
    [],
    [[b"AUTH", TOKEN.encode()]],
    [[b"AUTH", b"wrong"]],
    [[b"HELLO", b"1", b"TOKEN", TOKEN.encode()]],
    [[b"HELLO", b"3", b"AUTH", b"default", TOKEN.encode()]],  # RESP3 replies from here on
    [[b"HELLO", b"2", b"AUTH", b"default", TOKEN.encode(), b"SETNAME", b"fuzz"]],
    [[b"HELLO", b"1", b"TOKEN", TOKEN.encode(), b"ROLE", b"worker", b"TYPES",
      b"echo,noop,wordcount,sleep", b"QUEUES", b"*"]],
    [[b"AUTH", TOKEN.encode()], [b"HELLO", b"ROLE", b"worker", b"ID", b"fuzz-w",
                                 b"TYPES", b"echo,noop"]],
    [[b"AUTH", TOKEN.encode()], [b"SUBMIT", b"echo", b"fuzz"],
     [b"HELLO", b"1", b"ROLE", b"worker", b"TYPES", b"echo"], [b"FETCH", b"1", b"0"]],
]  # fmt: skip

SESSION = st.fixed_dictionaries(
    {
        "prelude": st.sampled_from(PRELUDES),
        "requests": st.lists(
            st.tuples(command(), st.sampled_from(["resp", "resp", "inline"])), max_size=12
        ),
        "pipelined": st.booleans(),
        "raw_with": st.booleans(),  # the mutated frame in the same send as the requests
        "raw": st.none() | st.tuples(command(), st.lists(
            st.tuples(st.sampled_from(frames.KINDS), st.integers(0, 1 << 16),
                      st.integers(0, 255), st.integers(0, 1 << 10)),
            min_size=1, max_size=3)),
    }
)  # fmt: skip


# -- framing -------------------------------------------------------------------------------

_PLAIN = re.compile(rb"[A-Za-z0-9_.:/<>=+-]+\Z")


def inline(args: list[bytes]) -> bytes | None:
    """The inline line for ``args``, or None if it has none (a CR or LF inside)."""
    words = []
    for arg in args:
        if b"\r" in arg or b"\n" in arg:
            return None
        if _PLAIN.match(arg):
            words.append(arg)
        else:
            words.append(b'"' + arg.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
    return b" ".join(words) + b"\r\n"


_SOURCES = itertools.count(1)
#: (verb, reply code or "ok") -> how many: what the fuzzing reached, printed at the end
OUTCOMES: Counter[tuple[str, str]] = Counter()


def source_address() -> str:
    """A loopback address of its own for each session: the server throttles wrong
    tokens per peer address, and the fuzzer sends many."""
    n = next(_SOURCES) % ((1 << 24) - 2) + 1
    return f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255 or 1}"


class Session:
    """One connection's run of a generated session, and the checks on its replies."""

    def __init__(self, port: int, case: dict[str, Any]) -> None:
        self.peer = Peer(port, source_address())
        self.case = case
        self.resp = False  # once a RESP request is sent, the rest must be RESP too
        self.authenticated = False
        self.last_id, self.last_token = b"1", b"1"
        #: the server may close the connection now (its last reply was an error, or
        #: the OK of QUIT or BYE)
        self.may_close = False
        self.log: list[str] = []

    def frame(self, args: list[bytes], how: str) -> tuple[list[bytes], bytes]:
        """(the arguments with the placeholders replaced, their frame)."""
        args = [self.last_id if a == LAST_ID else self.last_token if a == LAST_TOKEN
                else expand(a) for a in args]  # fmt: skip
        if how == "inline" and not self.resp:
            line = inline(args)
            if line is not None and not line.startswith(b"*"):
                return args, line
        self.resp = True
        return args, frames.resp(args)

    def learn(self, args: list[bytes], reply: Any) -> None:
        """Remember whether it authenticated, job ids and tokens for placeholders."""
        verb = args[0].upper()
        if verb in (b"AUTH", b"HELLO"):
            self.authenticated = True
        if isinstance(reply, int):
            self.last_id = str(reply).encode()
        elif isinstance(reply, list) and reply and isinstance(reply[0], list):
            job = reply[0]
            if len(job) == 4 and isinstance(job[0], int) and isinstance(job[1], int):
                self.last_id, self.last_token = str(job[0]).encode(), str(job[1]).encode()

    def check(self, args: list[bytes], frame: bytes, reply: Any) -> bool:
        """Check the reply to one request; True if the server must now close."""
        self.log.append(f"{frame[:60]!r}{'...' if len(frame) > 60 else ''}"
                        f" -> {str(reply)[:200]!r}")  # fmt: skip
        code = code_of(reply)
        self.may_close = code is not None
        verb = args[0].upper()
        OUTCOMES[(verb.decode("ascii", "replace") if verb in COMMANDS else "?", code or "ok")] += 1
        if code is None:
            self.learn(args, reply)
            closing = args[0].upper() in (b"QUIT", b"BYE") and reply == b"OK"
            self.may_close = closing
            return closing
        assert code in CODES, f"undocumented error code: {reply!r}\n{self.history()}"
        assert "internal error" not in str(reply), f"a handler bug: {reply!r}\n{self.history()}"
        if code in CLOSING:
            # a well-formed request under the limits must never be refused like this
            # (it is, when a later frame in the same read is malformed)
            limit = MAX_PAYLOAD if self.authenticated else PREAUTH_MAX_REQUEST
            too_big = len(frame) > min(limit, 65536 if not frame.startswith(b"*") else limit)
            too_many = not self.authenticated and len(args) > PREAUTH_MAX_ARGS
            assert too_big or too_many, (
                f"a well-formed request of {len(frame)} bytes got {reply!r}\n{self.history()}"
            )
            return True
        return False

    def history(self) -> str:
        return "replies so far:\n" + "\n".join(self.log)

    def run(self) -> None:
        case = self.case
        requests = [(a, "resp") for a in case["prelude"]] + case["requests"]
        raw = None
        if case["raw"] is not None:
            raw_args, mutations = case["raw"]
            raw = frames.mutate(frames.resp([expand(a) for a in raw_args]), mutations)
        raw_with = raw is not None and case["pipelined"] and case["raw_with"]
        closing = False
        try:
            if case["pipelined"]:
                framed = [self.frame(args, how) for args, how in requests]
                data = b"".join(frame for _, frame in framed)
                self.peer.send(data + raw if raw_with and raw is not None else data)
                for args, frame in framed:
                    closing = self.check(args, frame, self.peer.reply())
                    if closing:
                        break
            else:
                for args, how in requests:
                    args, frame = self.frame(args, how)
                    self.peer.send(frame)
                    closing = self.check(args, frame, self.peer.reply())
                    if closing:
                        break
        except Closed as exc:
            assert self.may_close, (
                f"the server closed the connection ({exc}) without an error reply first;"
                f" {self.history()}"
            )
            return
        except TimeoutError:
            raise AssertionError(
                f"no reply in {REPLY_TIMEOUT:g} s, and no close; {self.history()}"
            ) from None
        if closing:
            self.expect_close()
            return
        if raw is not None:
            if not raw_with:
                self.peer.send(raw)
            self.drain_raw()
            return
        # still open: still usable (or closed after an error reply)
        try:
            self.peer.send(self.frame([b"PING"], "resp")[1])
            reply = self.peer.reply()
        except Closed:
            assert self.may_close, f"closed without an error reply first; {self.history()}"
            return
        except TimeoutError:
            raise AssertionError(f"no reply to PING; {self.history()}") from None
        assert reply == b"PONG", f"the connection is not usable; {self.history()}"

    def drain_raw(self) -> None:
        """After a mutated frame: whatever it reads as, the server answers it, waits
        for the rest, or closes after an error reply."""
        last: Any = None
        try:
            while True:
                last = self.peer.reply(timeout=0.2)
                self.log.append(f"(after the mutated frame) -> {str(last)[:200]!r}")
        except TimeoutError:
            return  # waiting for the rest of a frame (or still working): fine
        except Closed:
            assert code_of(last) is not None or last == b"OK" or self.may_close, (
                f"closed after a mutated frame without an error reply first; {self.history()}"
            )

    def expect_close(self) -> None:
        try:
            while True:  # pipelined requests after the closing one get no reply
                reply = self.peer.reply()
                raise AssertionError(f"a reply after the closing one: {reply!r}; {self.history()}")
        except Closed:
            pass
        except TimeoutError:
            raise AssertionError(f"not closed after the closing reply; {self.history()}") from None


# -- the test ------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadServer]:
    config = ServerConfig(
        port=0, data=str(tmp_path / "data"), token=TOKEN, durability="normal",
        max_payload=MAX_PAYLOAD, lease=5.0,
    )  # fmt: skip
    srv = ThreadServer(config)
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize(
    "seconds",
    [pytest.param(budget.seconds("commands"), id="budget", marks=budget.marks("commands"))],
)
def test_every_request_gets_one_reply(
    server: ThreadServer, caplog: pytest.LogCaptureFixture, seconds: float
) -> None:
    caplog.set_level(logging.WARNING, logger="distqueue")
    witness = Peer(server.port)
    witness.send(frames.resp([b"AUTH", TOKEN.encode()]))
    assert witness.reply() == b"OK"
    sessions = 0

    def errors_logged(since: int) -> list[str]:
        return [f"{r.name} {r.levelname}: {r.getMessage()}\n{r.exc_text or ''}"
                for r in caplog.records[since:] if r.levelno >= logging.ERROR]  # fmt: skip

    @settings(
        max_examples=40, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(case=SESSION)
    def prop(case: dict[str, Any]) -> None:
        nonlocal sessions
        sessions += 1
        before = len(caplog.records)
        session = Session(server.port, case)
        try:
            session.run()
        finally:
            session.peer.close()
        witness.send(frames.resp([b"PING"]))
        started = time.monotonic()
        assert witness.reply() == b"PONG", "the witness connection got no PONG"
        assert time.monotonic() - started < 1.0, "the witness waited over 1 s for PONG"
        logged = errors_logged(before)
        assert not logged, "the server logged errors:\n" + "\n".join(logged)

    deadline = budget.Deadline(seconds)
    try:
        while sessions == 0 or deadline:
            prop()
    finally:
        witness.close()
    ok = sorted(verb for (verb, code), _ in OUTCOMES.items() if code == "ok")
    print(
        f"\ncommand fuzzing: {sessions} sessions, {OUTCOMES.total()} replies in"
        f" {deadline.elapsed:.0f} s; answered without error: {', '.join(ok)}"
    )
    codes: Counter[str] = Counter()
    for (_, code), n in OUTCOMES.items():
        codes[code] += n
    print("replies by code: " + ", ".join(f"{c} {n}" for c, n in codes.most_common()))
