"""The embedded store does bounded work per writer operation, whatever is stored:
every operation runs on the one writer thread, so an unbounded one stalls every
client. Checked structurally (what one operation may touch), never by the clock."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from distqueue.jobs import Job, JobSpec, JobState
from distqueue.policy import Retention
from distqueue.store.sqlite import BATCH, SQLiteStore
from distqueue.store.sqlite_rows import SMALL_READ

T0 = 1_000_000.0


async def test_one_claim_operation_ends_at_most_a_batch_of_expired_jobs(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path, synchronous="OFF")
    try:
        n = 2 * BATCH + 500
        await store.enqueue([JobSpec(type="t", deadline=T0 + 1) for _ in range(n)], T0)
        [live] = await store.enqueue([JobSpec(type="t")], T0)
        # one operation: ends BATCH of them, takes nothing yet, says "go on"
        assert await store._writer.call(store._op_claim, "w", 1, T0 + 5, None, None, 30.0) is None
        # the public claim goes on in bounded operations until it finds the live job
        [job] = await store.claim("w", 1, T0 + 5)
        assert job.id == live.id
        stats = await store.stats()
        assert stats.by_state["dead"] == n and stats.totals["expired"] == n
    finally:
        await store.close()


async def test_promote_expire_and_purge_move_a_batch_per_operation(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path, synchronous="OFF")
    try:
        n = 2 * BATCH + 7
        ids = [e.id for e in await store.enqueue(
            [JobSpec(type="t", run_at=T0 + 1) for _ in range(n)], T0)]  # fmt: skip
        assert (
            len(await store._writer.call(store._op_promote, T0 + 1, BATCH)) == BATCH
        )  # one bounded operation
        assert sorted(await store.promote(T0 + 1)) == ids[BATCH:]
        jobs = await store.claim("w", n, T0 + 1, lease=1)
        assert len(jobs) == n
        assert len(await store._writer.call(store._op_expire, T0 + 3, BATCH)) == BATCH
        assert len(await store.expire(T0 + 3)) == n - BATCH
        jobs = await store.claim("w", n, T0 + 3)
        for job in jobs:
            await store.complete(job.id, job.token, None, T0 + 3)
        keep = Retention(succeeded=1, failed=1)
        assert await store._writer.call(store._op_sweep, T0 + 10, keep, BATCH) == BATCH
        assert await store.sweep(T0 + 10, keep) == n - BATCH
        assert (await store.stats()).by_state == {s.value: 0 for s in JobState}
    finally:
        await store.close()


async def test_a_claim_forgets_queue_type_pairs_that_emptied(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path, synchronous="OFF")
    try:
        await store.enqueue([JobSpec(type=f"type-{i}") for i in range(300)], T0)
        assert len(await store.claim("w", 300, T0)) == 300
        assert len(await store.claim("w", 1, T0)) == 0
        # 300 one-off types leave nothing for the next claims to walk
        assert store._ready._queues == {}
    finally:
        await store.close()


class _SlowReads(SQLiteStore):
    """The embedded store, its reads held at a gate: a read that takes long (a big
    payload, a slow disk) for as long as the test likes."""

    gate: threading.Event
    reading: threading.Event

    def _read_get(self, jid: int) -> Job | None:
        self.reading.set()
        self.gate.wait(30)
        return super()._read_get(jid)


async def test_a_long_read_does_not_hold_up_writes(tmp_path: Path) -> None:
    store = await _SlowReads.open(tmp_path, synchronous="OFF")
    store.gate, store.reading = threading.Event(), threading.Event()
    try:
        [first] = await store.enqueue([JobSpec(type="t", payload=b"x" * 1_000_000)], T0)
        read = asyncio.ensure_future(store.get(first.id))
        await asyncio.get_running_loop().run_in_executor(None, store.reading.wait, 10)
        # the read is under way (and held): writes still go through
        [second] = await asyncio.wait_for(store.enqueue([JobSpec(type="t")], T0), 10)
        assert await asyncio.wait_for(store.cancel(second.id, T0), 10) is JobState.CANCELLED
        assert not read.done()
        store.gate.set()
        job = await asyncio.wait_for(read, 10)
        # it saw what was queued before it: the job queued, with its payload
        assert (
            job is not None
            and job.state is JobState.QUEUED
            and len(job.payload or b"") == 1_000_000
        )
    finally:
        store.gate.set()
        await store.close()


class _CountedReads(SQLiteStore):
    """The embedded store, counting its reads of a job on a reader thread."""

    threaded = 0

    def _read_get(self, jid: int) -> Job | None:
        self.threaded += 1
        return super()._read_get(jid)


async def test_a_small_job_is_read_on_the_loop_and_a_big_one_on_a_reader_thread(
    tmp_path: Path,
) -> None:
    store = await _CountedReads.open(tmp_path, synchronous="OFF")
    try:
        small, bare = await store.enqueue(
            [JobSpec(type="t", payload=b"x" * SMALL_READ), JobSpec(type="t")], T0
        )
        job = await store.get(small.id)
        assert job is not None and len(job.payload or b"") == SMALL_READ
        assert store.threaded == 0  # nothing pending, small: read right here
        [claimed] = await store.claim("w", 1, T0)
        assert claimed.id == small.id
        await store.complete(small.id, claimed.token, b"r" * (SMALL_READ + 1), T0)
        job = await store.get(small.id)  # its result is big now: a reader thread
        assert job is not None and job.result == b"r" * (SMALL_READ + 1)
        assert store.threaded == 1
        assert (await store.get(bare.id)) is not None and store.threaded == 1
        assert await store.get(10**9) is None and store.threaded == 1
    finally:
        await store.close()
