"""Workflows and flow control through real servers and workers: dependencies with
results passed on, concurrency limits, paused queues, full queues, periodic jobs
(two servers on one Redis fire each tick once), from the CLI and the Python client."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from distqueue.client import Client
from distqueue.errors import QueueFull
from distqueue.jobs import JobState
from tests.procs import cli, wait_until

S = JobState
TASKS = ("--tasks", "tests.sample_tasks")


def _finished(client: Client, ids: list[int], timeout: float = 60.0) -> None:
    for job_id in ids:
        client.wait(job_id, timeout)


def test_a_chain_passes_results_and_a_failed_step_cancels_the_rest(
    server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker = worker_proc(server.address, *TASKS, "-c", "4")
    worker.wait_connected()
    with Client(server.address) as client:
        # a -> b -> c, each given the one before's result first
        ids = client.chain(
            [("tests.sample_tasks.add", 1, 2), ("tests.sample_tasks.add", 10),
             ("tests.sample_tasks.collect", "end")],
            pass_results=True,
        )  # fmt: skip
        assert client.result(ids[-1], wait=30) == [13, "end"]
        jobs = [client.status(i) for i in ids]
        # in order: each started after the one before it finished
        for before, after in itertools.pairwise(jobs):
            assert before.finished_at is not None and after.started_at is not None
            assert after.started_at >= before.finished_at
        assert jobs[1].after == (ids[0],) and jobs[1].pass_results
        # fan-out, fan-in: the callback gets every result, in order
        _, total = client.group(
            [("tests.sample_tasks.add", i, i) for i in range(5)],
            then=("tests.sample_tasks.collect",), pass_results=True,
        )  # fmt: skip
        assert total is not None
        assert client.result(total, wait=30) == [[0, 2, 4, 6, 8]]
        # a step that dies cancels the steps after it, transitively
        boom = client.submit("tests.sample_tasks.boom", "no", retries=0)
        child = client.submit("tests.sample_tasks.add", 1, 1, after=boom)
        grandchild = client.submit("tests.sample_tasks.add", 2, 2, after=[child])
        runs_anyway = client.submit(
            "tests.sample_tasks.collect", after=[boom], on_failure="run", pass_results=True
        )
        assert client.wait(grandchild, 30).state is S.CANCELLED
        assert client.status(child).state is S.CANCELLED
        assert client.status(boom).state is S.DEAD
        assert client.result(runs_anyway, wait=30) == [None]


def test_cli_after_waits_and_refuses_unknown_jobs(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    with Client(server.address) as client:
        first = int(cli("submit", "echo", "one", "--server", server.address).stdout)
        second = int(cli("submit", "echo", "two", "--after", str(first), "--server",
                         server.address).stdout)  # fmt: skip
        assert client.status(second).state is S.WAITING
        listed = cli("list", "--state", "waiting", "--server", server.address).stdout
        assert listed.split()[0] == str(second)
        bad = cli("submit", "echo", "x", "--after", "999999", "--server", server.address)
        assert bad.returncode == 1 and "999999" in bad.stderr
        worker = worker_proc(server.address, "-c", "2")
        worker.wait_connected()
        assert client.result(second, wait=30) == "two"


def test_a_concurrency_limit_holds_across_workers_and_pause_stops_a_queue(
    server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    out = cli("limit", "set", "tests.sample_tasks.sleep_sync", "--concurrency", "2",
              "--server", server.address).stdout  # fmt: skip
    assert out.strip() == "type tests.sample_tasks.sleep_sync: concurrency=2"
    workers = [worker_proc(server.address, *TASKS, "-c", "8", "-q", "default,slow")
               for _ in range(3)]  # fmt: skip
    for w in workers:
        w.wait_connected()
    with Client(server.address) as client:
        limited = [client.submit("tests.sample_tasks.sleep_sync", 0.2) for _ in range(10)]
        free = [client.submit("tests.sample_tasks.add", i, 1) for i in range(20)]
        _finished(client, free, 30)
        _finished(client, limited, 60)
        jobs = [client.status(i) for i in limited]
        assert [j.state for j in jobs] == [S.SUCCEEDED] * 10
        # never 3 at once, from the store's own start and finish times
        events = sorted([(j.started_at, 1) for j in jobs] + [(j.finished_at, -1) for j in jobs])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        assert peak == 2
        # a paused queue hands out nothing; running ones are not touched
        client.pause("slow")
        assert client.paused() == ["slow"]
        held = [client.submit("tests.sample_tasks.add", 1, i, queue="slow") for i in range(3)]
        other = client.submit("tests.sample_tasks.add", 5, 5)
        assert client.result(other, wait=30) == 10
        time.sleep(0.5)
        assert {client.status(i).state for i in held} == {S.QUEUED}
        cli("resume", "slow", "--server", server.address)
        assert [client.result(i, wait=30) for i in held] == [1, 2, 3]
        listed = json.loads(cli("limit", "list", "--json", "--server", server.address).stdout)
        limit = {"scope": "type", "name": "tests.sample_tasks.sleep_sync", "concurrency": 2}
        assert listed == {"limits": [limit], "paused": [], "pause_ends": {}}
        # a pause with an end: the CLI says when, the store ends it by itself
        out = cli("pause", "slow", "--for", "1s", "--server", server.address).stdout
        assert out.startswith("queue slow paused until ") and out.strip().endswith("(1s)")
        listed = json.loads(cli("limit", "list", "--json", "--server", server.address).stdout)
        assert listed["paused"] == ["slow"] and set(listed["pause_ends"]) == {"slow"}
        resumed = client.submit("tests.sample_tasks.add", 2, 2, queue="slow")
        assert client.result(resumed, wait=30) == 4  # after the second, without a resume
        assert client.status(resumed).started_at >= listed["pause_ends"]["slow"]
        assert client.paused() == []


def test_a_full_queue_refuses_then_accepts_and_the_client_can_wait(
    server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--limit", "queue:small:max_depth=3")
    with Client(server.address) as client:
        wait_until(lambda: client.limits(), 20, "the configured limit")
        ids = [client.submit("echo", str(i), queue="small") for i in range(3)]
        with pytest.raises(QueueFull, match=r"queue small holds 3 jobs \(max_depth 3\)"):
            client.submit("echo", "x", queue="small")
        refused = cli("submit", "echo", "x", "-q", "small", "--server", server.address)  # fmt: skip
        assert refused.returncode == 1 and "FULL" in refused.stderr + refused.stdout
        assert client.stats()["jobs"]["queued"] == 3
        other = client.submit("echo", "elsewhere")  # another queue is not limited
        # a client told to wait tries again until workers drain the queue
        worker = worker_proc(server.address, "-q", "small,default", "-c", "2")
        worker.wait_connected()
        with Client(server.address, full_wait=30) as patient:
            late = patient.submit("echo", "late", queue="small")
        assert client.result(late, wait=30) == "late"
        assert [client.result(i, wait=30) for i in ids] == ["0", "1", "2"]
        assert client.result(other, wait=30) == "elsewhere"


def test_two_servers_on_one_redis_fire_each_tick_once(
    own_redis: str, server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    a = server_proc("--store", own_redis)
    b = server_proc("--store", own_redis)
    with Client(a.address) as client:
        added = client.schedule("beat", "echo", "tick", every=1)
        assert added["every"] == 1 and not added["paused"]
        time.sleep(6.5)
        client.pause_schedule("beat")
        time.sleep(1.5)  # a tick in flight when it was paused lands now
        keys = sorted(j.unique_key for j in client.list(type="echo", limit=1000))
        ticks = [float(k.rsplit(":", 1)[1]) for k in keys]
        # one job per tick, none missed, none twice: consecutive ticks one second apart
        assert 5 <= len(ticks) <= 8, ticks
        assert [round(t2 - t1, 6) for t1, t2 in itertools.pairwise(ticks)] == [1.0] * (
            len(ticks) - 1
        )
        with Client(b.address) as other:
            assert [s["name"] for s in other.schedules()] == ["beat"]
            assert other.schedules()[0]["paused"] is True
        # the jobs run like any other
        worker = worker_proc(b.address, "-c", "2")
        worker.wait_connected()
        assert client.result(client.list(type="echo", limit=1)[0].id, wait=30) == "tick"


def test_a_periodic_task_sets_its_schedule_when_its_worker_connects(
    server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker = worker_proc(server.address, "--tasks", "tests.periodic_tasks", "-c", "2")
    worker.wait_connected()
    with Client(server.address) as client:
        [schedule] = wait_until(client.schedules, 20, "the worker's schedule")
        assert schedule["name"] == "tick-every-second"
        assert schedule["job"] == {"type": "tests.periodic_tasks.tick", "args": ["tick"],
                                   "queue": "default", "priority": 5, "retries": 3}  # fmt: skip
        done = wait_until(
            lambda: [j for j in client.list(state="succeeded") if j.type.endswith(".tick")],
            30, "a tick's job",
        )  # fmt: skip
        assert client.result(done[0].id) == "TICK"
        # a second worker sets the same schedule: its ticks stay as they were
        listed = cli("schedule", "list", "--server", server.address).stdout
        assert listed.startswith("tick-every-second\t@every 1s UTC\ttests.periodic_tasks.tick")
        again = worker_proc(server.address, "--tasks", "tests.periodic_tasks", "-c", "1")
        again.wait_connected()
        assert len(client.schedules()) == 1
        cli("schedule", "remove", "tick-every-second", "--server", server.address)
        assert client.schedules() == []
