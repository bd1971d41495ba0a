from __future__ import annotations

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distqueue.errors import InvalidJob, ProtocolError, TooLarge
from distqueue.protocol.resp import RequestParser, Simple, encode_command, encode_reply

args_st = st.lists(st.binary(max_size=300), min_size=1, max_size=8)


@given(st.lists(args_st, min_size=1, max_size=10), st.integers(1, 50))
def test_resp_commands_round_trip_in_any_chunking(commands: list[list[bytes]], chunk: int) -> None:
    data = b"".join(encode_command(*c) for c in commands)
    parser = RequestParser(1 << 20)
    got: list[list[bytes]] = []
    for i in range(0, len(data), chunk):
        got += parser.feed(data[i : i + chunk])
    assert got == commands
    assert not parser.pending


@given(st.lists(st.lists(st.from_regex(r"[A-Za-z0-9_]{1,10}", fullmatch=True), min_size=1,
                         max_size=5), min_size=1, max_size=5))  # fmt: skip
def test_inline_commands(commands: list[list[str]]) -> None:
    data = b"".join(" ".join(c).encode() + b"\r\n" for c in commands)
    assert RequestParser(1 << 20).feed(data) == [[w.encode() for w in c] for c in commands]


def test_inline_quotes_and_json() -> None:
    parser = RequestParser(1 << 20)
    line = b"""SUBMIT '{"type": "echo"}' "hello world"\n\r\n"""
    assert parser.feed(line) == [[b"SUBMIT", b'{"type": "echo"}', b"hello world"]]


@pytest.mark.parametrize(
    "bad", [b"*1\r\n:x\r\n", b"*1\r\n$abc\r\n", b"*2\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n",
            b"*0\r\n", b"*1\r\n-ERR x\r\n", b"SUBMIT 'unbalanced\r\n"],
)  # fmt: skip
def test_malformed_frames_raise(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        RequestParser(1 << 20).feed(bad)


def test_too_large_is_refused_before_it_all_arrives() -> None:
    parser = RequestParser(1000)
    parser.feed(b"*2\r\n$6\r\nSUBMIT\r\n$5000\r\n")
    with pytest.raises(TooLarge):
        for _ in range(10):
            parser.feed(b"x" * 200)


def test_replies_parse_back_with_hiredis() -> None:
    reader = hiredis.Reader()
    value = [1, b"bytes", "text", None, [Simple("OK"), InvalidJob("bad spec")], True]
    reader.feed(encode_reply(value))
    got = reader.gets()
    assert got[:4] == [1, b"bytes", b"text", None]
    assert got[4][0] == b"OK"
    assert isinstance(got[4][1], hiredis.ReplyError) and str(got[4][1]) == "INVALID bad spec"
    assert got[5] == 1
