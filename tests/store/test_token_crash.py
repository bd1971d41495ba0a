"""A claim is answered before its group commits (docs/lifecycle.md, Durability). A
process that dies in that window must not hand the same fencing token out again
after the restart: the worker that got it would otherwise have its late result
accepted over the real holder's. The crash is put exactly in that window: the
child's commit kills the process (os._exit) once the claim has been answered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distqueue.errors import LeaseLost
from distqueue.jobs import JobSpec, JobState
from distqueue.store.sqlite import SQLiteStore

T0 = 1_000_000.0

CHILD = r"""
import asyncio, os, sys, threading
from distqueue.store.sqlite import SQLiteStore

async def main(data):
    store = await SQLiteStore.open(data)
    answered = threading.Event()
    def crash():  # the process dies between the claim's answer and its commit
        answered.wait(10)
        os._exit(9)
    store._writer._commit = crash
    [job] = await store.claim("w-old", 1, 1_000_001.0, lease=60)
    print(job.id, job.token, flush=True)
    answered.set()
    await asyncio.sleep(10)  # the commit after the answer kills the process first

asyncio.run(main(sys.argv[1]))
"""


async def test_a_claim_lost_in_a_crash_never_gives_its_token_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = await SQLiteStore.open(data)
    [queued] = await store.enqueue([JobSpec(type="t")], T0)
    await store.close()

    child = subprocess.run([sys.executable, "-c", CHILD, str(data)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert child.returncode == 9, child.stderr
    job_id, old_token = map(int, child.stdout.split())
    assert job_id == queued.id

    store = await SQLiteStore.open(data)
    try:
        job = await store.get(job_id)
        assert job is not None and job.state is JobState.QUEUED  # the claim never committed
        [again] = await store.claim("w-new", 1, T0 + 2)
        assert again.id == job_id and again.attempts == 1  # the same attempt, again...
        assert again.token != old_token  # ...under a token never handed out before
        with pytest.raises(LeaseLost):  # the dead process's worker is refused
            await store.complete(job_id, old_token, "late", T0 + 3)
        await store.complete(job_id, again.token, "mine", T0 + 3)
        done = await store.get(job_id)
        assert done is not None and (done.state, done.result) == (JobState.SUCCEEDED, "mine")
    finally:
        await store.close()


async def test_every_open_starts_a_new_epoch(tmp_path: Path) -> None:
    tokens = []
    for _ in range(3):
        store = await SQLiteStore.open(tmp_path)
        await store.enqueue([JobSpec(type="t")], T0)
        [job] = await store.claim("w", 1, T0)
        tokens.append(job.token)
        await store.close()
    assert tokens == [1, (1 << 32) | 1, (2 << 32) | 1]
