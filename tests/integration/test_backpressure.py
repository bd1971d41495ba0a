"""Pipelines taken in slices, and the server's commands in progress bounded: a few
clients pipelining thousands of SUBMITs (and hanging up) cannot pile up store work
without end, and every request still runs, in order, answered in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hiredis
import pytest

from distqueue.config import ServerConfig
from distqueue.protocol.resp import encode_command
from distqueue.server import connection
from distqueue.server.server import Server


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    # small limits, so a test of a few thousand requests crosses them many times
    monkeypatch.setattr(connection, "PER_TURN", 16)
    monkeypatch.setattr(connection, "INFLIGHT_HIGH", 40)
    monkeypatch.setattr(connection, "INFLIGHT_LOW", 20)
    monkeypatch.setattr("distqueue.server.server.INFLIGHT_LOW", 20)
    srv = Server(ServerConfig(port=0, data=str(tmp_path / "data")))
    await srv.start()
    peak = [0]
    dispatch = connection.Connection._dispatch

    def watched(self: connection.Connection, args: list[bytes]) -> None:
        dispatch(self, args)
        peak[0] = max(peak[0], srv.inflight)

    monkeypatch.setattr(connection.Connection, "_dispatch", watched)
    srv.peak = peak  # type: ignore[attr-defined]
    yield srv
    await srv.shutdown()


async def replies(reader: asyncio.StreamReader, n: int) -> list[Any]:
    parser = hiredis.Reader()
    out: list[Any] = []
    while len(out) < n:
        data = await asyncio.wait_for(reader.read(65536), 30)
        assert data, f"closed after {len(out)} of {n} replies"
        parser.feed(data)
        while (reply := parser.gets()) is not False:
            out.append(reply)
    return out


async def test_deep_pipelines_run_whole_in_order_under_the_inflight_bound(server: Server) -> None:
    n, clients = 2000, 3
    conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(clients)]
    for c, (_, writer) in enumerate(conns):
        writer.write(b"".join(encode_command("SUBMIT", "echo", f"c{c} j{i}") for i in range(n)))
    got = await asyncio.gather(*(replies(reader, n) for reader, _ in conns))
    ids = [[int(r) for r in g] for g in got]
    for c in range(clients):
        assert ids[c] == sorted(ids[c])  # answered in the order sent
    assert sorted(i for g in ids for i in g) == list(range(1, n * clients + 1))
    # a job's args say which request made it: each id answers its own request
    picks = [(c, i) for c in range(clients) for i in (0, n // 2, n - 1)]
    statuses = await asyncio.gather(*(server.service.status(ids[c][i]) for c, i in picks))
    assert [s.args for s in statuses] == [f"c{c} j{i}" for c, i in picks]
    peak = server.peak[0]  # type: ignore[attr-defined]
    # never more in progress than the bound, plus one slice taken before it was reached
    assert 40 <= peak <= 40 + 16, peak
    for _, writer in conns:
        writer.close()
    assert server.inflight == 0


async def test_a_client_that_hangs_up_leaves_its_commands_to_finish_and_counted(
    server: Server,
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"".join(encode_command("SUBMIT", "echo", f"j{i}") for i in range(500)))
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()  # gone with its requests read, some in progress, some not yet run
    for _ in range(200):
        if server.inflight == 0 and not server.connections:
            break
        await asyncio.sleep(0.05)
    assert server.inflight == 0 and not server.connections
    assert server.peak[0] <= 40 + 16  # type: ignore[attr-defined]
    # what was run is stored whole; nothing was left half-done
    stored = (await server.service.store.stats()).by_state["queued"]
    assert 0 < stored <= 500
    jobs = await server.service.store.list(limit=1000)
    assert sorted(j.args for j in jobs) == sorted(f"j{i}" for i in range(stored))
