"""The server's console and its clean stops, as a person at a terminal sees them."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from distqueue.client import Client
from tests.procs import CLI, LISTENING, ServerProc


def test_console_stats_then_quit(tmp_path: Path) -> None:
    # Given a server reading its console from a pipe
    proc = subprocess.Popen(
        [*CLI, "server", "--port", "0", "--data", str(tmp_path / "d"), "--console"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        m = LISTENING.search(line)
        if m:
            break
    else:
        raise AssertionError("".join(lines))
    with Client(f"{m.group(1)}:{m.group(2)}") as client:
        client.submit("echo", "hi")
    # When a person types stats, then quit
    out, _ = proc.communicate("stats\nquit\n", timeout=30)
    # Then a snapshot is printed and the server stops cleanly
    assert proc.returncode == 0, out
    assert "jobs processed: 0" in out
    assert "queued=1" in out
    assert "queue depth by priority: p5=1" in out
    assert "stopping: quit on the console" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly_and_keep_jobs(tmp_path: Path, sig: signal.Signals) -> None:
    data = tmp_path / "d"
    server = ServerProc(data)
    with Client(server.address) as client:
        job_id = client.submit("echo", "kept")
    server.signal(sig)
    assert server.wait(20) == 0
    assert f"stopping: signal {sig.name}" in server.output
    # the job is still there after a restart on the same data
    again = ServerProc(data)
    try:
        with Client(again.address) as client:
            assert client.status(job_id).args == ["kept"]
    finally:
        again.stop()
