from __future__ import annotations

import random

from distqueue.policy import RetryPolicy


def test_backoff_doubles_within_jitter_and_caps() -> None:
    policy = RetryPolicy(base=2.0, factor=2.0, cap=60.0, jitter=0.5)
    rng = random.Random(1)
    for failures, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (10_000, 60.0)]:
        for _ in range(200):
            wait = policy.backoff(failures, rng)
            assert ceiling * 0.5 <= wait <= ceiling


def test_jitter_spreads_retries() -> None:
    rng = random.Random(7)
    waits = {round(RetryPolicy().backoff(3, rng), 6) for _ in range(50)}
    assert len(waits) > 40
