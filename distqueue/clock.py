"""The only place that reads the wall clock; everything else takes ``now``."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "system_clock"]


class Clock(Protocol):
    def __call__(self) -> float:
        """Epoch seconds."""
        ...


def system_clock() -> float:
    return time.time()
