"""Fixtures of the fault suite: a history per test, and the processes it starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.history import History, env_for_workers
from tests.faults.nemesis import Fleet


@pytest.fixture
def history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> History:
    """This test's history; its worker processes log their executions to it."""
    log = tmp_path / "executions.log"
    for name, value in env_for_workers(log).items():
        monkeypatch.setenv(name, value)  # inherited by every process the test starts
    return History(log)


@pytest.fixture
def fleet(history: History) -> Iterator[Fleet]:
    """Servers and workers, all stopped at teardown (even stopped or partitioned)."""
    f = Fleet(history)
    try:
        yield f
    finally:
        f.close()
