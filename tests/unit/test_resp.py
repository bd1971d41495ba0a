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


def test_too_large_is_refused_at_its_header_before_any_payload_arrives() -> None:
    parser = RequestParser(1000)
    with pytest.raises(TooLarge, match="an argument of 5000 bytes: the limit is 1000"):
        parser.feed(b"*2\r\n$6\r\nSUBMIT\r\n$5000\r\n")


@pytest.mark.parametrize(
    "frame, error, match",
    [
        # a huge array is refused at its header: nothing of its size is allocated
        (b"*2000000000\r\n", TooLarge, "2000000000 arguments"),
        (b"*4294967295\r\n", TooLarge, "4294967295 arguments"),
        (b"*99999999999999999999\r\n", TooLarge, "arguments"),
        (b"*1\r\n$1\r\na\r\n$4294967295\r\n", ProtocolError, "expected '\\*'"),
        (b"*2\r\n$4294967295\r\n", TooLarge, "an argument of 4294967295 bytes"),
        (b"*1\r\n*2000000000\r\n", ProtocolError, "no nesting"),
        (b"*-1\r\n", ProtocolError, "bad header"),
        (b"*1\r\n$-1\r\n", ProtocolError, "bad header"),
        (b"*1_0\r\n", ProtocolError, "bad header"),
        (b"* 1\r\n", ProtocolError, "bad header"),
        # a count with a leading zero (as Redis), whole in one read or not (a whole
        # request in one read took a faster path, which let it through: atheris)
        (b"*01\r\n", ProtocolError, "bad header"),
        (b"*01\r\n$4\r\nPING\r\n", ProtocolError, "bad header"),
        (b"*1\r\n$04\r\nPING\r\n", ProtocolError, "bad header"),
        (b"*1\r\n$3\r\nabcd\r\n", ProtocolError, "not ended by CRLF"),
        (b"*" + b"1" * 40, ProtocolError, "header line too long"),
    ],
)
def test_bad_headers_are_refused_as_they_arrive(frame: bytes, error: type, match: str) -> None:
    parser = RequestParser(1 << 26, max_arg=1 << 20)
    with pytest.raises(error, match=match):
        parser.feed(frame)
        parser.feed(b"")  # the error of a frame behind whole requests comes next


def test_whole_requests_before_a_bad_frame_are_returned_then_the_error() -> None:
    parser = RequestParser(1 << 20)
    data = encode_command("PING") + encode_command("STATUS", "1") + b"*1\r\n$-5\r\n"
    assert parser.feed(data) == [[b"PING"], [b"STATUS", b"1"]]
    with pytest.raises(ProtocolError, match="bad header"):
        parser.feed(b"")
    with pytest.raises(ProtocolError, match="bad header"):  # and from then on
        parser.feed(encode_command("PING"))


def test_the_limits_are_exact_to_the_byte() -> None:
    # an argument of exactly max_arg bytes passes, one byte more is refused
    ok = encode_command("SUBMIT", b"x" * 1000)
    assert RequestParser(2000, max_arg=1000).feed(ok) == [[b"SUBMIT", b"x" * 1000]]
    with pytest.raises(TooLarge, match="an argument of 1001 bytes"):
        RequestParser(2000, max_arg=1000).feed(encode_command("SUBMIT", b"x" * 1001))
    # a request of exactly max_request bytes passes, one byte more is refused
    frame = encode_command("SUBMIT", b"{}", b"y" * 500)
    assert RequestParser(len(frame), max_arg=1000).feed(frame)[0][2] == b"y" * 500
    with pytest.raises(TooLarge, match=f"the limit is {len(frame) - 1}"):
        RequestParser(len(frame) - 1, max_arg=1000).feed(frame[:30])  # the headers suffice


def test_many_arguments_are_refused_by_their_count_or_least_size() -> None:
    with pytest.raises(TooLarge, match="33 arguments: the limit is 32"):
        RequestParser(1 << 20, max_args=32).feed(b"*33\r\n")
    # 1000 arguments take at least 6,000 bytes: over a 4 KiB limit at the header
    with pytest.raises(TooLarge, match="at least 6007 bytes"):
        RequestParser(4096).feed(b"*1000\r\n")


def test_most_reads_one_request_and_keeps_the_rest_under_new_limits() -> None:
    parser = RequestParser(100, max_args=4, why="before authentication")
    data = encode_command("AUTH", "secret") + encode_command("SUBMIT", b"z" * 5000)
    assert parser.feed(data, 1) == [[b"AUTH", b"secret"]]
    parser.set_limits(1 << 20, why="the server's --max-payload")
    assert parser.feed(b"") == [[b"SUBMIT", b"z" * 5000]]
    assert not parser.pending
    # without the raise, the same bytes are refused at the SUBMIT's header
    parser = RequestParser(100, max_args=4, why="before authentication")
    assert parser.feed(data, 1) == [[b"AUTH", b"secret"]]
    with pytest.raises(TooLarge, match="before authentication"):
        parser.feed(b"", 1)


def test_a_long_argument_arriving_in_small_reads_is_gathered_once() -> None:
    payload = bytes(range(256)) * 4096 + b"\r\n*2\r\n"  # CRLF and a fake header inside
    frame = encode_command("SUBMIT", b"{}", payload) + encode_command("PING")
    parser = RequestParser(1 << 21)
    got: list[list[bytes]] = []
    for i in range(0, len(frame), 1000):
        got += parser.feed(frame[i : i + 1000])
        if i + 1000 < len(frame) - 30:
            assert parser.pending
    assert got == [[b"SUBMIT", b"{}", payload], [b"PING"]]
    assert not parser.pending


@given(st.lists(args_st, min_size=1, max_size=10), st.lists(st.integers(1, 400), max_size=20))
def test_any_chunking_of_requests_with_crlf_inside_reads_the_same(
    commands: list[list[bytes]], cuts: list[int]
) -> None:
    commands = [[a.replace(b"x", b"\r\n") for a in c] for c in commands]
    data = b"".join(encode_command(*c) for c in commands)
    parser = RequestParser(1 << 20)
    got: list[list[bytes]] = []
    pos = 0
    for cut in [*cuts, len(data)]:
        got += parser.feed(data[pos : pos + cut])
        pos += cut
    got += parser.feed(data[pos:])
    assert got == commands


def test_replies_parse_back_with_hiredis() -> None:
    reader = hiredis.Reader()
    value = [1, b"bytes", "text", None, [Simple("OK"), InvalidJob("bad spec")], True]
    reader.feed(encode_reply(value))
    got = reader.gets()
    assert got[:4] == [1, b"bytes", b"text", None]
    assert got[4][0] == b"OK"
    assert isinstance(got[4][1], hiredis.ReplyError) and str(got[4][1]) == "INVALID bad spec"
    assert got[5] == 1
