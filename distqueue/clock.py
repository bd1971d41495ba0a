"""The only place that reads the wall clock; everything else takes ``now``."""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["MAX_SLEW", "Clock", "SteadyClock", "system_clock"]

#: the fastest a SteadyClock catches up with a stepped wall clock: seconds per second
MAX_SLEW = 0.05


class Clock(Protocol):
    def __call__(self) -> float:
        """Epoch seconds."""
        ...


class SteadyClock:
    """Epoch seconds that a stepped wall clock cannot make jump.

    Leases, retry backoffs and schedules are times in the store; if ``now`` jumped
    an hour ahead (an operator or NTP stepping the clock), every lease would run
    out at once and every running job would be counted lost and run again. This
    clock advances with the monotonic clock and follows the wall clock only by
    slewing towards it, at most MAX_SLEW seconds per second (a step of one minute
    is absorbed in 20 minutes; a 30 s lease sees at most 1.5 s of it). The usual
    small corrections of a synchronised clock are followed at once.
    """

    def __init__(self, wall: Clock = time.time, mono: Clock = time.monotonic) -> None:
        self._wall = wall
        self._mono = mono
        self._lock = threading.Lock()
        self._last_mono = mono()
        self._now = wall()

    def __call__(self) -> float:
        with self._lock:
            mono = self._mono()
            elapsed = max(0.0, mono - self._last_mono)
            self._last_mono = mono
            now = self._now + elapsed
            gap = self._wall() - now
            step = MAX_SLEW * elapsed
            now += max(-step, min(step, gap))
            self._now = max(now, self._now)  # never backwards
            return self._now


#: the clock servers and direct-mode workers use
system_clock: Clock = SteadyClock()
