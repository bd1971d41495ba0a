"""``distqueue bench`` runs from a fresh install with one command (a tiny run)."""

from __future__ import annotations

import json

from tests.procs import cli


def test_bench_small_run_prints_every_figure() -> None:
    out = cli("bench", "-n", "300", "--single", "50", "--repeat", "1", "--latency-samples",
              "20", "--json", timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)["figures"]
    for name in ("enqueue, one call at a time", "enqueue, bulk", "drain", "end-to-end"):
        assert figures[name]["jobs_per_s"] > 0
        assert figures[name]["runs"] == 1
    latency = figures["round-trip latency"]
    assert latency["samples"] == 20
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
