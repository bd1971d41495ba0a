"""``distqueue bench`` runs from a fresh install with one command (a tiny run)."""

from __future__ import annotations

import json

from tests.procs import cli


def test_bench_small_run_prints_every_figure() -> None:
    out = cli("bench", "-n", "300", "--single", "50", "--repeat", "1", "--latency-samples",
              "20", "--inflight", "16", "--json", timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)["figures"]
    names = ("enqueue, one call at a time", "enqueue, one job per call, 16 in flight",
             "enqueue, bulk", "drain", "end-to-end")  # fmt: skip
    for name in names:
        assert figures[name]["jobs_per_s"] > 0
        assert figures[name]["runs"] == 1
    latency = figures["round-trip latency"]
    assert latency["samples"] == 20
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]


def test_bench_refuses_bad_options() -> None:
    for args, words in ((("--inflight", "0"), "--inflight"), (("--figures", "nope"), "nope")):
        out = cli("bench", *args, timeout=60)
        assert out.returncode != 0
        assert words in out.stderr
        assert "Traceback" not in out.stderr
