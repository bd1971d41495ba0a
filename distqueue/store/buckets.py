"""The token bucket of a rate limit (Limit.rate), as the embedded and PostgreSQL
stores keep it in memory between a claim's reads and writes (Redis keeps its own in
Lua)."""

from __future__ import annotations

__all__ = ["TOKEN_EPS", "Bucket"]

#: a bucket this close below a whole token counts as holding it (float refills)
TOKEN_EPS = 1e-9


class Bucket:
    """A rate limit's token bucket (Limit.rate): ``tokens`` as of ``at`` (None: never
    used, full)."""

    __slots__ = ("at", "burst", "per_second", "tokens")

    def __init__(self, rate: int | None, period: float, burst: int, tokens: float | None,
                 at: float | None) -> None:  # fmt: skip
        self.per_second = 0.0 if rate is None else rate / period
        self.burst = burst
        self.tokens = float(burst) if tokens is None or at is None else tokens
        self.at = at

    def refill(self, now: float) -> float:
        """The tokens at ``now`` (a ``now`` before the last one adds none)."""
        if self.at is None:
            self.at = now
        elif now > self.at:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.per_second)
            self.at = now
        return self.tokens

    def ready_at(self) -> float:
        """When the bucket holds a whole token again (its last refill's view)."""
        assert self.at is not None
        return self.at + max(0.0, 1.0 - self.tokens) / self.per_second
