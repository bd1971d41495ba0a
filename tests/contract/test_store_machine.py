"""A hypothesis state machine against every store backend and a model kept in the test.

Random sequences of enqueue, claim, complete, fail, heartbeat, clock moves,
expire, promote, release, cancel, retry and purge; after every step the store
must agree with the model: no job lost, none held by two workers, a stale token
never changes anything, hand-out order is priority then FIFO, counts add up.

Workflows and flow control (#14) too: jobs enqueued ``after`` others wait, and move
on (queued, scheduled, or cancelled in a cascade) when whatever finishes the last
of them runs; a concurrency limit on one type and paused queues hold jobs back,
and the model predicts exactly which jobs a claim hands out past them.

FIFO among jobs that became queued in one store operation is exact where the
contract fixes it (an enqueue's specs, the jobs an expire, release or promote puts
back); the waiters one operation releases are tied with each other and with the
jobs it queued (the contract leaves their relative order open): a claim may hand
out any of a tied group first, never a job behind one it skipped.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from distqueue.errors import IllegalTransition, InvalidJob, JobNotFound, LeaseLost
from distqueue.jobs import JobError, JobSpec, JobState
from distqueue.policy import Retention, RetryPolicy
from distqueue.store.base import Limit
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
#: the type the concurrency limit (rule set_concurrency) applies to
LIMITED = "ta"
#: a released waiter's place within its operation: tied with the others (see above)
TIED = -1
FINISHED = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)

#: priorities: mostly distqueue's own 0..10, sometimes far beyond (up to 2**32-1, the
#: range beanstalkd's clients use), ties with each other included
PRIORITY = st.one_of(st.integers(0, 10), st.integers(0, 10), st.integers(0, 10),
                     st.sampled_from([1024, 65536, 2**31, 2**32 - 2, 2**32 - 1]))  # fmt: skip

#: specs of enqueue: (queue, type, priority, max_retries, key, delay, payload size)
PLAIN = st.lists(
    st.tuples(st.sampled_from(QUEUES), st.sampled_from(TYPES), PRIORITY,
              st.integers(0, 2), st.sampled_from([None, None, "k1", "k2", "k3"]),
              st.sampled_from([0.0, 0.0, 0.0, 5.0]), st.sampled_from(SIZES)),
    min_size=1, max_size=4,
)  # fmt: skip
#: specs of enqueue_after: (queue, type, priority, max_retries, key, delay, on_failure)
AFTER = st.lists(
    st.tuples(st.sampled_from(QUEUES), st.sampled_from(TYPES), PRIORITY,
              st.integers(0, 2), st.sampled_from([None, None, None, "k1", "w1"]),
              st.sampled_from([0.0, 0.0, 0.0, 5.0]),
              st.sampled_from(["cancel", "cancel", "run"])),
    min_size=1, max_size=2,
)  # fmt: skip


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
    #: its place in FIFO: (the operation that queued it, its order in it or TIED)
    seq: tuple[int, int] = (0, 0)
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
    #: JobSpec.after and on_failure
    after: tuple[int, ...] = ()
    on_failure: str = "cancel"
    #: waiting: the jobs of ``after`` not finished yet
    pending: set[int] = field(default_factory=set)
    #: waiting: one of ``after`` ended dead or cancelled
    dep_failed: bool = False
    #: its spec's run_at (a waiting job becomes scheduled when released before it)
    due: float | None = None


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
        #: the operation (counted) and the order within it of the last job queued
        self.op = 0
        self.k = 0
        #: the concurrency limit on LIMITED (None: none), and the paused queues
        self.conc: int | None = None
        self.paused: set[str] = set()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.backend.close_all())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------

    def _new_op(self) -> None:
        """A store operation starts: what it queues goes behind all queued before."""
        self.op += 1
        self.k = 0

    def _queue_again(self, m: M, *, tied: bool = False) -> None:
        self.k += 1
        m.seq = (self.op, TIED if tied else self.k)
        m.state, m.holder, m.run_at, m.cancel = S.QUEUED, None, None, False

    def _finish(self, m: M, state: JobState) -> None:
        m.state, m.holder, m.run_at, m.finished_at = state, None, None, self.now
        m.pending.clear()  # (a waiting job cancelled waits no more)
        self._release(m, state)

    def _release(self, dep: M, state: JobState) -> None:
        """``dep`` finished in ``state``: the jobs waiting for it move on, in the same
        operation (and those cancelled so move their own waiters on in turn)."""
        failed = state is not S.SUCCEEDED
        for w in sorted(self.jobs.values(), key=lambda j: j.id):
            if w.state is not S.WAITING or dep.id not in w.pending:
                continue
            w.pending.discard(dep.id)
            w.dep_failed |= failed
            if w.dep_failed and w.on_failure == "cancel":
                self._finish(w, S.CANCELLED)
            elif not w.pending:
                self._wake(w, tied=True)

    def _wake(self, m: M, *, tied: bool) -> None:
        """A job whose dependencies are done: queued, or scheduled if its run_at is ahead."""
        if m.due is not None and m.due > self.now:
            m.state, m.run_at = S.SCHEDULED, m.due
        else:
            self._queue_again(m, tied=tied)

    @staticmethod
    def _ahead(a: M, b: M) -> bool:
        """``a`` must be handed out before ``b`` (both queued)."""
        if a.priority != b.priority:
            return a.priority < b.priority
        if a.seq[0] != b.seq[0]:
            return a.seq[0] < b.seq[0]
        return TIED not in (a.seq[1], b.seq[1]) and a.seq[1] < b.seq[1]

    def _blocked(self, m: M, handed: int) -> bool:
        """Flow control holds ``m`` back (``handed``: LIMITED jobs this claim handed out)."""
        if m.queue in self.paused:
            return True
        if m.type != LIMITED or self.conc is None:
            return False
        running = sum(1 for j in self._running() if j.type == LIMITED)
        return running + handed >= self.conc

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

    @initialize(data=st.data(), plain=PLAIN, after=AFTER, then=AFTER)
    def workflow(self, data: st.DataObject, plain: Any, after: Any, then: Any) -> None:
        """Every run starts with jobs, jobs waiting for them, and jobs waiting for those."""
        self._enqueue(plain)
        self._enqueue_after(data, after, unknown=False)
        self._enqueue_after(data, then, unknown=False)

    @rule(specs=PLAIN)
    def enqueue(self, specs: list[tuple[str, str, int, int, str | None, float, int]]) -> None:
        self._enqueue(specs)

    def _enqueue(self, specs: list[tuple[str, str, int, int, str | None, float, int]]) -> None:
        job_specs = [
            JobSpec(type=t, queue=q, priority=p, max_retries=r, unique_key=k,
                    run_at=self.now + d if d else None, payload=b"x" * z if z else None)
            for q, t, p, r, k, d, z in specs
        ]  # fmt: skip
        self._new_op()
        results = self.run(self.store.enqueue(job_specs, self.now))
        assert len(results) == len(specs)
        keys = {m.key: m.id for m in self.jobs.values() if m.key is not None}
        for (q, t, p, r, k, d, z), res in zip(specs, results, strict=True):
            if k is not None and k in keys:
                assert not res.created and res.id == keys[k]
                assert res.state is self.jobs[res.id].state
                continue
            assert res.created and res.id not in self.jobs
            m = M(id=res.id, queue=q, type=t, priority=p, max_retries=r, key=k,
                  state=S.SCHEDULED if d else S.QUEUED, size=z)  # fmt: skip
            if d:
                m.run_at = self.now + d
            else:
                self._queue_again(m)
            assert res.state is m.state
            self.jobs[res.id] = m
            if k is not None:
                keys[k] = res.id

    @precondition(lambda self: bool(self.jobs))
    @rule(data=st.data(), specs=AFTER, unknown=st.sampled_from([False] * 9 + [True]))
    def enqueue_after(
        self,
        data: st.DataObject,
        specs: list[tuple[str, str, int, int, str | None, float, str]],
        unknown: bool,
    ) -> None:
        self._enqueue_after(data, specs, unknown)

    def _enqueue_after(
        self,
        data: st.DataObject,
        specs: list[tuple[str, str, int, int, str | None, float, str]],
        unknown: bool,
    ) -> None:
        """Specs that wait for jobs already stored (any state), each for 1-3 of them."""
        # unfinished jobs most often (running ones first: they finish soonest), so
        # that waiters get released
        pick = st.sampled_from(sorted(self.jobs))
        for group in ([m for m in self.jobs.values() if m.state not in FINISHED],
                      self._running()):  # fmt: skip
            if group:
                pick = st.one_of(st.sampled_from(sorted(m.id for m in group)), pick)
        afters = [
            tuple(data.draw(st.lists(pick, min_size=1, max_size=3, unique=True))) for _ in specs
        ]
        job_specs = [
            JobSpec(type=t, queue=q, priority=p, max_retries=r, unique_key=k,
                    run_at=self.now + d if d else None, after=after, on_failure=f)
            for (q, t, p, r, k, d, f), after in zip(specs, afters, strict=True)
        ]  # fmt: skip
        if unknown:  # a job that does not exist: the whole call is refused
            spoiled = data.draw(st.integers(0, len(job_specs) - 1))
            bad = job_specs[spoiled]
            job_specs[spoiled] = JobSpec(type=bad.type, queue=bad.queue, after=(*bad.after, 10_007))
            before = self.run(self.store.stats()).by_state
            with pytest.raises(InvalidJob):
                self.run(self.store.enqueue(job_specs, self.now))
            assert self.run(self.store.stats()).by_state == before
            return
        self._new_op()
        results = self.run(self.store.enqueue(job_specs, self.now))
        assert len(results) == len(specs)
        keys = {m.key: m.id for m in self.jobs.values() if m.key is not None}
        for (q, t, p, r, k, d, f), after, res in zip(specs, afters, results, strict=True):
            if k is not None and k in keys:
                assert not res.created and res.id == keys[k]
                assert res.state is self.jobs[res.id].state
                continue
            assert res.created and res.id not in self.jobs
            deps = [self.jobs[i] for i in after]
            m = M(id=res.id, queue=q, type=t, priority=p, max_retries=r, key=k,
                  state=S.WAITING, after=after, on_failure=f,
                  due=self.now + d if d else None)  # fmt: skip
            m.pending = {j.id for j in deps if j.state not in FINISHED}
            m.dep_failed = any(j.state in (S.DEAD, S.CANCELLED) for j in deps)
            self.jobs[res.id] = m
            if m.dep_failed and f == "cancel":
                m.state, m.finished_at = S.CANCELLED, self.now
                m.pending.clear()
            elif not m.pending:
                self._wake(m, tied=False)
            assert res.state is m.state, (res, m)
            job = self._snapshot(res.id)
            assert (job.after, job.on_failure, job.pass_results) == (after, f, False)
            if k is not None:
                keys[k] = res.id

    @rule(conc=st.sampled_from([None, 1, 2]))
    def set_concurrency(self, conc: int | None) -> None:
        limit = Limit(scope="type", name=LIMITED, concurrency=conc)
        self.run(self.store.set_limit(limit))
        self.conc = conc
        assert self.run(self.store.limits()) == ([] if conc is None else [limit])

    @rule(queue=st.sampled_from(QUEUES), paused=st.booleans())
    def pause(self, queue: str, paused: bool) -> None:
        self.run(self.store.pause(queue, paused))
        if paused:
            self.paused.add(queue)
        else:
            self.paused.discard(queue)
        assert self.run(self.store.paused()) == sorted(self.paused)

    @rule(
        worker=st.sampled_from(WORKERS),
        n=st.integers(1, 4),
        queues=st.sampled_from([None, ("qa",), ("qb",)]),
        types=st.sampled_from([None, ("ta",), ("tb",), ("ta", "tb")]),
        max_bytes=st.sampled_from([None, None, 0, 150, 5000, 12_000]),
    )
    def claim(self, worker: str, n: int, queues: Any, types: Any, max_bytes: int | None) -> None:
        self._claim(worker, n, queues, types, max_bytes)

    @rule(worker=st.sampled_from(WORKERS), n=st.integers(1, 4), fail=st.booleans())
    def work(self, worker: str, n: int, fail: bool) -> None:
        """A worker's round: claim, then complete (or fail for good) what it got."""
        for job_id in self._claim(worker, n, None, None, None):
            m = self.jobs[job_id]
            self._new_op()
            if fail:
                err = JobError(kind="boom", message="m")
                out = self.run(self.store.fail(m.id, m.token, err, self.now, retryable=False))
                m.failures += 1
                assert out.state is (S.CANCELLED if m.cancel else S.DEAD)
                self._finish(m, out.state)
            else:
                self.run(self.store.complete(m.id, m.token, None, self.now))
                self._finish(m, S.SUCCEEDED)

    def _claim(
        self, worker: str, n: int, queues: Any, types: Any, max_bytes: int | None
    ) -> list[int]:
        """Claim, check what was handed out against the model; the ids claimed."""
        left = [
            m
            for m in self.jobs.values()
            if m.state is S.QUEUED
            and (queues is None or m.queue in queues)
            and (types is None or m.type in types)
        ]
        got = self.run(self.store.claim(worker, n, self.now, queues=queues, types=types,
                                        lease=LEASE, max_bytes=max_bytes))  # fmt: skip
        # priority first, FIFO within a priority, only what the worker serves, nothing
        # flow control holds back (a paused queue, LIMITED at its limit) — and the jobs
        # it holds back hold up nothing behind them
        assert len(got) <= n
        handed = total = 0

        def first() -> list[M]:
            """The jobs the claim may hand out next: none ahead of them is left."""
            open_ = [m for m in left if not self._blocked(m, handed)]
            return [m for m in open_ if not any(self._ahead(o, m) for o in open_)]

        for i, job in enumerate(got):
            m = self.jobs.get(job.id)
            assert m is not None and m in first(), (job.id, [c.id for c in first()])
            total += m.size
            # up to the first job past the byte budget, one at least
            assert not i or max_bytes is None or total <= max_bytes
            left.remove(m)
            handed += m.type == LIMITED
        if len(got) < n and first():  # it stopped early: only at the byte budget
            assert got and max_bytes is not None
            assert any(total + m.size > max_bytes for m in first()), [m.id for m in first()]
        for job in got:
            m = self.jobs[job.id]
            # a new token at every claim, greater than any the job had before
            assert job.attempts == m.attempts + 1 and job.token > m.token
            m.state, m.attempts, m.token, m.holder = S.RUNNING, job.attempts, job.token, worker
            m.lease_until = self.now + LEASE
        return [j.id for j in got]

    @precondition(lambda self: bool(self._running()))
    @rule(data=st.data(), result=st.sampled_from([None, 1, "x", {"a": [1]}, b"\x00bytes"]))
    def complete(self, data: st.DataObject, result: Any) -> None:
        m = data.draw(st.sampled_from(self._running()))
        self._new_op()
        self.run(self.store.complete(m.id, m.token, result, self.now))
        self._finish(m, S.SUCCEEDED)
        assert self._snapshot(m.id).result == result

    @precondition(lambda self: bool(self._running()))
    @rule(data=st.data(), stale=st.booleans())
    def complete_many(self, data: st.DataObject, stale: bool) -> None:
        """Pipelined ACKs: each item on its own, in order; their waiters move on too."""
        ms = data.draw(st.lists(st.sampled_from(self._running()), min_size=1, max_size=3,
                                unique_by=lambda m: m.id))  # fmt: skip
        items = [(m.id, m.token, m.id) for m in ms]
        if stale:  # the first again: refused, it is done by then
            items.append(items[0])
        self._new_op()
        errors = self.run(self.store.complete_many(items, self.now))
        assert [type(e).__name__ if e else None for e in errors] == (
            [None] * len(ms) + ["LeaseLost"] * stale
        )
        for m in ms:
            self._finish(m, S.SUCCEEDED)

    @precondition(lambda self: bool(self._running()))
    @rule(data=st.data(), retryable=st.booleans(), kind=st.sampled_from(["boom", "cancelled"]))
    def fail(self, data: st.DataObject, retryable: bool, kind: str) -> None:
        m = data.draw(st.sampled_from(self._running()))
        self._new_op()
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
        self._new_op()
        expired = self.run(self.store.expire(self.now))
        due = [m for m in self._running() if m.lease_until <= self.now]
        assert sorted(expired) == sorted(m.id for m in due)
        for m in sorted(due, key=lambda m: (m.lease_until, m.id)):
            self._lose(m)
        self._new_op()
        promoted = self.run(self.store.promote(self.now))
        ready = [m for m in self.jobs.values()
                 if m.state in (S.SCHEDULED, S.RETRYING) and m.run_at is not None
                 and m.run_at <= self.now]  # fmt: skip
        assert sorted(promoted) == sorted(m.id for m in ready)
        for m in sorted(ready, key=lambda m: (m.run_at or 0, m.id)):
            self._queue_again(m)

    @rule(worker=st.sampled_from(WORKERS), vanished=st.booleans())
    def release(self, worker: str, vanished: bool) -> None:
        self._new_op()
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
        self._new_op()
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
        self._new_op()
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


#: examples a CI run gives each backend (DISTQUEUE_SOAK=1: 2000 each): the network
#: backends cost more per step, and share the logic the embedded store runs most
EXAMPLES = {"sqlite": 150, "redis": 100, "redis-cluster": 60, "postgres": 60}


def _machine_for(backend: str) -> Any:
    machine = type(f"StoreMachine_{backend}", (StoreMachine,), {"backend_name": backend})
    machine.TestCase.settings = settings(
        max_examples=2000 if SOAK else EXAMPLES.get(backend, 60),
        stateful_step_count=60 if SOAK else 40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    return machine.TestCase


for _name in BACKENDS:
    globals()[f"TestStoreMachine_{_name}"] = _machine_for(_name)
