"""Replays every transcript of docs/protocol.md against a real server, in order.

Each ```transcript block runs on a new connection; blocks marked ``token=T`` run on
a second server started with ``--token T``. ``...`` in an S: line matches anything.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import hiredis
import pytest

from tests.procs import ServerProc

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BLOCK = re.compile(r"^```transcript([^\n]*)\n(.*?)^```", re.M | re.S)


def _blocks() -> list[tuple[dict[str, str], list[tuple[str, list[str]]]]]:
    out = []
    for m in BLOCK.finditer(DOC.read_text()):
        opts = dict(kv.split("=", 1) for kv in m.group(1).split())
        steps: list[tuple[str, list[str]]] = []
        for line in m.group(2).splitlines():
            if line.startswith("C: "):
                steps.append((line[3:], []))
            elif line.startswith("S: "):
                steps[-1][1].append(line[3:])
            elif line.strip():
                raise AssertionError(f"transcript line is neither C: nor S: {line!r}")
        out.append((opts, steps))
    return out


def _read_reply(sock: socket.socket) -> list[str]:
    """Read one complete RESP reply; return its raw lines."""
    reader = hiredis.Reader()
    raw = b""
    while True:
        data = sock.recv(65536)
        assert data, f"connection closed; got so far {raw!r}"
        raw += data
        reader.feed(data)
        if reader.gets() is not False:
            assert not reader.has_data(), f"more than one reply: {raw!r}"
            return raw.decode().split("\r\n")[:-1]


def _matches(expected: str, got: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, got) is not None


def test_doc_has_transcripts() -> None:
    blocks = _blocks()
    assert len(blocks) >= 3
    assert sum(len(steps) for _, steps in blocks) >= 30


def test_transcripts_replay(tmp_path: Path) -> None:
    servers: dict[str, ServerProc] = {}
    try:
        for n, (opts, steps) in enumerate(_blocks()):
            token = opts.get("token", "")
            if token not in servers:
                extra = ("--token", token) if token else ()
                servers[token] = ServerProc(tmp_path / f"data-{len(servers)}", *extra)
            server = servers[token]
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                for command, expected in steps:
                    sock.sendall(command.encode() + b"\r\n")
                    got = _read_reply(sock)
                    where = f"block {n + 1}, C: {command}"
                    assert len(got) == len(expected), f"{where}\nexpected {expected}\ngot {got}"
                    for want, line in zip(expected, got, strict=True):
                        if not _matches(want, line):
                            pytest.fail(f"{where}\nexpected S: {want}\n     got S: {line}")
    finally:
        for server in servers.values():
            server.stop()
