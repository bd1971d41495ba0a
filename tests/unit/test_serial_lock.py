"""The lock that lets a ``serial`` test run alone while the suite runs tests in
parallel (tests/conftest.py): others share it, a serial test holds it alone, and a
serial test that waits is not overtaken by tests that come after it."""

from __future__ import annotations

import threading
import uuid

import pytest

import tests.conftest
from tests.conftest import _turn


def test_a_serial_test_waits_for_the_others_and_is_not_overtaken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (flock locks belong to open files, not processes: threads stand in for workers)
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)
    # (not the wait for idle CPUs after a serial test's turn: the suite may be busy)
    monkeypatch.setattr(tests.conftest, "_settle", lambda: None)
    order: list[str] = []
    entered = {name: threading.Event() for name in "abcd"}
    release = {name: threading.Event() for name in "abcd"}

    def test(name: str, alone: bool) -> None:
        with _turn(alone):
            order.append(name)
            entered[name].set()
            release[name].wait(30)

    def start(name: str, alone: bool) -> threading.Thread:
        thread = threading.Thread(target=test, args=(name, alone), daemon=True)
        thread.start()
        return thread

    threads = [start("a", False), start("b", False)]
    assert entered["a"].wait(10) and entered["b"].wait(10)  # shared: both at once
    threads.append(start("c", True))  # serial: waits for a and b
    assert not entered["c"].wait(0.5)
    threads.append(start("d", False))  # came after c: waits for c, not beside a and b
    assert not entered["d"].wait(0.5)
    release["a"].set()
    assert not entered["c"].wait(0.3)  # b still runs
    release["b"].set()
    assert entered["c"].wait(10)
    assert not entered["d"].wait(0.3)  # c runs alone
    release["c"].set()
    assert entered["d"].wait(10)
    release["d"].set()
    for thread in threads:
        thread.join(10)
    assert sorted(order[:2]) == ["a", "b"] and order[2:] == ["c", "d"]


def test_one_at_a_time_nothing_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_TESTRUNUID", raising=False)
    with _turn(True), _turn(True):  # (it would deadlock if it locked)
        pass
