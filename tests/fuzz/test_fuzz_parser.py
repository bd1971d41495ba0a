"""Structure-aware fuzzing of the request parser (``RequestParser.feed``).

Valid request streams (inline lines with quotes, then RESP arrays of bulk strings)
are generated, then cut into random chunks or mutated (see frames.py). Properties:

- feed raises nothing but ProtocolError (TooLarge is one), and returns only
  non-empty lists of bytes;
- a valid stream gives the same commands however it is chunked, the commands the
  model says, and leaves nothing pending;
- any stream is refused or not whatever its chunks, with the same whole requests
  before the refused frame (they come first; the error with the next feed);
- a declared size past a limit is refused when its header line is complete, without
  waiting for (or allocating) what it declares; a request exactly at the limit
  passes, one byte more is refused;
- every example is quick (``quick``: slow three times running is a finding): a
  huge declared length that got allocated (or freed) would take seconds.

Each test runs hypothesis again and again until its time budget (budget.py) is
spent: CI about 20 s in all, DISTQUEUE_SOAK=1 about three minutes.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings, target
from hypothesis import strategies as st

from distqueue.errors import DistQueueError, ProtocolError, TooLarge
from distqueue.protocol.resp import RequestParser
from tests.fuzz import budget, frames

LIMIT = 1 << 20

SETTINGS = settings(
    max_examples=60,  # a run; run_for runs them until the budget is spent
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_for(share: float, prop: Callable[[], None]) -> int:
    """Run the hypothesis test ``prop`` again and again (each run draws new examples)
    for ``share`` of the parser budget; at least once. Fails at once if an example
    was slow (see ``quick``)."""
    deadline = budget.Deadline(budget.seconds("parser") * share)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runs = 0
    SLOW.clear()
    while runs == 0 or deadline:
        prop()
        runs += 1
        if SLOW:
            elapsed, what, data = min(SLOW, key=lambda s: len(s[2]))
            pytest.fail(
                f"{len(SLOW)} slow examples; the shortest: {what} took {elapsed:.2f} s"
                f" (bound {SLOW_BOUND} s) on {len(data)} bytes: {data[:400]!r}"
            )
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown < 200, f"the parser fuzzing grew this process's peak RSS by {grown:.0f} MB"
    return runs


#: an example slower than this, three times running, is a finding. Recorded rather
#: than raised: hypothesis would shrink it, running many more slow examples
#: (minutes); the failure shows the shortest input instead. Three times: a shared
#: machine may stall one run (tests/conftest.py sets no hypothesis deadline for that
#: reason; a huge size allocated or freed is slow every time).
SLOW_BOUND = 0.25
SLOW: list[tuple[float, str, bytes]] = []


def quick(what: str, data: bytes, run: Callable[[], Any]) -> Any:
    """``run()``, timed: a slow one is run again, and recorded in SLOW if it is slow
    every time. Steers hypothesis towards slow inputs."""
    started = time.monotonic()
    result = run()
    elapsed = time.monotonic() - started
    target(elapsed, label=what)
    if elapsed > SLOW_BOUND:
        for _ in range(2):
            started = time.monotonic()
            run()
            elapsed = min(elapsed, time.monotonic() - started)
        if elapsed > SLOW_BOUND:
            SLOW.append((elapsed, what, data))
    return result


# -- strategies: valid streams and their model ----------------------------------------

PLAIN = (
    st.binary(min_size=1, max_size=12)
    .map(lambda b: bytes(c for c in b if (0x20 < c < 0x7F and c not in b"\"'\\") or c > 0x7F))
    .filter(bool)
)
SINGLE = st.binary(max_size=16).map(lambda b: b.replace(b"'", b"").translate(None, b"\r\n"))
DOUBLE = st.binary(max_size=16).map(lambda b: b.translate(None, b"\r\n"))


@st.composite
def inline_word(draw: Any) -> tuple[bytes, bytes]:
    """(how it is typed, the word it stands for): plain, 'single', "double" quoted
    parts, glued together as the shell does."""
    typed, word = b"", b""
    for _ in range(draw(st.integers(1, 3))):
        style = draw(st.sampled_from(["plain", "single", "double"]))
        if style == "plain":
            text = draw(PLAIN)
            typed += text
        elif style == "single":
            text = draw(SINGLE)
            typed += b"'" + text + b"'"
        else:
            text = draw(DOUBLE)
            typed += b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        word += text
    return typed, word


@st.composite
def inline_line(draw: Any) -> tuple[bytes, list[bytes] | None]:
    """One inline line and the command it stands for (None: an empty line)."""
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b"", b" ", b"\t", b"  \t "])) + end, None
    words = draw(st.lists(inline_word(), min_size=1, max_size=6))
    seps = [draw(st.sampled_from([b" ", b"  ", b"\t", b" \t"])) for _ in words]
    line = b"".join(sep + typed for sep, (typed, _) in zip(seps, words, strict=True))[
        len(seps[0]) :
    ]
    if draw(st.booleans()):
        line = draw(st.sampled_from([b" ", b"\t"])) + line + draw(st.sampled_from([b"", b" "]))
    if line.startswith(b"*"):  # a first byte '*' starts RESP
        line = b" " + line
    return line + end, [w for _, w in words]


ARG = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([b"", b"\r\n", b"*1\r\n", b"$-1", b"PING", b"\x00" * 3]),
    st.binary(min_size=200, max_size=5000),
)
RESP_COMMAND = st.lists(ARG, min_size=1, max_size=8)


@st.composite
def valid_stream(draw: Any) -> tuple[bytes, list[list[bytes]]]:
    """Some inline lines, then some RESP arrays (a connection never goes back)."""
    data, expected = b"", []
    for line, command in draw(st.lists(inline_line(), max_size=5)):
        data += line
        if command is not None:
            expected.append(command)
    for command in draw(st.lists(RESP_COMMAND, max_size=6)):
        data += frames.resp(command)
        expected.append(command)
    return data, expected


MUTATION = st.tuples(
    st.sampled_from(frames.KINDS),
    st.integers(0, 1 << 16),
    st.integers(0, 255),
    st.integers(0, 1 << 10),
)


def cuts_of(data: bytes) -> st.SearchStrategy[list[int]]:
    if len(data) < 2:
        return st.just([])
    if len(data) > 4096:  # one byte at a time would be slow to run, not to parse
        return st.lists(st.integers(1, len(data) - 1), max_size=24)
    return st.one_of(
        st.lists(st.integers(1, len(data) - 1), max_size=24),
        st.just(list(range(1, len(data)))),  # one byte at a time
    )


def feed_all(parser: RequestParser, pieces: list[bytes]) -> tuple[list[list[bytes]], Any]:
    """Feed the pieces in order, then ``b""`` (a bad frame's error comes with the call
    after the one that returns the whole requests before it): (the commands, the
    error that stopped it or None). Anything raised but a ProtocolError fails."""
    out: list[list[bytes]] = []
    for piece in [*pieces, b""]:
        try:
            got = parser.feed(piece)
        except ProtocolError as exc:
            assert isinstance(exc, DistQueueError)
            return out, exc.with_traceback(None)  # which holds the parser
        check_commands(got)
        out += got
    return out, None


def check_commands(got: Any) -> None:
    assert isinstance(got, list)
    for command in got:
        assert isinstance(command, list) and command, f"not a command: {command!r}"
        assert all(isinstance(arg, bytes) for arg in command), f"not bytes: {command!r}"


# -- properties ------------------------------------------------------------------------


@pytest.mark.fuzz
def test_valid_streams_parse_the_same_however_chunked() -> None:
    @SETTINGS
    @given(st.data())
    def prop(data: Any) -> None:
        stream, expected = data.draw(valid_stream())
        assume(len(stream) < LIMIT)
        whole = RequestParser(LIMIT)
        assert whole.feed(stream) == expected
        assert not whole.pending
        cuts = data.draw(cuts_of(stream))
        parser = RequestParser(LIMIT)
        got, error = feed_all(parser, frames.chunks(stream, cuts))
        assert error is None, f"a valid stream was refused: {error!r}"
        assert got == expected
        assert not parser.pending

    run_for(0.25, prop)


@pytest.mark.fuzz
def test_mutated_streams_raise_only_protocol_errors() -> None:
    @SETTINGS
    @given(st.data())
    def prop(data: Any) -> None:
        stream, _ = data.draw(valid_stream())
        mutations = data.draw(st.lists(MUTATION, min_size=1, max_size=4))
        bad = frames.mutate(stream, mutations)
        limit = data.draw(st.sampled_from([LIMIT, 4096, 64]))
        pieces = frames.chunks(bad, data.draw(cuts_of(bad)))
        # the parsers are freed inside: freeing must be quick too
        whole, error_whole = quick(
            "feeding it whole", bad, lambda: feed_all(RequestParser(limit), [bad])
        )
        got, error = quick(
            "feeding it in chunks", bad, lambda: feed_all(RequestParser(limit), pieces)
        )
        # a stream is refused or not whatever its chunks, and the whole requests
        # before the refused frame are the same (nothing is asserted after an error)
        assert (error is None) == (error_whole is None), (
            f"refused {'chunked' if error else 'whole'} only: {error or error_whole!r}"
        )
        assert got == whole
        total = sum(len(arg) for command in got for arg in command)
        assert total <= len(bad)

    run_for(0.45, prop)


@pytest.mark.fuzz
def test_declared_sizes_past_the_limits_are_refused_at_the_header() -> None:
    @SETTINGS
    @given(
        prefix=st.lists(RESP_COMMAND, max_size=2),
        limit=st.integers(64, LIMIT),
        kind=st.sampled_from(["array", "bulk", "second bulk"]),
        excess=st.one_of(st.integers(1, 1000), st.integers(1, 10**25)),
        cuts=st.lists(st.integers(1, 200), max_size=6),
    )
    def prop(
        prefix: list[list[bytes]], limit: int, kind: str, excess: int, cuts: list[int]
    ) -> None:
        head = b"".join(frames.resp(c) for c in prefix)
        done, error = feed_all(RequestParser(limit), [head])
        if isinstance(error, TooLarge):  # the valid prefix itself is over a small limit
            return
        assert (done, error) == (prefix, None)
        if kind == "array":
            header = b"*%d\r\n" % (limit + excess)  # at least 6 bytes an element
        elif kind == "bulk":
            header = b"*1\r\n$%d\r\n" % (limit + excess)
        else:
            header = b"*2\r\n$4\r\nPING\r\n$%d\r\n" % (limit + excess)

        def refuse() -> None:
            fresh = RequestParser(limit)
            fresh.feed(head)
            with pytest.raises(TooLarge):
                for piece in frames.chunks(header, cuts):
                    assert fresh.feed(piece) == []

        quick("refusing it", head + header, refuse)

    run_for(0.15, prop)


@pytest.mark.fuzz
def test_the_size_limit_is_exact_to_the_byte() -> None:
    @SETTINGS
    @given(command=RESP_COMMAND)
    def prop(command: list[bytes]) -> None:
        frame = frames.resp(command)
        assert RequestParser(len(frame)).feed(frame) == [command]
        with pytest.raises(TooLarge):
            RequestParser(len(frame) - 1).feed(frame)

    run_for(0.15, prop)


# -- a few pathological inputs, each against a time bound ---------------------------


PATHOLOGICAL: dict[str, Callable[[], list[bytes]]] = {
    "a 64 KiB inline line a byte at a time": lambda: [b"x"] * (64 * 1024 - 2) + [b"\n"],
    "a 4 MiB bulk string in 1 KiB pieces": lambda: (
        [b"*2\r\n$4\r\nPING\r\n$4194304\r\n"] + [b"y" * 1024] * 4096 + [b"\r\n"]
    ),
    "100000 tiny arguments": lambda: [b"*100000\r\n" + b"$0\r\n\r\n" * 100_000],
    "10000 pipelined PINGs a byte at a time": lambda: [
        bytes([c]) for c in frames.resp([b"PING"]) * 10_000
    ],
    "an array header of 2000000000 and a trickle": lambda: (
        [b"*2000000000\r\n"] + [b"$1\r\na\r\n"] * 1000
    ),
    "a bulk header of 4294967295 and a trickle": lambda: (
        [b"*1\r\n$4294967295\r\n"] + [b"z" * 1000] * 1000
    ),
}


@pytest.mark.fuzz
@pytest.mark.serial  # asserts on elapsed time: alone (tests/conftest.py)
@pytest.mark.parametrize("what", list(PATHOLOGICAL))
def test_pathological_chunkings_are_quick(what: str) -> None:
    pieces = PATHOLOGICAL[what]()
    parser = RequestParser(64 * 1024 * 1024)
    started = time.monotonic()
    for piece in pieces:
        try:
            parser.feed(piece)
        except ProtocolError:
            break
    del parser
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"{what}: {elapsed:.1f} s"
