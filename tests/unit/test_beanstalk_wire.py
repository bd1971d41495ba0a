"""The beanstalkd wire format: requests parsed as beanstalkd 1.12 parses them
(tests/protocol/beanstalk/NOTES.md), replies written as it writes them."""

from __future__ import annotations

import pytest

from distqueue.beanstalk.wire import (
    MAX_JOB_SIZE,
    Command,
    Parser,
    WireError,
    is_tube,
    job_reply,
    yaml_list,
    yaml_map,
)


def parse_all(data: bytes, chunk: int | None = None) -> list[Command | str]:
    parser = Parser()
    out: list[Command | str] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        parser.feed(piece)
        while (item := parser.next()) is not None:
            out.append(item.word if isinstance(item, WireError) else item)
    return out


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_commands_and_bodies_in_any_pieces(chunk: int | None) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\r\n"
    data = (b"use testtube\r\nput 0 0 60 %d\r\n" % len(png) + png + b"\r\n"
            b"reserve-with-timeout 1\r\nrelease 7 1 1\r\nstats\r\n"
            b"put 4294967295 0 1 0\r\n\r\n")  # fmt: skip
    assert parse_all(data, chunk) == [
        Command("use", ("testtube",)), Command("put", (0, 0, 60, len(png)), png),
        Command("reserve-with-timeout", (1,)), Command("release", (7, 1, 1)),
        Command("stats"), Command("put", (2**32 - 1, 0, 1, 0), b""),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "word"),
    [(b"stats ", "BAD_FORMAT"), (b"put 1 2 3", "BAD_FORMAT"), (b"put -1 0 1 1", "BAD_FORMAT"),
     (b"put 4294967296 0 1 1", "BAD_FORMAT"), (b"put 1  0 1 1", "BAD_FORMAT"),
     (b"use -bad", "BAD_FORMAT"), (b"use a:b", "BAD_FORMAT"), (b"use " + b"a" * 201, "BAD_FORMAT"),
     (b"use", "UNKNOWN_COMMAND"), (b"frobnicate", "UNKNOWN_COMMAND"), (b"", "UNKNOWN_COMMAND"),
     (b"delete x", "BAD_FORMAT"), (b"delete 1 2", "BAD_FORMAT"), (b"STATS", "UNKNOWN_COMMAND")],
)  # fmt: skip
def test_refused_lines(line: bytes, word: str) -> None:
    assert parse_all(line + b"\r\nstats\r\n") == [word, Command("stats")]


def test_a_bad_put_line_does_not_swallow_its_body() -> None:
    # as beanstalkd: the body is then read as a command line
    assert parse_all(b"put 1 0 1\r\nhello\r\nstats\r\n") == [
        "BAD_FORMAT", "UNKNOWN_COMMAND", Command("stats")]  # fmt: skip


def test_too_big_bodies_are_read_and_dropped() -> None:
    big = b"x" * (MAX_JOB_SIZE + 1)
    exact = b"y" * MAX_JOB_SIZE
    data = (b"put 0 0 1 %d\r\n" % len(big) + big + b"\r\n"
            + b"put 0 0 1 %d\r\n" % len(exact) + exact + b"\r\nstats\r\n")  # fmt: skip
    put = Command("put", (0, 0, 1, MAX_JOB_SIZE), exact)
    assert parse_all(data, 4096) == ["JOB_TOO_BIG", put, Command("stats")]


def test_a_body_without_crlf() -> None:
    assert parse_all(b"put 0 0 1 3\r\nabcXYstats\r\n") == ["EXPECTED_CRLF", Command("stats")]


def test_a_line_too_long_is_refused_once_and_skipped() -> None:
    assert parse_all(b"use " + b"a" * 400 + b"\r\nstats\r\n", 50) == [
        "BAD_FORMAT",
        Command("stats"),
    ]
    assert parse_all(b"list-tubes\n\r\n") == ["UNKNOWN_COMMAND"]  # a bare \n ends nothing


def test_tube_names() -> None:
    for good in (b"default", b"a", b"x" * 200, b"A-Za-z0-9+/;.$_()", b"(x)", b"$", b"a-"):
        assert is_tube(good)
    for bad in (b"", b"-a", b"x" * 201, b"a b", b"a:b", b"\xc3\xa9", b"a,b"):
        assert not is_tube(bad)


def test_replies() -> None:
    assert job_reply("RESERVED", 12, b"a\r\nb") == b"RESERVED 12 4\r\na\r\nb\r\n"
    body = yaml_map([("id", 11), ("tube", "testtube"), ("version", "1.12"), ("draining", False),
                     ("rusage-utime", 0.0046), ("hostname", "h")])  # fmt: skip
    text = (
        b'---\nid: 11\ntube: testtube\nversion: "1.12"\ndraining: false\n'
        b"rusage-utime: 0.004600\nhostname: h\n"
    )
    assert body == b"OK %d\r\n%s\r\n" % (len(text), text)
    assert yaml_list(["default", "testtube"]) == b"OK 25\r\n---\n- default\n- testtube\n\r\n"
