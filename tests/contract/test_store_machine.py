"""A hypothesis state machine against every store backend and a model kept in the test.

Random sequences of enqueue, claim, complete, fail, heartbeat, clock moves,
expire, promote, release, cancel, retry and purge; after every step the store
must agree with the model: no job lost, none held by two workers, a stale token
never changes anything, hand-out order is priority then FIFO, counts add up.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from distqueue.errors import IllegalTransition, JobNotFound, LeaseLost
from distqueue.jobs import JobError, JobSpec, JobState
from distqueue.policy import Retention, RetryPolicy
from tests.conftest import BACKENDS, Backend

S = JobState
WORKERS = ["w1", "w2", "w3"]
QUEUES = ["qa", "qb"]
TYPES = ["ta", "tb"]
LEASE = 10.0
POISON = 2
#: payload sizes: none, small, and larger than the embedded store's SMALL_JOB
SIZES = [0, 0, 100, 5000]
SOAK = os.environ.get("DISTQUEUE_SOAK") == "1"


@dataclass
class M:
    """The model's view of one job."""

    id: int
    queue: str
    type: str
    priority: int
    max_retries: int
    state: JobState
    key: str | None = None
    run_at: float | None = None
    seq: int = 0
    attempts: int = 0
    token: int = 0
    holder: str | None = None
    lease_until: float = 0.0
    failures: int = 0
    lost: int = 0
    cancel: bool = False
    finished_at: float | None = None
    #: its payload's length: what a claim's byte budget counts (it has no args)
    size: int = 0


class StoreMachine(RuleBasedStateMachine):
    backend_name = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="dq-machine-"))
        self.backend = Backend(self.backend_name, self.tmp)
        policy = RetryPolicy(base=1.0, factor=2.0, cap=8.0, jitter=0.5)
        self.store = self.run(self.backend.open(
            retry_policy=policy, poison_limit=POISON, rng=random.Random(0), fast=True
        ))  # fmt: skip
        self.now = 1000.0
        self.jobs: dict[int, M] = {}
        self.seq = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.backend.close_all())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------

    def _queue_again(self, m: M) -> None:
        self.seq += 1
        m.state, m.seq, m.holder, m.run_at, m.cancel = S.QUEUED, self.seq, None, None, False

    def _finish(self, m: M, state: JobState) -> None:
        m.state, m.holder, m.run_at, m.finished_at = state, None, None, self.now

    def _lose(self, m: M) -> None:
        m.lost += 1
        if m.cancel:
            self._finish(m, S.CANCELLED)
        elif m.lost > POISON:
            self._finish(m, S.DEAD)
        else:
            self._queue_again(m)

    def _running(self) -> list[M]:
        return [m for m in self.jobs.values() if m.state is S.RUNNING]

    def _snapshot(self, job_id: int) -> Any:
        return self.run(self.store.get(job_id))

    # -- rules ---------------------------------------------------------------------------

    @rule(
        specs=st.lists(
            st.tuples(st.sampled_from(QUEUES), st.sampled_from(TYPES), st.integers(0, 10),
                      st.integers(0, 2), st.sampled_from([None, None, "k1", "k2", "k3"]),
                      st.sampled_from([0.0, 0.0, 0.0, 5.0]), st.sampled_from(SIZES)),
            min_size=1, max_size=4,
        )
    )  # fmt: skip
    def enqueue(self, specs: list[tuple[str, str, int, int, str | None, float, int]]) -> None:
        job_specs = [
            JobSpec(type=t, queue=q, priority=p, max_retries=r, unique_key=k,
                    run_at=self.now + d if d else None, payload=b"x" * z if z else None)
            for q, t, p, r, k, d, z in specs
        ]  # fmt: skip
        results = self.run(self.store.enqueue(job_specs, self.now))
        assert len(results) == len(specs)
        keys = {m.key: m.id for m in self.jobs.values() if m.key is not None}
        for (q, t, p, r, k, d, z), res in zip(specs, results, strict=True):
            if k is not None and k in keys:
                assert not res.created and res.id == keys[k]
                continue
            assert res.created and res.id not in self.jobs
            m = M(id=res.id, queue=q, type=t, priority=p, max_retries=r, key=k,
                  state=S.SCHEDULED if d else S.QUEUED, size=z)  # fmt: skip
            if d:
                m.run_at = self.now + d
            else:
                self.seq += 1
                m.seq = self.seq
            assert res.state is m.state
            self.jobs[res.id] = m
            if k is not None:
                keys[k] = res.id

    @rule(
        worker=st.sampled_from(WORKERS),
        n=st.integers(1, 4),
        queues=st.sampled_from([None, ("qa",), ("qb",)]),
        types=st.sampled_from([None, ("ta",), ("tb",), ("ta", "tb")]),
        max_bytes=st.sampled_from([None, None, 0, 150, 5000, 12_000]),
    )
    def claim(self, worker: str, n: int, queues: Any, types: Any, max_bytes: int | None) -> None:
        ready = sorted(
            (m for m in self.jobs.values() if m.state is S.QUEUED
             and (queues is None or m.queue in queues) and (types is None or m.type in types)),
            key=lambda m: (m.priority, m.seq),
        )[:n]  # fmt: skip
        if max_bytes is not None:  # up to the first job past the budget, one at least
            total = 0
            for i, m in enumerate(ready):
                total += m.size
                if i and total > max_bytes:
                    ready = ready[:i]
                    break
        got = self.run(self.store.claim(worker, n, self.now, queues=queues, types=types,
                                        lease=LEASE, max_bytes=max_bytes))  # fmt: skip
        # priority first, FIFO within a priority, only what the worker serves
        assert [j.id for j in got] == [m.id for m in ready]
        for job in got:
            m = self.jobs[job.id]
            # a new token at every claim, greater than any the job had before
            assert job.attempts == m.attempts + 1 and job.token > m.token
            m.state, m.attempts, m.token, m.holder = S.RUNNING, job.attempts, job.token, worker
            m.lease_until = self.now + LEASE

    @precondition(lambda self: bool(self._running()))
    @rule(data=st.data(), result=st.sampled_from([None, 1, "x", {"a": [1]}, b"\x00bytes"]))
    def complete(self, data: st.DataObject, result: Any) -> None:
        m = data.draw(st.sampled_from(self._running()))
        self.run(self.store.complete(m.id, m.token, result, self.now))
        self._finish(m, S.SUCCEEDED)
        assert self._snapshot(m.id).result == result

    @precondition(lambda self: bool(self._running()))
    @rule(data=st.data(), retryable=st.booleans(), kind=st.sampled_from(["boom", "cancelled"]))
    def fail(self, data: st.DataObject, retryable: bool, kind: str) -> None:
        m = data.draw(st.sampled_from(self._running()))
        out = self.run(self.store.fail(m.id, m.token, JobError(kind=kind, message="m"), self.now,
                                       retryable=retryable))  # fmt: skip
        m.failures += 1
        if m.cancel:
            expected = S.CANCELLED
        elif not retryable or m.failures > m.max_retries:
            expected = S.DEAD
        else:
            expected = S.RETRYING
        assert out.state is expected
        if expected is S.RETRYING:
            ceiling = min(8.0, 1.0 * 2 ** (m.failures - 1))
            assert out.run_at is not None
            assert self.now + ceiling * 0.5 <= out.run_at <= self.now + ceiling
            m.state, m.holder, m.run_at = S.RETRYING, None, out.run_at
        else:
            self._finish(m, expected)

    @precondition(lambda self: bool(self.jobs))
    @rule(
        data=st.data(),
        op=st.sampled_from(["complete", "fail", "progress"]),
        shift=st.sampled_from([-1, 1, 7]),
    )
    def stale_token_changes_nothing(self, data: st.DataObject, op: str, shift: int) -> None:
        m = data.draw(st.sampled_from(sorted(self.jobs.values(), key=lambda j: j.id)))
        # any token is stale for a job that is not running; a running one's is m.token
        token = m.token + shift if m.state is S.RUNNING else m.token
        if token < 0:
            token = m.token + 1
        before = self._snapshot(m.id)
        with pytest.raises(LeaseLost):
            if op == "fail":
                self.run(self.store.fail(m.id, token, JobError(kind="x", message="y"), self.now))
            elif op == "progress":
                self.run(self.store.progress(m.id, token, 50.0, "half", self.now))
            else:
                self.run(self.store.complete(m.id, token, "late", self.now))
        assert self._snapshot(m.id) == before

    @precondition(lambda self: bool(self._running()))
    @rule(data=st.data(), op=st.sampled_from(["complete", "fail", "progress"]))
    def another_worker_changes_nothing(self, data: st.DataObject, op: str) -> None:
        m = data.draw(st.sampled_from(self._running()))
        other = next(w for w in WORKERS if w != m.holder)
        before = self._snapshot(m.id)
        with pytest.raises(LeaseLost):
            if op == "fail":
                err = JobError(kind="x", message="y")
                self.run(self.store.fail(m.id, m.token, err, self.now, worker=other))
            elif op == "progress":
                self.run(self.store.progress(m.id, m.token, 50.0, "half", self.now, worker=other))
            else:
                self.run(self.store.complete(m.id, m.token, "late", self.now, worker=other))
        assert self._snapshot(m.id) == before

    @rule(job_id=st.integers(10_000, 10_005))
    def unknown_job_is_not_found(self, job_id: int) -> None:
        with pytest.raises(JobNotFound):
            self.run(self.store.complete(job_id, 1, None, self.now))
        with pytest.raises(JobNotFound):
            self.run(self.store.cancel(job_id, self.now))
        assert self._snapshot(job_id) is None

    @rule(worker=st.sampled_from(WORKERS))
    def heartbeat(self, worker: str) -> None:
        beat = self.run(self.store.heartbeat(worker, self.now, LEASE))
        mine = {m.id: m.token for m in self._running() if m.holder == worker}
        assert beat.held == mine
        assert beat.cancel == sorted(i for i in mine if self.jobs[i].cancel)
        for i in mine:
            self.jobs[i].lease_until = self.now + LEASE

    @rule(seconds=st.sampled_from([0.5, 3.0, 6.0, 11.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        expired = self.run(self.store.expire(self.now))
        due = [m for m in self._running() if m.lease_until <= self.now]
        assert sorted(expired) == sorted(m.id for m in due)
        for m in sorted(due, key=lambda m: (m.lease_until, m.id)):
            self._lose(m)
        promoted = self.run(self.store.promote(self.now))
        ready = [m for m in self.jobs.values()
                 if m.state in (S.SCHEDULED, S.RETRYING) and m.run_at is not None
                 and m.run_at <= self.now]  # fmt: skip
        assert sorted(promoted) == sorted(m.id for m in ready)
        for m in sorted(ready, key=lambda m: (m.run_at or 0, m.id)):
            self._queue_again(m)

    @rule(worker=st.sampled_from(WORKERS), vanished=st.booleans())
    def release(self, worker: str, vanished: bool) -> None:
        released = self.run(self.store.release(worker, self.now, vanished=vanished))
        mine = sorted(m.id for m in self._running() if m.holder == worker)
        assert released == mine
        for i in mine:
            if vanished:
                self._lose(self.jobs[i])
            elif self.jobs[i].cancel:  # a cancel sticks through a hand-back
                self._finish(self.jobs[i], S.CANCELLED)
            else:
                self._queue_again(self.jobs[i])

    @precondition(lambda self: bool(self.jobs))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from(sorted(self.jobs.values(), key=lambda j: j.id)))
        if m.state in (S.SUCCEEDED, S.DEAD, S.CANCELLED):
            with pytest.raises(IllegalTransition):
                self.run(self.store.cancel(m.id, self.now))
            return
        state = self.run(self.store.cancel(m.id, self.now))
        if m.state is S.RUNNING:
            assert state is S.RUNNING
            m.cancel = True
        else:
            assert state is S.CANCELLED
            self._finish(m, S.CANCELLED)

    @precondition(lambda self: bool(self.jobs))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from(sorted(self.jobs.values(), key=lambda j: j.id)))
        if m.state not in (S.DEAD, S.CANCELLED):
            with pytest.raises(IllegalTransition):
                self.run(self.store.retry(m.id, self.now))
            return
        self.run(self.store.retry(m.id, self.now))
        m.failures = m.lost = 0
        m.finished_at = None
        self._queue_again(m)

    @rule(age=st.sampled_from([0.0, 5.0, 100.0]))
    def purge(self, age: float) -> None:
        gone = [m for m in self.jobs.values()
                if m.finished_at is not None and m.finished_at <= self.now - age]  # fmt: skip
        n = self.run(self.store.sweep(self.now, Retention(succeeded=age, failed=age)))
        assert n == len(gone)
        for m in gone:
            del self.jobs[m.id]
            assert self._snapshot(m.id) is None

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def store_agrees_with_the_model(self) -> None:
        stats = self.run(self.store.stats())
        counts = {s.value: 0 for s in JobState}
        for m in self.jobs.values():
            counts[m.state.value] += 1
        assert stats.by_state == counts  # counts add up, no job lost or invented
        listed = self.run(self.store.list(limit=1000))
        assert sorted(j.id for j in listed) == sorted(self.jobs)
        for job in listed:
            m = self.jobs[job.id]
            assert job.state is m.state, (job.id, job.state, m.state)
            assert (job.attempts, job.token) == (m.attempts, m.token)
            assert job.lost == m.lost
            if m.state is S.RUNNING:
                assert job.worker == m.holder

    @invariant()
    def no_job_held_by_two_workers(self) -> None:
        # every running job belongs to exactly one worker, the one the model says
        running = self.run(self.store.list(state=S.RUNNING, limit=1000))
        assert {j.id: j.worker for j in running} == {m.id: m.holder for m in self._running()}


def _machine_for(backend: str) -> Any:
    machine = type(f"StoreMachine_{backend}", (StoreMachine,), {"backend_name": backend})
    machine.TestCase.settings = settings(
        max_examples=2000 if SOAK else 200,
        stateful_step_count=60 if SOAK else 40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    return machine.TestCase


for _name in BACKENDS:
    globals()[f"TestStoreMachine_{_name}"] = _machine_for(_name)
