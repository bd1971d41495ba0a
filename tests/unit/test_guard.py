from __future__ import annotations

import logging

import pytest

from distqueue.server.guard import AUTH_FORGET_AFTER, AuthThrottle, QuietLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_quiet_log_lets_a_burst_through_then_counts(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    quiet = QuietLog(logging.getLogger("distqueue.test"), burst=3, period=10.0, clock=clock)
    caplog.set_level(logging.INFO, "distqueue.test")
    sent = [quiet.info("refused %d", i) for i in range(10)]
    assert sent == [True] * 3 + [False] * 7
    assert [r.getMessage() for r in caplog.records] == ["refused 0", "refused 1", "refused 2"]
    clock.now += 9.9
    assert not quiet.info("still held")
    clock.now += 0.2  # a new period: the count of what was held back goes with the next line
    assert quiet.info("refused again")
    assert caplog.records[-1].getMessage() == "refused again (8 similar lines held back)"
    assert quiet.info("and one more")
    assert caplog.records[-1].getMessage() == "and one more"


def test_wrong_tokens_wait_ever_longer_per_address_and_are_forgotten() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock)
    delays = [throttle.failed("10.0.0.1")[1] for _ in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert throttle.failed("10.0.0.2") == (1, 0.1)  # another address starts afresh
    clock.now += AUTH_FORGET_AFTER + 1
    assert throttle.failed("10.0.0.1") == (1, 0.1)
    assert throttle.failures == 10
