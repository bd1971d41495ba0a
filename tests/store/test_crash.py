"""The embedded store killed with SIGKILL at random moments, again and again.

A child process enqueues, claims, completes and fails jobs in a loop, printing
each acknowledged call as it returns. The parent kills it at a random instant,
reopens the store and checks that every acknowledged change is there, that the
file is consistent, and that the store still works; then the next round starts
on the same data. A second thread enqueues on an event loop of its own meanwhile,
so operations queued to the writer thread mix with those run inline (on the
caller's thread when the writer is idle: ``--durability normal``, see
store/writer.py); both durabilities are killed (a process kill loses nothing
committed either way: the OS holds what was written).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distqueue.jobs import JobState
from distqueue.store.sqlite import DB_NAME, SQLiteStore

ROUNDS = 100 if os.environ.get("DISTQUEUE_SOAK") == "1" else 12

CHILD = r"""
import asyncio, random, sys, threading, time
from distqueue.jobs import JobError, JobSpec
from distqueue.store.sqlite import SQLiteStore

said = threading.Lock()

def say(*words):
    with said:
        sys.stdout.write(" ".join(map(str, words)) + "\n")
        sys.stdout.flush()

async def other(store, seed):
    # enqueues from another thread's loop, beside the main loop's calls
    n = 0
    while True:
        specs = [JobSpec(type="t", args=[n], unique_key=f"b{seed}-{n}")]
        n += 1
        ids = [e.id for e in await store.enqueue(specs, time.time())]
        say("B", *ids)

async def main(data, seed, synchronous):
    rng = random.Random(seed)
    store = await SQLiteStore.open(data, synchronous=synchronous)
    say("R")  # (first: the parent reads it before anything else)
    threading.Thread(target=asyncio.run, args=(other(store, seed),), daemon=True).start()
    n = 0
    while True:
        specs = [JobSpec(type="t", args=[n + i], unique_key=f"k{seed}-{n + i}")
                 for i in range(rng.randint(1, 20))]
        n += len(specs)
        ids = [e.id for e in await store.enqueue(specs, time.time())]
        say("E", *ids)
        for job in await store.claim("child", rng.randint(1, 10), time.time()):
            if rng.random() < 0.8:
                await store.complete(job.id, job.token, job.id * 2, time.time())
                say("C", job.id)
            elif rng.random() < 0.5:
                await store.fail(job.id, job.token, JobError(kind="x", message="m"),
                                 time.time(), retryable=False)
                say("F", job.id)
            # else: left running, as a worker that dies would

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


def _run_child(data: Path, seed: int, rng: random.Random, synchronous: str) -> list[str]:
    """Start the child, let it work a random while, SIGKILL it; return its lines."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(seed), synchronous],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if first != b"R\n":  # (its stderr read after a kill: it may still be running)
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError((first, err))
    time.sleep(rng.uniform(0.05, 0.5))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    text = out.decode()
    # a line cut by the kill has no newline: it was never a complete acknowledgement
    lines = text.split("\n")
    return [line for line in lines[:-1] if line]  # the last piece is "" or a cut line


def _file_counts(data: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    finally:
        db.close()


async def _check(data: Path, lines: list[str], seen: set[int]) -> set[int]:
    enqueued: list[int] = []
    other: list[int] = []  # the second thread's
    completed, failed = set(), set()
    for line in lines:
        kind, *ids = line.split()
        if kind == "E":
            enqueued += [int(i) for i in ids]
        elif kind == "B":
            other += [int(i) for i in ids]
        elif kind == "C":
            completed.add(int(ids[0]))
        elif kind == "F":
            failed.add(int(ids[0]))
    # ids never go back: this round's are all new, in each thread's order
    assert enqueued == sorted(enqueued) and other == sorted(other)
    assert not set(enqueued) & set(other)
    enqueued += other
    assert not set(enqueued) & seen

    store = await SQLiteStore.open(data)
    try:
        for job_id in enqueued:
            job = await store.get(job_id)
            assert job is not None, f"acknowledged job {job_id} lost"
        for job_id in completed:
            job = await store.get(job_id)
            assert job is not None and job.state is JobState.SUCCEEDED
            assert job.result == job_id * 2
        for job_id in failed:
            job = await store.get(job_id)
            assert job is not None and job.state is JobState.DEAD
        stats = await store.stats()
        # the counts the store rebuilt on open agree with the file
        assert {k: v for k, v in stats.by_state.items() if v} == _file_counts(data)
        # the store is usable: take back the dead child's leases, run everything
        now = time.time() + 3600
        await store.expire(now)
        while jobs := await store.claim("checker", 100, now):
            for job in jobs:
                await store.complete(job.id, job.token, job.id * 2, now)
        after = await store.stats()
        assert after.by_state["queued"] == after.by_state["running"] == 0
    finally:
        await store.close()
    # the file agrees with the counts the store kept, and is sound
    db = sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        ids = [row[0] for row in db.execute("SELECT id FROM jobs")]
    finally:
        db.close()
    assert {k: v for k, v in after.by_state.items() if v} == counts
    assert len(ids) == len(set(ids))
    return seen | set(enqueued)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    tmp_path: Path, synchronous: str
) -> None:
    rng = random.Random(int(os.environ.get("DISTQUEUE_CRASH_SEED", "7")))
    data = tmp_path / "data"
    seen: set[int] = set()
    acknowledged = other = 0
    for round_ in range(ROUNDS):
        lines = _run_child(data, round_, rng, synchronous)
        acknowledged += sum(1 for line in lines if line[:1] in "ECF")
        other += sum(1 for line in lines if line[:1] == "B")
        seen = asyncio.run(_check(data, lines, seen))
    # the kills landed while work was going on, on both threads
    assert acknowledged > ROUNDS and other > ROUNDS
