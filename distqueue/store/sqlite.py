"""The embedded store: one SQLite file in a data directory, owned by one process.

Shape (see writer.py): every operation runs on the store's writer thread, which
owns the connection and the in-memory indexes, and commits operations in groups.
The indexes make the hot paths cheap — a claim pops from per-(queue, type,
priority) FIFO deques instead of scanning the table — and are rebuilt from the
file on open, so the file alone is the truth (of all but the worker registry,
which is liveness only and lives in memory: see ``note_worker``). WAL mode with
``synchronous=FULL`` (the default): an operation that returned is on disk, and a
process killed at any instant reopens to a consistent state (every committed
group, nothing else).
"""

from __future__ import annotations

import builtins
import fcntl
import heapq
import os
import random
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from distqueue import codec
from distqueue.errors import (
    DistQueueError,
    IllegalTransition,
    InvalidJob,
    JobNotFound,
    LeaseLost,
    StoreError,
)
from distqueue.jobs import TERMINAL_STATES, Job, JobError, JobSpec, JobState, check_name
from distqueue.lifecycle import check_transition
from distqueue.policy import DEFAULT_LEASE, DEFAULT_POISON_LIMIT, Retention, RetryPolicy
from distqueue.store.base import (
    MAX_WORKERS,
    WORKER_JOBS,
    WORKERS_PURGE,
    Enqueued,
    FailOutcome,
    Heartbeat,
    Stats,
    WorkerRecord,
)
from distqueue.store.checks import (
    check_claim,
    check_id,
    check_list,
    check_specs,
    check_worker,
    check_worker_info,
    check_workers,
    encode_result,
)
from distqueue.store.memindex import SMALL_JOB, ReadyQueues, Schedule
from distqueue.store.sqlite_rows import FULL_COLS, SUMMARY_COLS, Running, job_from_row
from distqueue.store.writer import Writer

__all__ = ["SQLiteStore"]

T = TypeVar("T")

S = JobState
DB_NAME = "distqueue.db"
LOCK_NAME = "distqueue.lock"
SCHEMA_VERSION = 2
#: a token is ``(epoch - 1) << EPOCH_SHIFT | attempts``: the epoch grows at every open
#: and every recovery, so a claim answered before a commit that never happened cannot
#: hand its token out again (a new store's first run has tokens = attempts: 1, 2, ...)
EPOCH_SHIFT = 32
#: the most jobs one promote or expire operation moves, and one purge deletes
BATCH = PURGE_BATCH = 1000
#: a job's size as a claim's byte budget counts it: its stored args plus its payload
SIZE = "ifnull(length(args), 0) + ifnull(length(payload), 0)"
#: the most ids one query of a claim's byte budget looks up (SQLite's variable limit)
SIZE_LOOKUP = 500
TOTALS = (
    "submitted", "succeeded", "failed", "retried", "dead", "cancelled", "lost", "expired",
    "purged",
)  # fmt: skip


#: the states the partial index jobs_state covers (sqlite_schema.sql)
INDEXED_STATES = frozenset({"scheduled", "retrying", "dead", "cancelled"})


class SQLiteStore:
    """The embedded durable store. Open with ``await SQLiteStore.open(data_dir)``."""

    #: operations called one after another (each reaching its first await) run in
    #: that order: one writer thread takes them from one queue. The server relies on
    #: it to let a FETCH's claim follow a SUBMIT's enqueue without waiting for it.
    serial = True

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        retry_policy: RetryPolicy | None = None,
        poison_limit: int = DEFAULT_POISON_LIMIT,
        synchronous: str = "FULL",
        rng: random.Random | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self.retry_policy = retry_policy or RetryPolicy()
        self.poison_limit = poison_limit
        if synchronous.upper() not in ("FULL", "NORMAL", "OFF"):
            raise ValueError("synchronous must be FULL, NORMAL or OFF")
        self._synchronous = synchronous.upper()
        self._rng = rng or random.Random()
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._writer = Writer(
            f"distqueue-sqlite:{self.path}",
            begin=self._begin, commit=self._commit, rollback=self._rollback,
            recover=self._recover,
        )  # fmt: skip
        # -- in-memory indexes, touched only on the writer thread --
        self._ready = ReadyQueues()
        self._schedule = Schedule()
        self._running: dict[int, Running] = {}
        self._by_worker: dict[str, set[int]] = {}
        #: (lease_until, id, token); stale entries are skipped by expire
        self._lease_heap: list[tuple[float, int, int]] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._totals = dict.fromkeys(TOTALS, 0)
        self._next_id = 1
        self._next_seq = 1
        self._meta_dirty = False
        #: the worker registry: id -> (seen, info as JSON); in memory only (see
        #: note_worker), so _recover leaves it be
        self._workers: dict[str, tuple[float, bytes]] = {}
        #: (this run's epoch - 1) << EPOCH_SHIFT (see EPOCH_SHIFT)
        self._epoch_base = 0
        #: the reader threads' connections (see _reader)
        self._local = threading.local()
        self._readers_lock = threading.Lock()
        self._reader_conns: list[sqlite3.Connection] = []

    @classmethod
    async def open(cls, data_dir: str | os.PathLike[str], **options: Any) -> SQLiteStore:
        """Open (creating if needed) the store in ``data_dir``.

        Raises StoreError if another process has the directory open, or the file is
        not a distqueue database.
        """
        store = cls(data_dir, **options)
        await store._writer.start(store._setup, store._teardown)
        return store

    async def close(self) -> None:
        await self._writer.close()

    # -- the writer thread's own plumbing ----------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    def _setup(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{self.data_dir} is in use by another distqueue process") from None
        self._lock_fd = fd
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("PRAGMA cache_size=-65536")
            db.execute("PRAGMA temp_store=MEMORY")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer distqueue (v{version})")
            if version == 1:  # v2 added the token column (and the jobs_finished index)
                db.execute("ALTER TABLE jobs ADD COLUMN token INTEGER")
                # v1's tokens were the attempts: epoch 1's, so this run starts at 2
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', 1)")
            schema = resources.files("distqueue.store").joinpath("sqlite_schema.sql")
            db.executescript(schema.read_text())
            # when a job queued again (promote, release, expire, retry) became queued;
            # NULL for one queued by its enqueue (then created_at). A nullable column:
            # added in place (no rewrite), and the file stays readable by version 2
            if not any(col[1] == "queued_at" for col in db.execute("PRAGMA table_info(jobs)")):
                db.execute("ALTER TABLE jobs ADD COLUMN queued_at REAL")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._load()
            self._new_epoch()
        except sqlite3.DatabaseError as exc:
            self._teardown()
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        except BaseException:
            self._teardown()
            raise

    def _teardown(self) -> None:
        with self._readers_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self._meta_dirty:
            rows = [("next_id", self._next_id)] + [
                (f"total.{k}", v) for k, v in self._totals.items()
            ]
            self._conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)
            self._meta_dirty = False
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._db is not None and self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _new_epoch(self) -> None:
        """Start a new epoch, durably, before any claim of this run is answered."""
        db = self._conn
        row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        epoch = (row[0] if row else 0) + 1
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._epoch_base = (epoch - 1) << EPOCH_SHIFT

    def _recover(self) -> None:
        """After a failed batch (disk full, read-only file, I/O error): the file is
        the truth, so forget the in-memory state, load it again, and start a new
        epoch (claims answered in the failed batch hold tokens nobody can reuse).
        Raises while the file cannot be written yet; the writer tries again later."""
        self._rollback()
        self._ready = ReadyQueues()
        self._schedule = Schedule()
        self._running = {}
        self._by_worker = {}
        self._lease_heap = []
        self._counts = {}
        self._totals = dict.fromkeys(TOTALS, 0)
        self._meta_dirty = False
        self._load()
        self._new_epoch()

    def _load(self) -> None:
        """Rebuild the in-memory indexes from the file."""
        db = self._conn
        meta = dict(db.execute("SELECT key, value FROM meta"))
        max_id = db.execute("SELECT max(id) FROM jobs").fetchone()[0] or 0
        self._next_id = max(int(meta.get("next_id", 1)), max_id + 1)
        for key in TOTALS:
            self._totals[key] = int(meta.get(f"total.{key}", 0))
        self._next_seq = (db.execute("SELECT max(seq) FROM jobs").fetchone()[0] or 0) + 1
        for queue, state, count in db.execute(
            "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state"
        ):
            self._counts[(queue, state)] = count
        for jid, queue, type_, prio, seq, deadline, size in db.execute(
            f"SELECT id, queue, type, priority, seq, deadline, {SIZE} FROM jobs"
            " WHERE state = 'queued' ORDER BY seq"
        ):
            self._ready.push(jid, queue, type_, prio, seq, deadline, size)
        for jid, run_at, queue, type_, prio in db.execute(
            "SELECT id, run_at, queue, type, priority FROM jobs"
            " WHERE state IN ('scheduled', 'retrying')"
        ):
            self._schedule.push(jid, run_at, queue, type_, prio)
        for row in db.execute(
            "SELECT id, worker, coalesce(token, attempts), lease_until, cancel_requested, queue,"
            " type, priority, failures, max_retries, lost FROM jobs WHERE state = 'running'"
        ):
            self._add_running(row[0], Running(row[1:]))

    # -- index helpers (writer thread) ---------------------------------------------------

    def _count(self, queue: str, old: str | None, new: str | None) -> None:
        counts = self._counts
        if old is not None:
            counts[(queue, old)] -= 1
        if new is not None:
            counts[(queue, new)] = counts.get((queue, new), 0) + 1

    def _total(self, key: str, n: int = 1) -> None:
        self._totals[key] += n
        self._meta_dirty = True

    def _add_running(self, jid: int, r: Running) -> None:
        self._running[jid] = r
        self._by_worker.setdefault(r.worker, set()).add(jid)
        heapq.heappush(self._lease_heap, (r.lease_until, jid, r.token))

    def _drop_running(self, jid: int, r: Running) -> None:
        del self._running[jid]
        held = self._by_worker[r.worker]
        held.discard(jid)
        if not held:
            del self._by_worker[r.worker]

    def _holder(self, jid: int, token: int, worker: str | None) -> Running:
        r = self._running.get(jid)
        if r is None or r.token != token or (worker is not None and r.worker != worker):
            if r is None and self._state(jid) is None:
                raise JobNotFound(jid)
            raise LeaseLost(jid, token)
        return r

    def _state(self, jid: int) -> JobState | None:
        row = self._conn.execute("SELECT state FROM jobs WHERE id = ?", (jid,)).fetchone()
        return None if row is None else JobState(row[0])

    def _requeue(
        self, jid: int, queue: str, type_: str, prio: int, old: JobState, now: float
    ) -> None:
        """Make a job queued again at the back of its priority, queued at ``now``
        (writes the row)."""
        check_transition(jid, old, S.QUEUED)
        seq = self._next_seq
        self._next_seq += 1
        deadline, size = self._conn.execute(
            "UPDATE jobs SET state = 'queued', seq = ?, queued_at = ?, lease_until = NULL,"
            f" run_at = NULL, cancel_requested = 0 WHERE id = ? RETURNING deadline, {SIZE}",
            (seq, now, jid),
        ).fetchone()
        self._ready.push(jid, queue, type_, prio, seq, deadline, size)
        self._count(queue, old.value, S.QUEUED.value)

    def _finish(
        self, jid: int, queue: str, old: JobState, new: JobState, now: float,
        error: JobError | None = None,
    ) -> None:  # fmt: skip
        """Move a job to dead or cancelled (writes the row, counts it)."""
        check_transition(jid, old, new)
        if error is None:
            self._conn.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, lease_until = NULL, run_at = NULL"
                " WHERE id = ?",
                (new.value, now, jid),
            )
        else:
            self._conn.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, lease_until = NULL, run_at = NULL,"
                " error = ? WHERE id = ?",
                (new.value, now, codec.dumps(error.to_dict()), jid),
            )
        self._count(queue, old.value, new.value)
        self._total("dead" if new is S.DEAD else "cancelled")

    def _lose(self, jid: int, r: Running, now: float) -> None:
        """A lease ended without an answer: requeue, or dead (poison), or cancelled."""
        self._drop_running(jid, r)
        lost = r.lost + 1
        self._conn.execute("UPDATE jobs SET lost = ? WHERE id = ?", (lost, jid))
        self._total("lost")
        if r.cancel:
            self._finish(jid, r.queue, S.RUNNING, S.CANCELLED, now)
        elif lost > self.poison_limit:
            message = (
                f"lease lost {lost} times without an answer: workers keep dying or freezing"
                " on this job"
            )
            self._finish(
                jid, r.queue, S.RUNNING, S.DEAD, now, JobError(kind="poison", message=message)
            )
        else:
            self._requeue(jid, r.queue, r.type, r.priority, S.RUNNING, now)

    # -- operations: each runs whole on the writer thread ------------------------------

    def _op_enqueue(self, items: list[tuple[JobSpec, bytes | None]], now: float) -> list[Enqueued]:
        db = self._conn
        out: list[Enqueued] = []
        rows: list[tuple[Any, ...]] = []
        fresh: list[tuple[int, JobSpec, JobState]] = []
        keys: dict[str, Enqueued] = {}
        for spec, args in items:
            key = spec.unique_key
            if key is not None:
                seen = keys.get(key)
                if seen is None:
                    row = db.execute(
                        "SELECT id, state FROM jobs WHERE unique_key = ?", (key,)
                    ).fetchone()
                    if row is not None:
                        seen = Enqueued(id=row[0], created=False, state=JobState(row[1]))
                if seen is not None:
                    out.append(Enqueued(id=seen.id, created=False, state=seen.state))
                    keys[key] = seen
                    continue
            jid = self._next_id
            self._next_id += 1
            delayed = spec.run_at is not None and spec.run_at > now
            state = S.SCHEDULED if delayed else S.QUEUED
            seq = None
            if not delayed:
                seq = self._next_seq
                self._next_seq += 1
            rows.append((
                jid, spec.type, spec.queue, spec.priority, args, spec.payload, state.value,
                spec.max_retries, spec.timeout, spec.deadline, spec.run_at if delayed else None,
                key, seq, now,
            ))  # fmt: skip
            fresh.append((jid, spec, state))
            created = Enqueued(id=jid, created=True, state=state)
            out.append(created)
            if key is not None:
                keys[key] = created
        if rows:
            db.executemany(
                "INSERT INTO jobs (id, type, queue, priority, args, payload, state, max_retries,"
                " timeout, deadline, run_at, unique_key, seq, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            for (jid, spec, state), row in zip(fresh, rows, strict=True):
                if state is S.QUEUED:
                    size = len(row[4] or b"") + len(row[5] or b"")
                    self._ready.push(
                        jid, spec.queue, spec.type, spec.priority, row[12], spec.deadline, size
                    )
                else:
                    assert spec.run_at is not None
                    self._schedule.push(jid, spec.run_at, spec.queue, spec.type, spec.priority)
                self._count(spec.queue, None, state.value)
            self._total("submitted", len(rows))
        self._meta_dirty = True
        return out

    def _sizes_of(self, ids: list[int]) -> dict[int, int]:
        """The sizes (SIZE) of these jobs, looked up in the file."""
        out: dict[int, int] = {}
        for i in range(0, len(ids), SIZE_LOOKUP):
            part = ids[i : i + SIZE_LOOKUP]
            out.update(self._conn.execute(
                f"SELECT id, {SIZE} FROM jobs WHERE id IN ({','.join('?' * len(part))})", part
            ).fetchall())  # fmt: skip
        return out

    def _op_claim(
        self,
        worker: str,
        n: int,
        now: float,
        queues: frozenset[str] | None,
        types: frozenset[str] | None,
        lease: float,
        max_bytes: int | None = None,
    ) -> list[Job] | None:
        """The claim; None when it ended BATCH jobs past their deadline and took none
        yet (the caller claims again: a bounded operation each time)."""
        lease_until = now + lease
        chosen: list[tuple[int, int]] = []  # (id, priority) in hand-out order
        ended = 0
        admit = None
        # small jobs are counted as SMALL_JOB bytes until that bound could pass the
        # budget: a claim of small jobs with room for n of them never looks one up
        if max_bytes is not None and (self._ready.sizes or n * SMALL_JOB > max_bytes):
            admit = _Budget(max_bytes, now, chosen, self._ready.sizes, self._sizes_of).admit
        for jid, prio, deadline in self._ready.take(queues, types, admit):
            if deadline is not None and deadline < now:
                row = self._conn.execute("SELECT queue FROM jobs WHERE id = ?", (jid,)).fetchone()
                expired = JobError(
                    kind="expired", message=f"deadline {deadline} passed before it started"
                )
                self._finish(jid, row[0], S.QUEUED, S.DEAD, now, expired)
                self._total("expired")
                ended += 1
                if ended == BATCH and not chosen:  # bounded work: claim() goes on
                    return None
                continue
            check_transition(jid, S.QUEUED, S.RUNNING)
            chosen.append((jid, prio))
            if len(chosen) == n:
                break
        if not chosen:
            return []
        # one statement for the whole claim
        marks = ",".join("?" * len(chosen))
        rows = self._conn.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, token = ? + attempts + 1,"
            " worker = ?, lease_until = ?, started_at = ?, cancel_requested = 0, progress = NULL,"
            f" seq = NULL WHERE id IN ({marks}) RETURNING {FULL_COLS}",
            (self._epoch_base, worker, lease_until, now, *(jid for jid, _ in chosen)),
        ).fetchall()
        jobs = {row[0]: job_from_row(row) for row in rows}
        out: list[Job] = []
        for jid, prio in chosen:
            job = jobs[jid]
            self._add_running(jid, Running((
                worker, job.token, lease_until, False, job.queue, job.type, prio,
                job.failures, job.max_retries, job.lost,
            )))  # fmt: skip
            self._count(job.queue, S.QUEUED.value, S.RUNNING.value)
            out.append(job)
        return out

    def _op_complete(
        self, jid: int, token: int, result: tuple[bytes, str], now: float, worker: str | None
    ) -> None:
        r = self._holder(jid, token, worker)
        check_transition(jid, S.RUNNING, S.SUCCEEDED)
        self._conn.execute(
            "UPDATE jobs SET state = 'succeeded', result = ?, result_kind = ?, finished_at = ?,"
            " lease_until = NULL WHERE id = ?",
            (result[0], result[1], now, jid),
        )
        self._drop_running(jid, r)
        self._count(r.queue, S.RUNNING.value, S.SUCCEEDED.value)
        self._total("succeeded")

    def _op_complete_many(
        self, items: list[tuple[int, int, tuple[bytes, str]]], now: float, worker: str | None
    ) -> list[DistQueueError | None]:
        out: list[DistQueueError | None] = []
        rows = []
        for jid, token, result in items:
            try:
                r = self._holder(jid, token, worker)
            except DistQueueError as exc:
                out.append(exc)
                continue
            check_transition(jid, S.RUNNING, S.SUCCEEDED)
            rows.append((result[0], result[1], now, jid))
            self._drop_running(jid, r)
            self._count(r.queue, S.RUNNING.value, S.SUCCEEDED.value)
            out.append(None)
        if rows:
            self._conn.executemany(
                "UPDATE jobs SET state = 'succeeded', result = ?, result_kind = ?,"
                " finished_at = ?, lease_until = NULL WHERE id = ?",
                rows,
            )
            self._total("succeeded", len(rows))
        return out

    def _op_fail(
        self, jid: int, token: int, error: JobError, now: float, retryable: bool,
        worker: str | None,
    ) -> FailOutcome:  # fmt: skip
        r = self._holder(jid, token, worker)
        failures = r.failures + 1
        if r.cancel:  # the user asked to stop it: never run it again, whatever the error
            new, run_at = S.CANCELLED, None
        elif not retryable or failures > r.max_retries:
            new, run_at = S.DEAD, None
        else:
            new, run_at = S.RETRYING, now + self.retry_policy.backoff(failures, self._rng)
        check_transition(jid, S.RUNNING, new)
        self._drop_running(jid, r)
        self._conn.execute(
            "UPDATE jobs SET failures = ?, error = ? WHERE id = ?",
            (failures, codec.dumps(error.to_dict()), jid),
        )
        self._total("failed")
        if new is S.RETRYING:
            assert run_at is not None
            self._conn.execute(
                "UPDATE jobs SET state = 'retrying', run_at = ?, lease_until = NULL WHERE id = ?",
                (run_at, jid),
            )
            self._schedule.push(jid, run_at, r.queue, r.type, r.priority)
            self._count(r.queue, S.RUNNING.value, new.value)
            self._total("retried")
        else:
            self._finish(jid, r.queue, S.RUNNING, new, now)
        return FailOutcome(state=new, run_at=run_at)

    def _op_progress(self, jid: int, token: int, progress: bytes, worker: str | None) -> None:
        self._holder(jid, token, worker)
        self._conn.execute("UPDATE jobs SET progress = ? WHERE id = ?", (progress, jid))

    def _op_heartbeat(self, worker: str, now: float, lease: float) -> Heartbeat:
        ids = self._by_worker.get(worker, ())
        lease_until = now + lease
        held: dict[int, int] = {}
        cancel: list[int] = []
        for jid in ids:
            r = self._running[jid]
            r.lease_until = lease_until
            heapq.heappush(self._lease_heap, (lease_until, jid, r.token))
            held[jid] = r.token
            if r.cancel:
                cancel.append(jid)
        if held:
            self._conn.executemany(
                "UPDATE jobs SET lease_until = ? WHERE id = ?",
                [(lease_until, jid) for jid in held],
            )
        return Heartbeat(held=held, cancel=sorted(cancel))

    def _op_expire(self, now: float, limit: int) -> list[int]:
        heap = self._lease_heap
        out: list[int] = []
        while heap and heap[0][0] <= now and len(out) < limit:
            until, jid, token = heapq.heappop(heap)
            r = self._running.get(jid)
            if r is not None and r.token == token and r.lease_until == until:
                self._lose(jid, r, now)
                out.append(jid)
        return out

    def _op_release(
        self, worker: str, now: float, ids: frozenset[int] | None, vanished: bool
    ) -> list[int]:
        held = self._by_worker.get(worker, set())
        chosen = sorted(held if ids is None else held & ids)
        for jid in chosen:
            r = self._running[jid]
            if vanished:
                self._lose(jid, r, now)
            elif r.cancel:  # a cancel asked while it ran sticks: it never runs again
                self._drop_running(jid, r)
                self._finish(jid, r.queue, S.RUNNING, S.CANCELLED, now)
            else:
                self._drop_running(jid, r)
                self._requeue(jid, r.queue, r.type, r.priority, S.RUNNING, now)
        return chosen

    def _op_promote(self, now: float, limit: int) -> list[int]:
        out: list[int] = []
        for jid, queue, type_, prio in self._schedule.due(now):
            old = self._state(jid)
            assert old is not None
            self._requeue(jid, queue, type_, prio, old, now)
            out.append(jid)
            if len(out) == limit:
                break
        return out

    def _op_next_wakeup(self) -> float | None:
        times = [t for t in (self._schedule.next_at(), self._leases_next()) if t is not None]
        return min(times) if times else None

    def _leases_next(self) -> float | None:
        return self._lease_heap[0][0] if self._lease_heap else None

    def _op_cancel(self, jid: int, now: float) -> JobState:
        row = self._conn.execute(
            "SELECT state, queue, priority FROM jobs WHERE id = ?", (jid,)
        ).fetchone()
        if row is None:
            raise JobNotFound(jid)
        state, queue, prio = JobState(row[0]), row[1], row[2]
        if state is S.RUNNING:
            self._running[jid].cancel = True
            self._conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (jid,))
            return S.RUNNING
        check_transition(jid, state, S.CANCELLED)
        if state is S.QUEUED:
            self._ready.drop(jid, prio)
        else:
            self._schedule.drop(jid)
        self._finish(jid, queue, state, S.CANCELLED, now)
        return S.CANCELLED

    def _op_retry(self, jid: int, now: float) -> None:
        row = self._conn.execute(
            "SELECT state, queue, type, priority FROM jobs WHERE id = ?", (jid,)
        ).fetchone()
        if row is None:
            raise JobNotFound(jid)
        state = JobState(row[0])
        if state not in (S.DEAD, S.CANCELLED):
            # (scheduled -> queued) is an edge too, but it is promote's, not retry's
            raise IllegalTransition(
                f"job {jid} is {state.value}: only dead or cancelled jobs can be retried"
            )
        check_transition(jid, state, S.QUEUED)
        self._conn.execute(
            "UPDATE jobs SET failures = 0, lost = 0, finished_at = NULL WHERE id = ?", (jid,)
        )
        self._requeue(jid, row[1], row[2], row[3], state, now)
        self._total("retried")

    # -- reads: on reader threads, each with its own connection (see Writer.read) -----

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._readers_lock:
                self._reader_conns.append(conn)
        return conn

    def _read_get(self, jid: int) -> Job | None:
        row = self._reader().execute(f"SELECT {FULL_COLS} FROM jobs WHERE id = ?", (jid,))
        found = row.fetchone()
        return None if found is None else job_from_row(found)

    def _read_list(
        self, state: str | None, queue: str | None, type_: str | None, limit: int,
        before: int | None,
    ) -> list[Job]:  # fmt: skip
        where, params = [], []
        for column, value in (
            ("state", state),
            ("queue", queue),
            ("type", type_),
            ("id <", before),
        ):
            if value is not None:
                where.append(f"{column} = ?" if "<" not in column else f"{column} ?")
                params.append(value)
        if state in INDEXED_STATES:
            # the partial index jobs_state holds these states only: say so in the
            # query's own words, or the planner cannot use it and scans the table
            where.append("state IN ('scheduled', 'retrying', 'dead', 'cancelled')")
        sql = f"SELECT {SUMMARY_COLS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        return [job_from_row(row) for row in self._reader().execute(sql, (*params, limit))]

    def _op_stats(self) -> Stats:
        by_state = {s.value: 0 for s in JobState}
        by_queue: dict[str, dict[str, int]] = {}
        for (queue, state), count in self._counts.items():
            if count:
                by_state[state] += count
                by_queue.setdefault(queue, {})[state] = count
        queued = {p: c for p, c in enumerate(self._ready.by_priority) if c}
        return Stats(
            by_state=by_state, by_queue=by_queue, queued_by_priority=queued,
            totals=dict(self._totals), oldest_queued_at=self._oldest_queued_at(),
        )  # fmt: skip

    def _oldest_queued_at(self) -> float | None:
        """Stats.oldest_queued_at: the earliest queued-at time of the first job of each
        (queue, type, priority) FIFO, looked up by id (one query per SIZE_LOOKUP of
        them: bounded by the FIFOs, never by the jobs). A job queued by its enqueue
        has no queued_at: it was queued when created."""
        heads = self._ready.heads()
        oldest: float | None = None
        for i in range(0, len(heads), SIZE_LOOKUP):
            part = heads[i : i + SIZE_LOOKUP]
            (at,) = self._conn.execute(
                "SELECT min(coalesce(queued_at, created_at)) FROM jobs"
                f" WHERE id IN ({','.join('?' * len(part))})",
                part,
            ).fetchone()
            if at is not None and (oldest is None or at < oldest):
                oldest = at
        return oldest

    def _op_sweep(self, now: float, retention: Retention, limit: int) -> int:
        """Delete at most ``limit`` jobs past retention (bounded work per transaction)."""
        deleted: list[tuple[str, str]] = []
        for state, keep in (("succeeded", retention.succeeded), ("dead", retention.failed),
                            ("cancelled", retention.failed)):  # fmt: skip
            if len(deleted) >= limit:
                break
            deleted += self._conn.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_finished"
                " WHERE state = ? AND finished_at IS NOT NULL AND finished_at <= ? LIMIT ?)"
                " RETURNING queue, state",
                (state, now - keep, limit - len(deleted)),
            ).fetchall()
        for queue, state in deleted:
            self._count(queue, state, None)
        if deleted:
            self._total("purged", len(deleted))
        return len(deleted)

    def _op_delete(self, jid: int) -> None:
        row = self._conn.execute("SELECT state, queue FROM jobs WHERE id = ?", (jid,)).fetchone()
        if row is None:
            raise JobNotFound(jid)
        state = JobState(row[0])
        if state not in TERMINAL_STATES:
            raise IllegalTransition(
                f"job {jid} is {state.value}: only finished jobs can be deleted"
            )
        self._conn.execute("DELETE FROM jobs WHERE id = ?", (jid,))
        self._count(row[1], state.value, None)
        self._total("purged")

    def _op_note_types(self, types: list[str], now: float) -> None:
        self._conn.executemany(
            "INSERT INTO types (name, last_seen) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
            [(t, now) for t in types],
        )

    def _op_known_types(self) -> dict[str, float]:
        return dict(self._conn.execute("SELECT name, last_seen FROM types"))

    def _op_note_worker(self, worker: str, info: bytes, now: float) -> None:
        registry = self._workers
        if worker not in registry and len(registry) >= MAX_WORKERS:
            del registry[min(registry, key=lambda w: registry[w][0])]  # seen longest ago
        registry[worker] = (now, info)

    def _op_workers(self, now: float, max_age: float, limit: int) -> list[WorkerRecord]:
        cutoff = now - max_age
        stale: list[tuple[float, str]] = []
        live: list[str] = []
        for worker, (seen, _) in self._workers.items():  # at most MAX_WORKERS
            if seen >= cutoff:
                live.append(worker)
            else:
                stale.append((seen, worker))
        # the ones seen longest ago first (as the Redis store does)
        for _, worker in heapq.nsmallest(WORKERS_PURGE, stale):
            del self._workers[worker]
        out = []
        for worker in sorted(live)[:limit]:
            seen, info = self._workers[worker]
            # the worker's own lease index: never more than the jobs it holds
            held = heapq.nsmallest(WORKER_JOBS, self._by_worker.get(worker, ()))
            out.append(WorkerRecord(id=worker, info=codec.loads(info), seen=seen, jobs=held))
        return out

    def _op_forget_worker(self, worker: str) -> None:
        self._workers.pop(worker, None)

    # -- the async API (the Store protocol) -----------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec], now: float) -> list[Enqueued]:
        items = check_specs(specs)
        if not items:
            return []
        return await self._writer.call(self._op_enqueue, items, now)

    async def claim(
        self,
        worker: str,
        n: int,
        now: float,
        *,
        queues: Collection[str] | None = None,
        types: Collection[str] | None = None,
        lease: float = DEFAULT_LEASE,
        max_bytes: int | None = None,
    ) -> list[Job]:
        if check_claim(worker, n, lease) == 0:
            return []
        if max_bytes is not None:
            check_id("max_bytes", max_bytes)
        qs = None if queues is None else frozenset(queues)
        ts = None if types is None else frozenset(types)
        while True:  # each operation ends at most BATCH jobs past their deadline
            # answered before its commit: a claim lost in a crash is just queued again
            # (and its token is never handed out again: see EPOCH_SHIFT)
            jobs = await self._writer.call(
                self._op_claim, worker, n, now, qs, ts, lease, max_bytes, durable=False
            )
            if jobs is not None:
                return jobs

    async def complete(
        self, job_id: int, token: int, result: Any, now: float, *, worker: str | None = None
    ) -> None:
        check_id("job id", job_id), check_id("token", token)
        encoded = encode_result(result)
        await self._writer.call(self._op_complete, job_id, token, encoded, now, worker)

    async def complete_many(
        self, items: Sequence[tuple[int, int, Any]], now: float, *, worker: str | None = None
    ) -> list[DistQueueError | None]:
        encoded = []
        for job_id, token, result in items:
            check_id("job id", job_id), check_id("token", token)
            encoded.append((job_id, token, encode_result(result)))
        if not encoded:
            return []
        return await self._writer.call(self._op_complete_many, encoded, now, worker)

    async def fail(
        self,
        job_id: int,
        token: int,
        error: JobError,
        now: float,
        *,
        retryable: bool = True,
        worker: str | None = None,
    ) -> FailOutcome:
        check_id("job id", job_id), check_id("token", token)
        if not isinstance(error, JobError):
            raise InvalidJob("error must be a JobError")
        return await self._writer.call(
            self._op_fail, job_id, token, error, now, bool(retryable), worker
        )

    async def progress(
        self,
        job_id: int,
        token: int,
        percent: float,
        message: str,
        now: float,
        *,
        worker: str | None = None,
    ) -> None:
        check_id("job id", job_id), check_id("token", token)
        data = codec.dumps({"percent": percent, "message": message, "at": now}, "progress")
        await self._writer.call(self._op_progress, job_id, token, data, worker)

    async def heartbeat(self, worker: str, now: float, lease: float = DEFAULT_LEASE) -> Heartbeat:
        return await self._writer.call(self._op_heartbeat, worker, now, lease, durable=False)

    async def expire(self, now: float) -> list[int]:
        return await self._batches(self._op_expire, now)

    async def _batches(self, op: Callable[[float, int], list[int]], now: float) -> list[int]:
        """Run ``op`` in bounded batches (each its own writer operation, so other work
        goes on between them) until a short batch says nothing more is due."""
        out: list[int] = []
        while True:
            batch = await self._writer.call(op, now, BATCH)
            out += batch
            if len(batch) < BATCH:
                return out

    async def release(
        self,
        worker: str,
        now: float,
        *,
        ids: Collection[int] | None = None,
        vanished: bool = False,
    ) -> list[int]:
        chosen = None if ids is None else frozenset(ids)
        return await self._writer.call(self._op_release, worker, now, chosen, vanished)

    async def promote(self, now: float) -> list[int]:
        return await self._batches(self._op_promote, now)

    async def next_wakeup(self) -> float | None:
        return await self._writer.call(self._op_next_wakeup)

    async def cancel(self, job_id: int, now: float) -> JobState:
        return await self._writer.call(self._op_cancel, check_id("job id", job_id), now)

    async def retry(self, job_id: int, now: float) -> None:
        await self._writer.call(self._op_retry, check_id("job id", job_id), now)

    async def get(self, job_id: int) -> Job | None:
        return await self._read(self._read_get, check_id("job id", job_id))

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._writer.read(fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"reading {self.path} failed: {exc}") from None

    async def list(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        type: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[Job]:
        state_name = check_list(state, limit, before)
        return await self._read(self._read_list, state_name, queue, type, limit, before)

    async def stats(self) -> Stats:
        return await self._writer.call(self._op_stats)

    async def sweep(self, now: float, retention: Retention | None = None) -> int:
        total = 0
        while True:  # one bounded transaction per batch: other work goes on between them
            n = await self._writer.call(self._op_sweep, now, retention or Retention(), PURGE_BATCH)
            total += n
            if n < PURGE_BATCH:
                return total

    async def note_types(self, types: Collection[str], now: float) -> None:
        names = sorted({check_name("job type", t) for t in types})
        if names:
            await self._writer.call(self._op_note_types, names, now)

    async def known_types(self) -> dict[str, float]:
        return await self._writer.call(self._op_known_types)

    async def delete(self, job_id: int) -> None:
        await self._writer.call(self._op_delete, check_id("job id", job_id))

    # The worker registry lives in memory, not in the file: it is liveness, which a
    # restart makes stale anyway (workers note themselves again as they come back),
    # and only this process opens the store, so no other process needs to see it.
    # Its operations run on the writer thread, beside the lease indexes its ``jobs``
    # come from, and write nothing to the file (so none waits for a commit).

    async def note_worker(self, worker: str, info: Mapping[str, Any], now: float) -> None:
        """See Store.note_worker. Kept in memory only (lost when the store closes)."""
        data = check_worker_info(info)
        await self._writer.call(self._op_note_worker, check_worker(worker), data, now,
                                durable=False)  # fmt: skip

    async def workers(
        self, now: float, *, max_age: float, limit: int = 1000
    ) -> builtins.list[WorkerRecord]:  # (``list`` is the method above, in here)
        check_workers(max_age, limit)
        return await self._writer.call(self._op_workers, now, max_age, limit, durable=False)

    async def forget_worker(self, worker: str) -> None:
        await self._writer.call(self._op_forget_worker, check_worker(worker), durable=False)

    async def watch(
        self, on_ready: Callable[[], None], on_done: Callable[[Collection[int]], None]
    ) -> None:
        """Nothing to watch: only this process has the file open (see Store.watch)."""
        return None


class _Budget:
    """A claim's byte budget (``max_bytes`` of Store.claim) as ``ReadyQueues.take``
    asks it, job by job, before it takes one.

    A job larger than SMALL_JOB has its size in the index; a smaller one is counted
    as SMALL_JOB bytes (an upper bound) while that leaves room, and only when it may
    not, the exact sizes of the small jobs taken so far and of this one are looked up
    in the file (one query): so the budget is exact, and a claim of small jobs far
    from it reads nothing more.
    """

    __slots__ = ("chosen", "lookup", "now", "pending", "room", "sizes")

    def __init__(
        self, max_bytes: int, now: float, chosen: list[tuple[int, int]], sizes: dict[int, int],
        lookup: Callable[[list[int]], dict[int, int]],
    ) -> None:  # fmt: skip
        #: the budget left, counting each job in ``pending`` as SMALL_JOB bytes
        self.room = max_bytes
        #: small jobs taken whose exact size was not looked up
        self.pending: list[int] = []
        self.now = now
        self.chosen = chosen
        self.sizes = sizes
        self.lookup = lookup

    def admit(self, jid: int, deadline: float | None) -> bool:
        if deadline is not None and deadline < self.now:
            return True  # it ends (expired) instead of being handed out: it costs nothing
        size = self.sizes.get(jid)
        if self.chosen and self.room < (SMALL_JOB if size is None else size):
            # it may not fit: count what was taken exactly, and this job too
            known = self.lookup(self.pending if size is not None else [*self.pending, jid])
            self.room += sum(SMALL_JOB - known[i] for i in self.pending)
            self.pending = []
            if size is None:
                size = known[jid]
            if size > self.room:
                return False  # it stays at the front of its queue
            self.room -= size
            return True
        # the first job is handed out whatever its size
        if size is None:
            self.pending.append(jid)
            self.room -= SMALL_JOB
        else:
            self.room -= size
        return True
