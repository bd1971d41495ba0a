"""The complete worker, as real processes: concurrency, pools, timeouts, SIGSTOP,
SIGTERM, shell, Python and file jobs, cancel, progress, the supervisor.

No test asserts on elapsed time; concurrency is read from the jobs' own
started/finished times, and waits poll for outcomes with generous limits.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from pathlib import Path

import pytest

from distqueue.client import Client
from distqueue.jobs import Job, JobState
from tests.procs import CLI, Proc, cli, wait_until
from tests.sample_tasks import add

TASKS = ["--tasks", "tests.sample_tasks"]
T = "tests.sample_tasks."


def max_overlap(jobs: list[Job]) -> int:
    events = []
    for job in jobs:
        assert job.started_at is not None and job.finished_at is not None
        events += [(job.started_at, 1), (job.finished_at, -1)]
    best = current = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        current += delta
        best = max(best, current)
    return best


@pytest.mark.parametrize("task", ["sleep_sync", "sleep_async"])
def test_concurrency_20_runs_jobs_side_by_side(server_proc, worker_proc, task: str) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker_proc(server.address, *TASKS, "--concurrency", "20").wait_connected()
    with Client(server.address) as client:
        ids = client.submit_many([{"type": T + task, "args": [0.1]} for _ in range(200)])
        jobs = [client.wait(i, timeout=120) for i in ids]
    assert all(j.state is JobState.SUCCEEDED for j in jobs)
    # side by side (the store's times also count ACKs still in flight, so this
    # measures at least the jobs that really overlapped)
    assert max_overlap(jobs) >= 10


@pytest.mark.parametrize(
    ("pool", "task"), [("thread", "hang_async"), ("thread", "hang"), ("process", "hang")]
)
def test_a_hanging_job_is_stopped_at_its_timeout(
    server_proc, worker_proc, pool: str, task: str
) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker = worker_proc(server.address, *TASKS, "--pool", pool, "--concurrency", "2")
    worker.wait_connected()
    with Client(server.address) as client:
        # a thread cannot be killed: it keeps its slot, so only one hang there; the
        # others twice, proving what was killed the first time was replaced
        for _ in range(1 if task == "hang" and pool == "thread" else 2):
            job_id = client.submit(T + task, timeout=0.5, retries=0)
            job = client.wait(job_id, timeout=60)
            assert job.state is JobState.DEAD
            assert job.error is not None and job.error.kind == "timeout"
        # the worker goes on serving
        assert client.result(client.submit(add, 2, 3), wait=30) == 5
    # and a SIGTERM stops it, its grace not spent on a thread whose job ended already
    # (stop() kills it, -9, if it has not exited within 15 s: the 30 s grace)
    assert worker.stop() == 0


def test_sigstopped_worker_loses_its_jobs_and_its_late_results(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--lease", "2")
    a = worker_proc(server.address, *TASKS, "--concurrency", "5")
    a.wait_connected()
    with Client(server.address) as client:
        ids = client.submit_many([{"type": T + "sleep_sync", "args": [1.5]} for _ in range(5)])
        wait_until(lambda: all(client.status(i).state is JobState.RUNNING for i in ids), 30,
                   "worker A to run them")  # fmt: skip
        a.signal(signal.SIGSTOP)
        b = worker_proc(server.address, *TASKS, "--concurrency", "5")
        try:
            jobs = [client.wait(i, timeout=60) for i in ids]
            assert all(j.state is JobState.SUCCEEDED and j.worker == b.id for j in jobs)
            assert all(j.attempts == 2 for j in jobs)
        finally:
            a.signal(signal.SIGCONT)
        # when it wakes, its results are refused, or it learns first (its next BEAT)
        # that it lost the leases and drops them itself
        a.wait_for("refused|lost its lease", timeout=30)  # (the worker's own words)
        stats = client.stats()
        assert stats["totals"]["succeeded"] == 5  # no job ended twice
        assert all(client.status(i).worker == b.id for i in ids)


def test_sigterm_under_load_loses_nothing(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    quick = worker_proc(server.address, *TASKS, "--concurrency", "5", "--grace", "0.2")
    steady = worker_proc(server.address, *TASKS, "--concurrency", "5")
    quick.wait_connected()
    steady.wait_connected()
    with Client(server.address) as client:
        ids = client.submit_many([{"type": T + "sleep_sync", "args": [0.2]} for _ in range(100)])
        wait_until(lambda: client.stats()["jobs"]["succeeded"] >= 20, 60, "some progress")
        assert quick.stop() == 0
        jobs = [client.wait(i, timeout=120) for i in ids]
        assert all(j.state is JobState.SUCCEEDED for j in jobs)
        assert client.stats()["jobs"]["running"] == 0
        returned = [j for j in jobs if j.attempts > 1]
        assert all(j.lost == 0 for j in returned)  # given back by BYE, not lost


def test_second_sigterm_stops_at_once(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    w = worker_proc(server.address, *TASKS, "--grace", "60")
    w.wait_connected()
    with Client(server.address) as client:
        job_id = client.submit(T + "sleep_async", 30)
        wait_until(lambda: client.status(job_id).state is JobState.RUNNING, 30, "it to run")
        w.signal(signal.SIGTERM)
        w.wait_for("stopping: 1 jobs running")
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
        job = client.status(job_id)
        assert job.state is JobState.QUEUED and job.lost == 0  # given back


def test_shell_jobs_only_where_allowed(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    plain = worker_proc(server.address)
    plain.wait_connected()
    with Client(server.address) as client:
        job_id = client.submit("shell", "echo out; echo err >&2", check_type=False)
        time.sleep(1.5)  # a worker without --allow-shell never takes it
        assert client.status(job_id).state is JobState.QUEUED
        worker_proc(server.address, "--allow-shell")
        assert client.result(job_id, wait=30) == {"stdout": "out\n", "stderr": "err\n",
                                                   "exit_code": 0}  # fmt: skip
        failing = client.submit("shell", "exit 3", retries=0)
        job = client.wait(failing, timeout=30)
        assert job.state is JobState.DEAD and job.error is not None
        assert job.error.kind == "exit" and "3" in job.error.message
        slow = client.submit("shell", "sleep 30", timeout=0.5, retries=0)
        job = client.wait(slow, timeout=30)
        assert job.state is JobState.DEAD and job.error is not None
        assert job.error.kind == "timeout"


def test_python_function_jobs(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker_proc(server.address, *TASKS).wait_connected()
    env = {"DISTQUEUE_SERVER": server.address}
    out = cli("submit", T + "add", "--args", "[2, 3]", env=env)
    assert out.returncode == 0, out.stderr
    assert cli("result", out.stdout.strip(), "--wait", "30", env=env).stdout.strip() == "5"
    out = cli("submit", T + "add", "--args", '{"a": 2, "b": 3}', env=env)
    assert cli("result", out.stdout.strip(), "--wait", "30", env=env).stdout.strip() == "5"
    with Client(server.address) as client:
        assert client.result(client.submit(T + "add", 2, b=3), wait=30) == 5
        assert client.result(client.submit(add, 4, 5), wait=30) == 9
        bad = client.wait(client.submit(add, 1, 2, 3), timeout=30)
        assert bad.state is JobState.DEAD and bad.attempts == 1  # not retried
        boom = client.wait(client.submit(T + "boom", "kaput", retries=1), timeout=60)
        assert boom.state is JobState.DEAD and boom.attempts == 2
        assert boom.error is not None and boom.error.kind == "RuntimeError"
        assert boom.error.message == "kaput" and "Traceback" in boom.error.traceback


def test_50_mb_file_jobs(tmp_path: Path, server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--max-payload", str(80 * 1024 * 1024))
    w = worker_proc(server.address, *TASKS)
    w.wait_connected()
    data = os.urandom(10 * 1024 * 1024) * 5
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    env = {"DISTQUEUE_SERVER": server.address}
    out = cli("submit", "gzip", "--payload", str(source), env=env)
    assert out.returncode == 0, out.stderr
    packed = tmp_path / "big.gz"
    out = cli("result", out.stdout.strip(), "--wait", "120", "-o", str(packed), env=env)
    assert out.returncode == 0, out.stderr
    out = cli("submit", "gunzip", "--payload", str(packed), env=env)
    unpacked = tmp_path / "again.bin"
    cli("result", out.stdout.strip(), "--wait", "120", "-o", str(unpacked), env=env)
    assert hashlib.sha256(unpacked.read_bytes()).digest() == hashlib.sha256(data).digest()
    with Client(server.address) as client:
        digest = client.result(client.submit(T + "checksum", payload=data), wait=120)
        assert digest == hashlib.sha256(data).hexdigest()
        back = client.result(client.submit(T + "reverse_file", payload=data), wait=120)
        assert hashlib.sha256(back).digest() == hashlib.sha256(data[::-1]).digest()
    status = Path(f"/proc/{w.popen.pid}/status").read_text()
    peak_kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    assert peak_kb * 1024 < 8 * len(data) + 150 * 1024 * 1024


def test_cancel_a_running_job(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--lease", "1.5")
    worker_proc(server.address, *TASKS, "--pool", "process", "--concurrency", "2").wait_connected()
    with Client(server.address) as client:
        for target, args in ((T + "sleep_async", [30]), (T + "sleep_sync", [30])):
            job_id = client.submit(target, *args)
            wait_until(lambda j=job_id: client.status(j).state is JobState.RUNNING, 30, "run")
            assert client.cancel(job_id) == "cancelling"
            job = client.wait(job_id, timeout=30)
            assert job.state is JobState.CANCELLED
            assert job.error is not None and job.error.kind == "cancelled"


def test_progress_is_visible_while_running(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker_proc(server.address, *TASKS).wait_connected()
    with Client(server.address) as client:
        job_id = client.submit("progressive", 10, 0.3)
        progress = wait_until(lambda: client.status(job_id).progress, 30, "progress")
        assert 0 < progress["percent"] <= 100
        assert re.fullmatch(r"step \d+ of 10", progress["message"])
        assert client.result(job_id, wait=30) == "done"


def test_workers_supervisor_restarts_and_stops(server_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    sup = Proc([*CLI, "workers", "3", "--server", server.address])
    try:
        with Client(server.address) as client:
            wait_until(lambda: client.stats()["workers"]["connected"] == 3, 60, "3 workers")
            name = client.stats()["workers"]["list"][0]["name"]
            os.kill(int(name.rsplit(":", 1)[1]), signal.SIGKILL)
            sup.wait_for("restarting", 30)
            wait_until(lambda: client.stats()["workers"]["connected"] == 3, 60, "back to 3")
            sup.signal(signal.SIGTERM)
            assert sup.wait(30) == 0
            wait_until(lambda: client.stats()["workers"]["connected"] == 0, 30, "all gone")
    finally:
        sup.stop()


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_task_sees_its_attempt_and_token(server_proc, worker_proc, pool: str) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker_proc(server.address, *TASKS, "--pool", pool).wait_connected()
    with Client(server.address) as client:
        job_id = client.submit(T + "my_claim")
        seen = client.result(job_id, wait=30)
        job = client.status(job_id)
        assert seen == {"attempts": 1, "token": job.token} and job.token == 1
