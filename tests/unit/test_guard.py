from __future__ import annotations

import logging

import pytest

from distqueue.protocol.guard import AUTH_FORGET_AFTER, AuthThrottle, QuietLog


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


def test_tries_from_an_address_with_wrong_tokens_wait_their_turn() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock)
    assert throttle.wait("10.0.0.1") == 0.0  # no wrong token yet: never held up
    assert throttle.failed("10.0.0.1") == 1
    # every try now waits, right or wrong, in the order they came, across connections
    assert throttle.wait("10.0.0.1") == pytest.approx(0.1)
    assert throttle.wait("10.0.0.1") == pytest.approx(0.2)
    assert throttle.wait("10.0.0.1") == pytest.approx(0.3)
    assert throttle.wait("10.0.0.2") == 0.0  # another address is not
    clock.now += 0.3
    for count in range(2, 8):
        assert throttle.failed("10.0.0.1") == count
    # seven failures: one try per 5 s; a try that would wait over 30 s is refused
    waits = [throttle.wait("10.0.0.1") for _ in range(7)]
    assert waits[:6] == pytest.approx([5.0, 10.0, 15.0, 20.0, 25.0, 30.0])
    assert waits[6] is None
    clock.now += AUTH_FORGET_AFTER + 1
    assert throttle.wait("10.0.0.1") == 0.0  # forgotten
    assert throttle.failures == 7
    throttle.failed("10.0.0.3")
    assert throttle.wait("10.0.0.3") == pytest.approx(0.1)
    throttle.succeeded("10.0.0.3")  # someone there knows the token
    assert throttle.wait("10.0.0.3") == 0.0
