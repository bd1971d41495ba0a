"""A libFuzzer harness (atheris) over ``RequestParser.feed``: coverage-guided bytes,
cut into chunks the input itself chooses, under a limit it chooses.

    python tests/fuzz/atheris_resp.py [libFuzzer options] [corpus dirs]

Each input must: raise nothing but ProtocolError (TooLarge is one); give the same
commands, and the same refusal or none, fed whole as fed in chunks; return only
non-empty lists of bytes. A slow input (-timeout) or a large allocation
(-rss_limit_mb, -malloc_limit_mb) is a crash too. test_fuzz_atheris.py runs it.
"""

from __future__ import annotations

import sys
from typing import Any

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from distqueue.errors import ProtocolError
    from distqueue.protocol.resp import RequestParser


def feed_all(limit: int, pieces: list[bytes]) -> tuple[list[list[bytes]], bool]:
    """(commands, refused) for ``pieces`` fed in order, then b"" (a bad frame's
    error comes with the call after the one returning the requests before it)."""
    parser = RequestParser(limit)
    out: list[list[bytes]] = []
    for piece in [*pieces, b""]:
        try:
            got: Any = parser.feed(piece)
        except ProtocolError:
            return out, True
        assert isinstance(got, list)
        for command in got:
            assert isinstance(command, list) and command, command
            assert all(isinstance(arg, bytes) for arg in command), command
        out += got
    return out, False


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limit = fdp.PickValueInList([64, 4096, 1 << 20, 64 << 20])
    cuts = sorted({fdp.ConsumeIntInRange(1, 4096) for _ in range(fdp.ConsumeIntInRange(0, 8))})
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    pieces, last = [], 0
    for cut in [c for c in cuts if c < len(stream)] + [len(stream)]:
        pieces.append(stream[last:cut])
        last = cut
    whole = feed_all(limit, [stream])
    chunked = feed_all(limit, pieces)
    assert whole == chunked, f"fed whole: {whole!r}\nin chunks {cuts}: {chunked!r}"


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
