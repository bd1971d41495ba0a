"""The seed scenarios with real processes: a server, workers, clients, kill -9."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distqueue import codec
from distqueue.client import Client
from distqueue.client.connection import Connection
from distqueue.errors import AuthError, DistQueueError, LeaseLost
from distqueue.jobs import JobState
from tests.procs import cli

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]


def expected(job_type: str, text: str) -> Any:
    return {
        "echo": text,
        "wordcount": len(text.split()),
        "charcount": sum(1 for c in text if not c.isspace()),
        "capitalize": text.upper(),
    }[job_type]


def mixed_specs(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"type": rng.choice(["echo", "wordcount", "charcount", "capitalize"]),
         "args": " ".join(rng.choices(WORDS, k=rng.randint(1, 8))),
         "priority": rng.choice(["high", "normal", "low"])}
        for _ in range(n)
    ]  # fmt: skip


def wait_until(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def all_finished(client: Client, n: int) -> Callable[[], bool]:
    def check() -> bool:
        jobs = client.stats()["jobs"]
        return bool(jobs["succeeded"] + jobs["dead"] + jobs["cancelled"] >= n)

    return check


def test_seed_scenario_1000_mixed_jobs_two_workers(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    # Given a server and two worker processes
    server = server_proc()
    workers = [worker_proc(server.address) for _ in range(2)]
    for w in workers:
        w.wait_connected()
    specs = mixed_specs(1000, seed=1)
    with Client(server.address) as client:
        # When a client submits 1,000 mixed jobs: most in batches, some one at a time
        ids = client.submit_many(specs[:400]) + client.submit_many(specs[400:900])
        ids += [client.submit_many([s])[0] for s in specs[900:]]
        wait_until(all_finished(client, 1000), what="1,000 jobs to finish")
        # Then every job succeeded with the right result
        ran_on = set()
        for job_id, s in zip(ids, specs, strict=True):
            job = client.status(job_id)
            assert job.state is JobState.SUCCEEDED, job
            assert client.result(job_id) == expected(s["type"], s["args"])
            ran_on.add(job.worker)
        assert ran_on == {w.id for w in workers}  # both took part
        # and the stats add up
        stats = client.stats()
        assert stats["jobs"] == {"waiting": 0, "scheduled": 0, "queued": 0, "running": 0,
                                 "retrying": 0, "succeeded": 1000, "dead": 0,
                                 "cancelled": 0}  # fmt: skip
        assert stats["processed"] == 1000 and stats["success_rate"] == 1.0
        assert stats["totals"]["submitted"] == stats["totals"]["succeeded"] == 1000
        assert stats["workers"]["connected"] == 2


def test_worker_vanishing_requeues_at_once_and_late_ack_refused(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    with Client(server.address) as client:
        ids = client.submit_many([{"type": "echo", "args": f"job {i}"} for i in range(5)])
        # Given a worker holding jobs (a raw connection: a worker frozen mid-work)
        victim = Connection(server.address, role="worker", hello=["ID", "victim", "TYPES", "echo"])
        held = victim.call("FETCH", 5, 1)
        assert sorted(j[0] for j in held) == ids
        assert all(client.status(i).state is JobState.RUNNING for i in ids)
        # When its connection drops without a goodbye (what kill -9 looks like)
        victim.close()
        # Then its jobs are queued again at once (well before any lease ran out)
        wait_until(lambda: all(client.status(i).state is JobState.QUEUED for i in ids),
                   timeout=10, what="jobs to be re-queued")  # fmt: skip
        assert all(client.status(i).lost == 1 for i in ids)
        # and another worker finishes them
        worker_proc(server.address)
        for i, job_id in enumerate(ids):
            assert client.result(job_id, wait=30) == f"job {i}"
        # and a late ACK with the vanished worker's token is refused
        late = Connection(server.address, role="worker", hello=["ID", "victim", "TYPES", "echo"])
        job_id, token = held[0][0], held[0][1]
        with pytest.raises(LeaseLost):
            late.call("ACK", job_id, token, codec.dumps("late"))
        late.close()
        assert client.result(job_id) == "job 0"


def test_kill_9_a_worker_under_load(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    w1 = worker_proc(server.address, "--concurrency", "8")
    w2 = worker_proc(server.address, "--concurrency", "8")
    w1.wait_connected()
    w2.wait_connected()
    with Client(server.address) as client:
        ids = client.submit_many([{"type": "sleep", "args": 0.01} for _ in range(2000)])
        wait_until(lambda: client.stats()["jobs"]["succeeded"] >= 500, what="a quarter done")
        w1.kill()
        wait_until(all_finished(client, 2000), timeout=120, what="all jobs to finish")
        stats = client.stats()
        assert stats["jobs"]["succeeded"] == 2000 and stats["jobs"]["running"] == 0
        assert stats["totals"]["succeeded"] == 2000  # each job succeeded exactly once
        for job in client.list(limit=1000) + client.list(limit=1000, before=ids[1000]):
            assert job.state is JobState.SUCCEEDED and job.attempts >= 1


def test_kill_9_the_server_mid_load_and_restart(tmp_path: Path, server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    server = server_proc(data=data)
    worker = worker_proc(server.address, "--concurrency", "8")
    worker.wait_connected()
    answered: list[int] = []
    stop = threading.Event()

    def submit_forever() -> None:
        client = Client(server.address, timeout=5)
        rng = random.Random(5)
        while not stop.is_set():
            try:
                if rng.random() < 0.5:
                    answered.append(client.submit_many([{"type": "wordcount", "args": "a b c"}])[0])
                else:
                    batch = [{"type": "wordcount", "args": "a b c"}] * rng.randint(2, 50)
                    answered.extend(client.submit_many(batch))
            except DistQueueError:
                return  # the server died under us: the unanswered submit may or may not exist
        client.close()

    producer = threading.Thread(target=submit_forever)
    producer.start()
    wait_until(lambda: len(answered) > 300, what="load")
    time.sleep(random.Random(9).uniform(0.05, 0.3))
    # When the server is killed with -9 mid-load and restarted on the same data
    server.kill()
    stop.set()
    producer.join(10)
    restarted = server_proc(data=data, port=server.port)
    # Then every job whose SUBMIT was answered is there and all of them finish
    with Client(restarted.address) as client:
        wait_until(lambda: client.stats()["workers"]["connected"] == 1, what="the worker back")
        assert worker.alive
        for job_id in answered:
            assert client.result(job_id, wait=60) == 3
        assert client.stats()["jobs"]["running"] == 0


def test_token_protects_everything(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--token", "s3cret")
    worker = worker_proc(server.address, "--token", "s3cret")
    worker.wait_connected()
    with pytest.raises(AuthError):
        Client(server.address).submit("echo", "no token")
    out = cli("submit", "--server", server.address, "echo", "hi")
    assert out.returncode != 0 and "AUTH" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = cli("submit", "--server", server.address, "echo", "hi", env={"DISTQUEUE_TOKEN": "s3cret"})
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    out = cli("result", "--server", server.address, "--token", "s3cret", job_id, "--wait", "20")
    assert out.stdout.strip() == "hi"
    with Client(server.address, token="s3cret") as client:
        assert client.stats()["jobs"]["succeeded"] == 1


def test_sigterm_stops_the_server_cleanly(server_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
