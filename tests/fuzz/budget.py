"""How long the fuzzers run: a CI run of about two minutes for all of tests/fuzz,
``DISTQUEUE_SOAK=1`` for a long one (about ten minutes in-process, ten live).

``DISTQUEUE_FUZZ_SCALE`` (a number, default 1) multiplies every budget: 0.2 for a
quick look while editing a fuzzer, 3 for a longer run without the full soak.
"""

from __future__ import annotations

import os
import time

import pytest

SOAK = os.environ.get("DISTQUEUE_SOAK") == "1"
SCALE = float(os.environ.get("DISTQUEUE_FUZZ_SCALE") or "1")

#: seconds per fuzzer: (CI, soak). The in-process ones add up to ~65 s in CI with
#: their fixed parts (~10 min soaking); the live server fuzzer to ~62 s with its
#: start and settle (~10 min soaking): a minute of each, as issue #10 asks.
BUDGETS: dict[str, tuple[float, float]] = {
    "parser": (20.0, 180.0),
    "atheris": (10.0, 120.0),
    "commands": (30.0, 300.0),
    "live": (54.0, 600.0),
}


def seconds(name: str) -> float:
    ci, soak = BUDGETS[name]
    return (soak if SOAK else ci) * SCALE


def marks(name: str) -> list[pytest.MarkDecorator]:
    """The marks of a fuzzer's test: ``fuzz`` always; ``slow`` and a long enough
    timeout when soaking (pytest's 300 s default covers the CI run)."""
    out = [pytest.mark.fuzz]
    if SOAK:
        out += [pytest.mark.slow, pytest.mark.timeout(int(seconds(name) * 1.5 + 300))]
    return out


class Deadline:
    """A time budget: ``bool(deadline)`` stays true until it runs out."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.start = time.monotonic()
        self.end = self.start + budget

    def __bool__(self) -> bool:
        return time.monotonic() < self.end

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start
