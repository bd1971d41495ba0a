"""``distqueue worker --health-file`` and the probe ``distqueue worker --check``."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from tests.procs import cli, wait_until


def check(path: Path, *extra: str) -> tuple[int, str]:
    out = cli("worker", "--check", "--health-file", str(path), *extra)
    return out.returncode, (out.stdout + out.stderr).strip()


def test_the_probe_follows_a_worker_through_outage_freeze_and_stop(
    server_proc: Any, worker_proc: Any, tmp_path: Path
) -> None:
    health = tmp_path / "worker.health"
    assert check(health)[0] == 1  # no worker yet
    assert "not running" in check(health)[1]
    server = server_proc()
    worker = worker_proc(server.address, "--health-file", str(health))
    worker.wait_connected()

    def says(code: int, text: str, *extra: str) -> bool:
        got = check(health, *extra)
        return got[0] == code and text in got[1]

    wait_until(lambda: says(0, f"{worker.id} connected, 0 running, 0 done"), 20, "healthy")

    # the server goes away: the worker waits it out, and is still alive (exit 0)
    server.stop()
    wait_until(lambda: says(0, f"{worker.id} disconnected"), 20, "disconnected but alive")

    # frozen: the file stops changing, and the probe fails
    worker.signal(signal.SIGSTOP)
    try:
        time.sleep(1.5)
        code, text = check(health, "--max-age", "1")
        assert code == 1 and "frozen" in text
    finally:
        worker.signal(signal.SIGCONT)
    wait_until(lambda: says(0, "disconnected", "--max-age", "6"), 20, "alive again")

    # stopped: the file goes with it
    assert worker.stop() == 0
    assert not health.exists()
    code, text = check(health)
    assert code == 1 and "not running" in text


def test_check_needs_the_health_file() -> None:
    out = cli("worker", "--check")
    assert out.returncode == 2
    assert "--check reads the worker's --health-file" in out.stderr
