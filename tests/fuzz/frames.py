"""Request frames for the fuzzers: valid ones (RESP arrays, inline lines with
quotes), and mutations of them (truncations, flipped bytes, huge declared sizes,
nesting, broken CRLFs, ...).

A mutation is a plain tuple ``(kind, position, value, token)`` so both hypothesis
(which shrinks it) and the live fuzzer's ``random.Random`` can make them; ``mutate``
applies a list of them to some bytes, deterministically.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

CRLF = b"\r\n"

#: declared sizes that must never be allocated, and numbers that are not numbers
NUMBERS: list[bytes] = [
    b"2000000000", b"99999999999", b"4294967295", b"4294967296", b"2147483647",
    b"2147483648", b"9223372036854775807", b"9223372036854775808",
    b"18446744073709551615", b"18446744073709551616", b"9" * 31, b"9" * 40,
    b"1" + b"0" * 30, b"-1", b"-2", b"-5", b"-2000000000", b"0", b"00", b"01",
    b"1048577", b"67108864", b"67174400", b"", b" 3", b"3 ", b"+3", b"0x10", b"1e3",
    b"3.0", b"abc", b"\xd9\xa1", b"\xef\xbc\x91", b"1_000", b"\x00", b"3\r", b"\t3",
]  # fmt: skip

#: byte strings worth inserting anywhere
TOKENS: list[bytes] = [
    b"*2000000000\r\n", b"$99999999999\r\n", b"$4294967295\r\n", b"*1\r\n$4294967295\r\n",
    b"*-1\r\n", b"$-1\r\n", b"*0\r\n", b"$-5\r\n", b"*1\r\n*1\r\n", b"*2\r\n*1\r\n$1\r\na\r\n",
    b"$abc\r\n", b"*abc\r\n", b":1\r\n", b"+OK\r\n", b"-ERR x\r\n", b"%1\r\n", b"~1\r\n",
    b"_\r\n", b"#t\r\n", b",1.5\r\n", b"(12345\r\n", b"=5\r\ntxt:a\r\n", b">1\r\n",
    b"|1\r\n", b"!3\r\nerr\r\n", b"\r\n", b"\n", b"\r", b"*", b"$", b"\"", b"'", b"\\",
    b"\x00", b"\xff\xfe", b"*" + b"9" * 40 + b"\r\n", b"$" + b"0" * 30 + b"3\r\n",
    b"*9223372036854775808\r\n", b"$18446744073709551616\r\n", b"*1\r", b"$ 3\r\n",
    b"$+3\r\n", b"*\xd9\xa1\r\n", b"PING\r\n", b"PING\n", b"AUTH secret\r\n",
    b"*1\r\n$4\r\nPING\r\n", b"*3\r\n$3\r\nSET\r\n", b"\"unbalanced", b"'unbalanced",
    b"a\\", b"x" * 200, b"*" * 50, b"$" * 50, b"\r\n" * 20, b"*1048577\r\n",
    b"*1048576\r\n", b"$67108864\r\n", b"$67108865\r\n",
]  # fmt: skip

KINDS = ("truncate", "flip", "insert", "delete", "dup", "crlf", "nest", "number", "swap")

Mutation = tuple[str, int, int, int]

_HEADER = re.compile(rb"[*$][^\r\n]*\r\n")


def resp(args: Sequence[bytes]) -> bytes:
    """A request as a RESP array of bulk strings (written here, not with the code
    under test)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts += [b"$%d\r\n" % len(arg), arg, CRLF]
    return b"".join(parts)


def mutate(data: bytes, mutations: Sequence[Mutation]) -> bytes:
    """Apply ``mutations`` in order; positions wrap around the current length."""
    buf = bytearray(data)
    for kind, pos, value, token in mutations:
        n = len(buf)
        at = pos % (n + 1)
        if kind == "truncate":
            del buf[at:]
        elif kind == "flip" and n:
            buf[at % n] ^= value or 1
        elif kind == "insert":
            buf[at:at] = TOKENS[token % len(TOKENS)]
        elif kind == "delete":
            del buf[at : at + value % 16 + 1]
        elif kind == "dup":
            buf[at:at] = buf[at : at + value + 1]
        elif kind == "crlf":
            # break the n-th CRLF: drop the CR, the LF, both, or double it
            ends = [m.start() for m in re.finditer(rb"\r\n", buf)]
            if ends:
                i = ends[pos % len(ends)]
                buf[i : i + 2] = (b"\n", b"\r", b"", b"\r\r\n", b"\n\r")[value % 5]
        elif kind == "nest":
            # wrap what follows the position in an array header: nesting
            buf[at:at] = b"*%d\r\n" % (value % 3 + 1)
        elif kind == "number":
            # replace the number of the n-th header (*N or $L) with a bad one
            headers = list(_HEADER.finditer(buf))
            if headers:
                m = headers[pos % len(headers)]
                buf[m.start() + 1 : m.end() - 2] = NUMBERS[token % len(NUMBERS)]
        elif kind == "swap" and n > 1:
            j = (at + value + 1) % n
            i = at % n
            buf[i], buf[j] = buf[j], buf[i]
    return bytes(buf)


def random_mutations(rnd: random.Random, most: int = 3) -> list[Mutation]:
    return [
        (rnd.choice(KINDS), rnd.randrange(1 << 16), rnd.randrange(256), rnd.randrange(1 << 10))
        for _ in range(rnd.randint(1, most))
    ]


def chunks(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given positions (any order, duplicates and out of range
    positions allowed)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    out, last = [], 0
    for p in [*points, len(data)]:
        out.append(data[last:p])
        last = p
    return out


# -- commands for a live server -------------------------------------------------------

VERBS = [
    b"PING", b"AUTH", b"HELLO", b"QUIT", b"SUBMIT", b"STATUS", b"RESULT", b"WAIT",
    b"CANCEL", b"RETRY", b"PURGE", b"LIST", b"STATS", b"FETCH", b"ACK", b"FAIL",
    b"PROGRESS", b"BEAT", b"BYE",
]  # fmt: skip

WORDS = [
    b"1", b"2", b"3", b"0", b"-1", b"abc", b"1.5", b"0.01", b"1000", b"1001",
    b"99999999999999999999999", b"9223372036854775808", b"", b"echo", b"wordcount",
    b"sleep", b"nosuchtype", b"json", b"bytes", b"worker", b"client", b"STATE", b"QUEUE",
    b"TYPE", b"LIMIT", b"BEFORE", b"TOKEN", b"ROLE", b"ID", b"TYPES", b"QUEUES",
    b"CONCURRENCY", b"HOLDING", b"queued", b"dead", b"*", b"default", b"secret", b"wrong",
    b"null", b"{}", b"[]", b'{"type": "echo", "args": "x"}',
    b'[{"type": "echo"}, {"type": "noop", "payload": true}]',
    b'{"type": "echo", "payload": true}', b'{"type": "echo", "delay": 1e308}',
    b'{"type": "echo", "priority": 4294967296}', b'{"type": "echo", "unique_key": "k"}',
    b'{"type": "sleep", "run_at": -1}', b'{"kind": "E", "retryable": false}',
    b'{"kind": 1}', b'"str"', b"\xff\xfe\x00", b"NaN", b"inf", b"1e309",
]  # fmt: skip


def random_command(rnd: random.Random) -> list[bytes]:
    """A command for a live server: mostly known verbs with plausible or junk
    arguments, some unknown verbs; blocking ones (FETCH, WAIT) with short timeouts."""
    roll = rnd.random()
    if roll < 0.05:
        verb = rnd.randbytes(rnd.randint(1, 12))
    elif roll < 0.1:
        verb = b"FROB"
    else:
        verb = rnd.choice(VERBS)
        if rnd.random() < 0.2:
            verb = verb.lower()
    args = [verb]
    for _ in range(rnd.choice((0, 1, 1, 2, 2, 3, 4, 6))):
        r = rnd.random()
        if r < 0.8:
            args.append(rnd.choice(WORDS))
        elif r < 0.95:
            args.append(rnd.randbytes(rnd.randint(0, 64)))
        else:
            args.append(rnd.randbytes(rnd.randint(1000, 20000)))
    return bound_blocking(args)


def bound_blocking(args: list[bytes]) -> list[bytes]:
    """FETCH and WAIT block (WAIT without a timeout forever): give them a short
    timeout, so every request is answered in a bounded time. Wrong arities stay."""
    verb = args[0].upper()
    if verb == b"FETCH":
        if len(args) == 1:
            args = [*args, b"1"]
        if len(args) == 2:
            args = [*args, b"0"]
        elif len(args) == 3 and not _short(args[2]):
            args = [*args[:2], b"0.05"]
    elif verb == b"WAIT":
        if len(args) == 2:
            args = [*args, b"0.05"]
        elif len(args) == 3 and not _short(args[2]):
            args = [*args[:2], b"0.05"]
    return args


def _short(arg: bytes) -> bool:
    """True unless ``arg`` reads as a timeout of more than 0.2 s (junk is refused
    with ARGS before anything blocks)."""
    try:
        return not float(arg) > 0.2
    except ValueError:
        return True
