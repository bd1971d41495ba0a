"""Pure rules: retry backoff, retention, leases. They take ``now``; none reads the clock."""

from __future__ import annotations

import random
from dataclasses import dataclass

from distqueue import defaults

__all__ = ["DEFAULT_LEASE", "DEFAULT_POISON_LIMIT", "Retention", "RetryPolicy"]

#: seconds a claim holds a job unless a heartbeat renews it
DEFAULT_LEASE = defaults.LEASE
#: a job whose lease is lost without an answer more than this many times is dead (poison)
DEFAULT_POISON_LIMIT = defaults.POISON_LIMIT


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    The n-th failure (n = 1, 2, ...) waits ``min(cap, base * factor**(n-1))`` seconds,
    less a random fraction of up to ``jitter`` of it, so retries of many jobs that
    failed together spread out instead of arriving at once. With the defaults the
    waits are 1-2 s, 2-4 s, 4-8 s, ... capped at 30-60 min.
    """

    #: seconds before the first retry (before jitter)
    base: float = defaults.RETRY_BASE
    #: growth per further failure
    factor: float = defaults.RETRY_FACTOR
    #: the longest wait, in seconds (before jitter)
    cap: float = defaults.RETRY_CAP
    #: the largest fraction taken off at random (0 = no jitter, 0.5 = up to half)
    jitter: float = defaults.RETRY_JITTER

    def ceiling(self, failures: int) -> float:
        """The wait before jitter after the ``failures``-th failure."""
        exponent = max(0, failures - 1)
        # cap the exponent first so a huge failure count cannot overflow the float
        if exponent > 64:
            return self.cap
        return float(min(self.cap, self.base * self.factor**exponent))

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th failure, jitter applied."""
        ceiling = self.ceiling(failures)
        return ceiling * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True, kw_only=True, slots=True)
class Retention:
    """How long finished jobs are kept before ``purge`` deletes them."""

    #: seconds a succeeded job is kept (default 1 day)
    succeeded: float = defaults.RETAIN_SUCCEEDED
    #: seconds a dead or cancelled job is kept (default 7 days)
    failed: float = defaults.RETAIN_FAILED
