"""``distqueue bench`` runs from a fresh install with one command (a tiny run), measures
registered tasks, counts only jobs that succeeded (the store's counts must agree),
reports the durability the server runs with, and fails, never hangs, when its jobs
do not all succeed."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from distqueue import defaults
from distqueue.client import Client
from tests.procs import cli

RATES = ("enqueue, one call at a time", "enqueue, one job per call, 16 in flight",
         "enqueue, bulk", "drain, sync task", "end-to-end, sync task",
         "drain, async task", "end-to-end, async task")  # fmt: skip
LATENCIES = ("round-trip latency, sync task", "round-trip latency, async task")


def bench_json(*args: str, timeout: float = 300) -> tuple[int, dict[str, Any], str]:
    out = cli("bench", *args, "--json", timeout=timeout)
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout), out.stderr


def test_bench_runs_sync_and_async_tasks_and_the_store_agrees() -> None:
    code, report, stderr = bench_json("-n", "2000", "--repeat", "1", "--single", "50",
                                      "--inflight", "16", "--latency-samples", "20")  # fmt: skip
    assert code == 0, stderr
    assert report["ok"] is True and report["error"] is None
    assert report["types"] == [{"type": "bench.sync", "label": "sync task"},
                               {"type": "bench.async", "label": "async task"}]  # fmt: skip
    # the server the bench started, as its STATS describe it: the shipped settings
    server = report["server"]
    assert server["started_by_bench"] is True
    assert (server["durability"], server["store"]) == ("full", "SQLiteStore")
    # one worker with the shipped default of slots (no -c passed on)
    assert report["workers"]["count"] == 1
    assert report["workers"]["slots"] == [defaults.CONCURRENCY]
    assert {"bench.sync", "bench.async"} <= set(report["workers"]["types"])
    assert report["config"]["warmup"] == 200  # 10 % of -n
    assert report["config"]["timeout"] == 60
    figures = report["figures"]
    assert list(figures) == [*RATES, *LATENCIES]
    for name in RATES:
        assert figures[name]["jobs_per_s"] > 0
        assert figures[name]["runs"] == 1
    assert figures["drain, async task"]["type"] == "bench.async"
    for name in LATENCIES:
        latency = figures[name]
        assert latency["samples"] == 20
        assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    # what the store recorded at the end: every job the bench ran succeeded, none else
    per_type = 200 + 2000 + 2000 + 20  # warm-up, drain, end-to-end, latency
    jobs = report["jobs"]
    assert jobs["submitted"] == 2 * per_type
    assert jobs["states"] == {"succeeded": 2 * per_type}
    assert (jobs["succeeded"], jobs["dead"]) == (2 * per_type, 0)
    # the enqueue figures' jobs, all stored (in a queue no worker serves)
    assert jobs["held"] == jobs["hold_stored"] == 50 + 2000 // 16 * 16 + 2000


def test_bench_against_a_server_reports_its_durability(server_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--durability", "normal")
    code, report, stderr = bench_json(
        "--server", server.address, "-n", "300", "--repeat", "1", "--type", "noop,sync",
        "--figures", "bulk,drain,e2e,latency", "--warmup", "30", "--latency-samples", "10",
    )  # fmt: skip
    assert code == 0, stderr
    assert report["server"]["durability"] == "normal"
    assert report["server"]["store"] == "SQLiteStore"
    assert report["server"]["started_by_bench"] is False
    assert report["server"]["address"] == server.address
    label = "noop (inline, server-only figure)"
    assert list(report["figures"]) == [
        "enqueue, bulk", f"drain, {label}", f"end-to-end, {label}", "drain, sync task",
        "end-to-end, sync task", f"round-trip latency, {label}", "round-trip latency, sync task",
    ]  # fmt: skip
    assert report["figures"][f"drain, {label}"]["type"] == "noop"
    # the server's own counts: exactly the jobs the bench submitted, all succeeded
    queue = report["jobs"]["queue"]
    with Client(server.address) as client:
        stats = client.stats()
    assert stats["queues"][queue] == {"succeeded": 2 * (30 + 300 + 300 + 10)}
    assert stats["queues"]["bench-hold"] == {"queued": 300}
    assert stats["totals"]["dead"] == 0


def test_a_failing_task_fails_the_figure_not_counted_as_throughput() -> None:
    started = time.monotonic()
    code, report, stderr = bench_json(
        "--tasks", "tests.sample_tasks", "--type", "tests.sample_tasks.boom", "-n", "200",
        "--warmup", "0", "--figures", "drain,e2e", "--repeat", "1", "--timeout", "30",
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert code == 1
    assert report["ok"] is False
    # the first failed job stops the bench: the figure is a failure, nothing else ran
    [(name, figure)] = report["figures"].items()
    assert name == "drain, tests.sample_tasks.boom"
    assert set(figure) == {"failed", "type"}
    m = re.fullmatch(
        r"drain, tests\.sample_tasks\.boom: (\d+) of 200 jobs failed \((\d+) retrying\);"
        r" job \d+ \(tests\.sample_tasks\.boom\): RuntimeError: boom; only succeeded jobs count",
        figure["failed"],
    )
    assert m is not None, figure["failed"]
    assert m.group(1) == m.group(2) and int(m.group(1)) >= 1
    assert report["error"] == figure["failed"]
    assert stderr.strip().endswith(f"distqueue: {figure['failed']}")


def test_jobs_that_do_not_finish_fail_the_bench_within_its_timeout() -> None:
    started = time.monotonic()
    code, report, stderr = bench_json(
        "--type", "async", "--sleep", "1000", "-n", "50", "--warmup", "0", "--figures", "e2e",
        "--repeat", "1", "--timeout", "3", timeout=60,
    )  # fmt: skip
    assert time.monotonic() - started < 30  # 3 s, the start and the stop
    assert code == 1
    name = "end-to-end, async task, sleep 1000 s"
    assert list(report["figures"]) == [name]
    message = report["figures"][name]["failed"]
    m = re.fullmatch(
        rf"{name}: 50 of 50 jobs missing after 3 s \(--timeout\): not succeeded \((.*)\)", message
    )
    assert m is not None, message
    # every job is still queued or running (the worker's slots hold as many as they can)
    where = dict((state, int(n)) for n, state in (p.split() for p in m.group(1).split(", ")))
    running = min(50, defaults.CONCURRENCY)
    assert where == ({"running": 50} if running == 50 else {"queued": 50 - running,
                                                            "running": running})  # fmt: skip
    assert f"distqueue: {message}" in stderr


def test_a_type_no_worker_serves_fails_at_once() -> None:
    out = cli("bench", "--type", "nosuch", "-n", "100", timeout=60)
    assert out.returncode == 1
    assert "no bench worker serves job type 'nosuch'" in out.stderr
    assert "Traceback" not in out.stderr


def test_bench_refuses_bad_options() -> None:
    for args, words in (
        (("--inflight", "0"), "--inflight"),
        (("--figures", "nope"), "nope"),
        (("--server", "127.0.0.1:1", "--durability", "normal"), "--durability"),
        (("--type", "myapp.work", "--sleep", "1"), "--sleep"),
        (("--timeout", "0"), "--timeout"),
    ):
        out = cli("bench", *args, timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert words in out.stderr
        assert "Traceback" not in out.stderr
