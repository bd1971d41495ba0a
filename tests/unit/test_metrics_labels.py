"""Metric labels stay bounded however wide the priorities (0..2**32-1)."""

from __future__ import annotations

from distqueue.service.metrics import BEYOND, PRIORITY_LABELS, Metrics, priority_label


def test_priorities_beyond_ten_share_one_label() -> None:
    assert [priority_label(p) for p in (0, 5, 10, 11, 1024, 2**32 - 1, None)] == [
        "0", "5", "10", BEYOND, BEYOND, BEYOND, "unknown"]  # fmt: skip
    assert tuple(PRIORITY_LABELS) == (*(str(p) for p in range(11)), ">10")


def test_counters_and_histograms_use_the_bounded_labels() -> None:
    m = Metrics()
    for p in range(0, 5000, 7):
        m.submitted.inc(p)
        m.observe_wait(p, 0.01)
        m.observe_duration(p, 0.01)
    assert set(m.submitted.values) == {str(p) for p in range(0, 11, 7)} | {BEYOND}
    assert set(m.wait) == set(m.duration) == set(m.submitted.values)
    assert m.submitted.values[BEYOND] == len(range(14, 5000, 7))
