"""SteadyClock: a stepped wall clock is followed slowly, never by a jump (the mock
clocks here stand in for the clock only, as the project's rules allow)."""

from __future__ import annotations

import pytest

from distqueue.clock import MAX_SLEW, SteadyClock


class Fake:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_follows_a_steady_wall_clock_exactly() -> None:
    wall, mono = Fake(1_000_000.0), Fake(50.0)
    clock = SteadyClock(wall, mono)
    for _ in range(10):
        wall.t += 1.5
        mono.t += 1.5
        assert clock() == pytest.approx(wall.t)


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_stepped_wall_clock_is_slewed_towards_not_jumped_to(step: float) -> None:
    wall, mono = Fake(1_000_000.0), Fake(50.0)
    clock = SteadyClock(wall, mono)
    start = clock()
    wall.t += step  # an operator sets the clock an hour ahead (or back)
    readings = []
    for _ in range(30):  # 30 s later
        wall.t += 1.0
        mono.t += 1.0
        readings.append(clock())
    # a 30 s lease sees 30 s, give or take the slew: never the hour
    direction = 1 if step > 0 else -1
    assert readings[-1] - start == pytest.approx(30.0 + direction * MAX_SLEW * 30.0)
    assert readings == sorted(readings)  # never backwards, even when the wall goes back


def test_catches_up_with_the_step_in_the_end() -> None:
    wall, mono = Fake(1_000_000.0), Fake(0.0)
    clock = SteadyClock(wall, mono)
    wall.t += 60.0
    for _ in range(2000):  # 60 s / 5 % = 1200 s to absorb
        wall.t += 1.0
        mono.t += 1.0
        now = clock()
    assert now == pytest.approx(wall.t)
