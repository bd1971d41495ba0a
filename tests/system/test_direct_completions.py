"""Direct mode records completions as they happen (issue #13).

A direct-mode worker (no server: it works on the Redis store itself) runs many
jobs of a task that returns the time it returned. The store's record time of each
job (``finished_at``) must follow within 50 ms, and the worker must never run more
than its slots ahead of what the store recorded: a crash may lose at most that
much finished work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distqueue import codec
from distqueue.client import Client
from distqueue.client.connection import Arg
from distqueue.client.direct import DirectConnection
from distqueue.errors import LeaseLost, WrongArguments
from distqueue.jobs import Job, JobState
from distqueue.protocol.messages import job_from_wire
from distqueue.worker.worker import PREFETCH_MAX
from tests.procs import WorkerProc

# each completion recorded within 50 ms: timed, so alone (tests/conftest.py)
pytestmark = pytest.mark.serial

JOBS = 20_000
SLOTS = 64
#: the most seconds between a job's return and the store's record of it
RECORDED_WITHIN = 0.05

TASKS = """
import os
import time

import distqueue

_returned = os.open({path!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


@distqueue.task(name="stamp")
{kind}def stamp() -> float:
    os.write(_returned, b".")  # one byte per job that returned: the test counts them
    return time.time()
"""


def _statuses(client: Client, ids: list[int]) -> list[Job]:
    out: list[Job] = []
    for i in range(0, len(ids), 1000):
        replies = client.connection.pipeline([["STATUS", j] for j in ids[i : i + 1000]])
        out += [job_from_wire(r) for r in replies]
    return out


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_direct_worker_records_each_completion_within_50ms(
    kind: str, own_redis: str, worker_proc: Callable[..., WorkerProc], tmp_path: Path
) -> None:
    jobs = JOBS
    returned = tmp_path / "returned"
    returned.touch()
    tasks = tmp_path / "stamp_tasks.py"
    tasks.write_text(TASKS.format(path=str(returned), kind="async " if kind == "async" else ""))
    with Client(own_redis) as client:
        # Given many jobs in the store, submitted in bulk
        ids: list[int] = []
        for i in range(0, jobs, 1000):
            ids += client.submit_many([{"type": "stamp"} for _ in range(min(1000, jobs - i))])
        # When a direct-mode worker runs them
        start = time.monotonic()
        worker = worker_proc(own_redis, "--tasks", str(tasks), "-c", str(SLOTS),
                             "--no-builtins")  # fmt: skip
        samples = []
        deadline = start + 120
        while True:
            # read in this order: what had returned by then is recorded by now
            done = returned.stat().st_size
            stats = client.stats()["jobs"]
            samples.append((done, stats["succeeded"], stats["running"]))
            # Then it never runs more than its slots ahead of the store
            assert done - stats["succeeded"] <= SLOTS, (samples[-1], worker.output[-2000:])
            # (claimed may be more: short jobs are claimed ahead, worker.PREFETCH_MAX
            # at most, but none of them runs before a slot is free)
            assert stats["running"] <= SLOTS + PREFETCH_MAX, samples[-1]
            if stats["succeeded"] + stats["dead"] >= jobs:
                break
            assert time.monotonic() < deadline, (samples[-1], worker.output[-2000:])
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        # and every job succeeded, once
        stats = client.stats()
        assert stats["jobs"]["succeeded"] == jobs and stats["jobs"]["dead"] == 0, stats["jobs"]
        assert returned.stat().st_size == jobs
        # and the store recorded each one within 50 ms of its return
        lags = []
        for job in _statuses(client, ids):
            assert job.state is JobState.SUCCEEDED and job.finished_at is not None
            lags.append(job.finished_at - float(job.result))
    lags.sort()
    q = statistics.quantiles(lags, n=100)
    print(
        f"\n{kind}: {jobs} jobs in {elapsed:.1f}s ({jobs / elapsed:,.0f}/s), "
        f"{len(samples)} samples, "
        f"largest lead over the store {max(d - s for d, s, _ in samples)} (slots {SLOTS}); "
        f"record lag ms: min {lags[0] * 1e3:.2f} p50 {q[49] * 1e3:.2f} "
        f"p90 {q[89] * 1e3:.2f} p99 {q[98] * 1e3:.2f} max {lags[-1] * 1e3:.2f}"
    )
    assert lags[0] >= -0.001, "recorded before it returned: clocks?"
    assert lags[-1] <= RECORDED_WITHIN, f"max lag {lags[-1] * 1e3:.1f} ms"


async def test_direct_pipeline_sends_consecutive_acks_as_one_store_call(
    own_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a direct-mode worker connection holding four jobs
    with Client(own_redis) as client:
        client.submit_many([{"type": "echo", "args": [i]} for i in range(4)])
    hello: list[Arg] = ["ID", "w1", "TYPES", "echo", "QUEUES", "*", "CONCURRENCY", 4]
    conn = DirectConnection(own_redis, role="worker", hello=hello)
    await conn.connect()
    try:
        held = await conn.call("FETCH", 4, 1)
        assert len(held) == 4
        (a, ta, *_), (b, tb, *_), (c, tc, *_), (d, td, *_) = held
        service = conn._service
        assert service is not None
        calls: list[int] = []
        complete_many = service.store.complete_many

        async def counted(items: Any, now: float, *, worker: str | None = None) -> Any:
            calls.append(len(items))
            return await complete_many(items, now, worker=worker)

        monkeypatch.setattr(service.store, "complete_many", counted)
        # When its reports come in one pipeline: ACKs around a malformed ACK, a stale
        # one, a PROGRESS and a FAIL
        fail = codec.dumps({"kind": "Boom", "message": "no", "retryable": False})
        replies = await conn.pipeline([
            ["ACK", a, ta, codec.dumps("a")],
            ["ACK", b, tb + 1000, codec.dumps("b")],  # a wrong token: STALE
            ["ACK", b],  # too few arguments: answered on its own
            ["ACK", b, tb, codec.dumps("b")],
            ["PROGRESS", c, tc, 50, "half"],
            ["ACK", c, tc, codec.dumps("c")],
            ["FAIL", d, td, fail],
        ])  # fmt: skip
        # Then each is answered on its own, in order, and the ACKs on either side of
        # the others went to the store as one call each
        assert replies[0] == b"OK" and isinstance(replies[1], LeaseLost)
        assert isinstance(replies[2], WrongArguments) and replies[3] == b"OK"
        assert replies[4] == b"OK" and replies[5] == b"OK" and replies[6] == b"dead"
        assert calls == [2, 1, 1]
        with Client(own_redis) as client:
            jobs = [client.status(i) for i in (a, b, c, d)]
        assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 3 + [JobState.DEAD]
        assert [j.result for j in jobs[:3]] == ["a", "b", "c"]
    finally:
        await conn.close()
