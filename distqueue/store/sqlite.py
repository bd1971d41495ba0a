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

Workflows and flow control (#14) follow the same shape. Waiting jobs are rows in
state ``waiting`` plus one ``waits`` row per job each still waits for; memory holds
both directions (``_waiting``, ``_waiters``), so whatever ends a job moves its
waiters on in its own transaction without a query to find them. Limits, paused
queues and token buckets are rows too, and in memory for the claims: a claim asks a
``_Gate`` which (queue, type) pairs are held back, and ``ReadyQueues`` *parks* those
— out of every later claim's walk — until a slot frees (``_drop_running``), a rate
limit's bucket refills (``_rate_heap``, also seen by ``next_wakeup``) or the limit
or pause changes. With no limit and no pause the claim takes none of that path.
"""

from __future__ import annotations

import builtins
import dataclasses
import fcntl
import heapq
import os
import random
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
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
    QueueFull,
    StoreError,
)
from distqueue.jobs import (
    MAX_WAITERS,
    TERMINAL_STATES,
    Job,
    JobError,
    JobSpec,
    JobState,
    check_name,
)
from distqueue.lifecycle import check_transition
from distqueue.policy import DEFAULT_LEASE, DEFAULT_POISON_LIMIT, Retention, RetryPolicy
from distqueue.store.base import (
    ALL_QUEUES,
    MAX_KICK,
    MAX_LIMITS,
    MAX_PERIODICS,
    MAX_RESUME,
    MAX_WORKERS,
    WORKER_JOBS,
    WORKERS_PURGE,
    Enqueued,
    FailOutcome,
    Heartbeat,
    Limit,
    Periodic,
    Stats,
    WorkerRecord,
)
from distqueue.store.buckets import TOKEN_EPS, Bucket
from distqueue.store.checks import (
    check_claim,
    check_id,
    check_limit,
    check_list,
    check_pause,
    check_periodic,
    check_priority,
    check_seconds,
    check_specs,
    check_worker,
    check_worker_info,
    check_workers,
    encode_result,
    periodic_key,
)
from distqueue.store.memindex import SMALL_JOB, ReadyQueues, Schedule
from distqueue.store.sqlite_rows import (
    FULL_COLS,
    SMALL_COLS,
    SMALL_READ,
    SUMMARY_COLS,
    Running,
    Waiting,
    job_from_row,
)
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


#: the states the partial index jobs_state covers (sqlite_schema.sql), and its WHERE
#: word for word (a query must say it so for the planner to use the index)
INDEXED_STATES = frozenset({"waiting", "scheduled", "retrying", "dead", "cancelled"})
INDEXED_WHERE = "state IN ('waiting', 'scheduled', 'retrying', 'dead', 'cancelled')"
#: the partial indexes of beanstalk's kick and peek (sqlite_schema.sql): a queue's dead
#: jobs by finished_at, its scheduled and retrying ones by run_at (each also by type);
#: their WHERE word for word
DEAD_WHERE = "state = 'dead'"
DUE_WHERE = "state IN ('scheduled', 'retrying')"
#: how many times a peek of the queued jobs reads the one it found on a reader
#: thread (claimed in between: it looks again) before it reads it on the writer's
PEEK_TRIES = 3
#: a job read by id on the server's loop (Writer.settled_here): its payload and
#: result only when small, and the result's length last (the payload's is a column)
SMALL_GET = f"SELECT {SMALL_COLS}, length(result) FROM jobs WHERE id = ?"
#: the states that count against a queue's max_depth (Limit.max_depth)
UNFINISHED = frozenset({"waiting", "scheduled", "queued", "running", "retrying"})
#: columns added to the jobs table after version 2, nullable, in place (ALTER TABLE):
#: a file with them stays readable by the version before them
ADDED_COLUMNS = (
    ("queued_at", "REAL"),      # when a job queued again became queued (NULL: created_at)
    ("after_ids", "TEXT"),      # JobSpec.after as a JSON list (NULL: none)
    ("on_failure", "TEXT"),     # JobSpec.on_failure (NULL: "cancel")
    ("pass_results", "INTEGER"),  # JobSpec.pass_results (NULL: false)
)  # fmt: skip
#: the most waiting jobs one operation moves on *beyond* the direct waiters of the
#: jobs it ended itself (which all move in it: at most MAX_WAITERS each). A waiting
#: job cancelled because a job it waited for failed cancels its own waiters in turn;
#: a cascade longer than this goes on in the next operations (promote: see
#: next_wakeup), so no one operation's work grows with a tree of dependencies
CASCADE = 1000
#: the periodic schedule's columns, in Periodic's order
PERIODIC_COLS = "name, cron, every, timezone, spec, catch_up, paused, next_at"


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
            # a commit that does not wait for an fsync may run on the caller's loop
            inline=self._synchronous != "FULL",
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
        self._reset_flow()
        #: the worker registry: id -> (seen, info as JSON); in memory only (see
        #: note_worker), so _recover leaves it be
        self._workers: dict[str, tuple[float, bytes]] = {}
        #: (this run's epoch - 1) << EPOCH_SHIFT (see EPOCH_SHIFT)
        self._epoch_base = 0
        #: the reader threads' connections (see _reader)
        self._local = threading.local()
        self._readers_lock = threading.Lock()
        self._reader_conns: list[sqlite3.Connection] = []

    def _reset_flow(self) -> None:
        """(Re)set the in-memory state of dependencies and flow control (empty: _load
        fills it from the file)."""
        #: waiting jobs (JobSpec.after): id -> what it still waits for
        self._waiting: dict[int, Waiting] = {}
        #: job id -> the ids of the waiting jobs that wait for it
        self._waiters: dict[int, set[int]] = {}
        #: (id, succeeded) of jobs that ended whose waiters are still to move on: a
        #: cascade of cancellations past CASCADE, left for the next operations (_drain)
        self._cascade: deque[tuple[int, bool]] = deque()
        #: waiting jobs found waiting for nothing on load (not made by this code):
        #: moved on by the next _drain
        self._orphans: list[int] = []
        #: how many jobs are in an UNFINISHED state, in all queues together
        self._unfinished = 0
        #: every limit set, by (scope, name) — which is also the reason a pair held
        #: back by it is parked under (ReadyQueues.park)
        self._limits: dict[tuple[str, str], Limit] = {}
        #: queues, types with a concurrency or rate limit (what a claim's gate asks)
        self._qlim: dict[str, Limit] = {}
        self._tlim: dict[str, Limit] = {}
        #: queue (or ALL_QUEUES) -> its max_depth
        self._depth: dict[str, int] = {}
        #: (scope, name) -> the token bucket of a rate limit
        self._buckets: dict[tuple[str, str], Bucket] = {}
        #: paused queues; a pair held back by one is parked under ("paused", queue)
        self._paused: set[str] = set()
        #: the timed ones' ends, and a heap of (end, queue) to find the due ones (an
        #: entry whose end is no longer the queue's is stale, skipped)
        self._pause_until: dict[str, float] = {}
        self._pause_heap: list[tuple[float, str]] = []
        #: any concurrency or rate limit, or paused queue: claims go through a _Gate
        self._gated = False
        #: running jobs by queue and by type (a concurrency limit's count)
        self._run_q: dict[str, int] = {}
        self._run_t: dict[str, int] = {}
        #: (when, reason): pairs parked under a rate limit's reason may go again then
        #: (stale entries are skipped)
        self._rate_heap: list[tuple[float, tuple[str, str]]] = []

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
            # the partial index jobs_state covers 'waiting' too now: an older
            # definition is dropped for the schema to create this one
            old = db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'jobs_state'"
            ).fetchone()
            if old is not None and "'waiting'" not in (old[0] or ""):
                db.execute("DROP INDEX jobs_state")
            schema = resources.files("distqueue.store").joinpath("sqlite_schema.sql")
            db.executescript(schema.read_text())
            # nullable columns added in place (no rewrite): the file stays readable by
            # version 2 (see ADDED_COLUMNS)
            have = {col[1] for col in db.execute("PRAGMA table_info(jobs)")}
            for name, decl in ADDED_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
            if "until" not in {col[1] for col in db.execute("PRAGMA table_info(paused)")}:
                db.execute("ALTER TABLE paused ADD COLUMN until REAL")  # timed pauses
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
        self._reset_flow()
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
            if state in UNFINISHED:
                self._unfinished += count
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
        self._load_flow()

    def _load_flow(self) -> None:
        """Rebuild the dependencies' and flow control's memory from the file."""
        db = self._conn
        for jid, queue, on_failure in db.execute(
            f"SELECT id, queue, on_failure FROM jobs WHERE state = 'waiting' AND {INDEXED_WHERE}"
        ):
            self._waiting[jid] = Waiting(queue, on_failure or "cancel", set())
        for dep, waiter in db.execute("SELECT dep, waiter FROM waits"):
            w = self._waiting.get(waiter)
            if w is not None:  # (rows of a job no longer waiting are not made: ignored)
                w.pending.add(dep)
                self._waiters.setdefault(dep, set()).add(waiter)
        self._orphans = sorted(jid for jid, w in self._waiting.items() if not w.pending)
        # jobs waited for that ended while a cascade was left for later: it goes on
        for dep, state in db.execute(
            "SELECT DISTINCT w.dep, j.state FROM waits w LEFT JOIN jobs j ON j.id = w.dep"
            " WHERE j.state IS NULL OR j.state IN ('succeeded', 'dead', 'cancelled')"
            " ORDER BY w.dep"
        ):
            if dep in self._waiters:
                self._cascade.append((dep, state == "succeeded"))
        for row in db.execute(
            "SELECT scope, name, concurrency, rate, period, burst, max_depth, tokens,"
            " tokens_at FROM limits"
        ):
            limit = Limit(scope=row[0], name=row[1], concurrency=row[2], rate=row[3],
                          period=row[4], burst=row[5], max_depth=row[6])  # fmt: skip
            self._put_limit(limit, row[7], row[8])
        self._paused, self._pause_until = set(), {}
        for queue, until in db.execute("SELECT queue, until FROM paused"):
            self._paused.add(queue)
            if until is not None:
                self._pause_until[queue] = until
        self._pause_heap = [(until, queue) for queue, until in self._pause_until.items()]
        heapq.heapify(self._pause_heap)
        self._regate()

    # -- index helpers (writer thread) ---------------------------------------------------

    def _count(self, queue: str, old: str | None, new: str | None) -> None:
        counts = self._counts
        if old is not None:
            counts[(queue, old)] -= 1
            if old in UNFINISHED:
                self._unfinished -= 1
        if new is not None:
            counts[(queue, new)] = counts.get((queue, new), 0) + 1
            if new in UNFINISHED:
                self._unfinished += 1

    def _total(self, key: str, n: int = 1) -> None:
        self._totals[key] += n
        self._meta_dirty = True

    def _add_running(self, jid: int, r: Running) -> None:
        self._running[jid] = r
        self._by_worker.setdefault(r.worker, set()).add(jid)
        heapq.heappush(self._lease_heap, (r.lease_until, jid, r.token))
        run_q, run_t = self._run_q, self._run_t
        run_q[r.queue] = run_q.get(r.queue, 0) + 1
        run_t[r.type] = run_t.get(r.type, 0) + 1

    def _drop_running(self, jid: int, r: Running) -> None:
        del self._running[jid]
        held = self._by_worker[r.worker]
        held.discard(jid)
        if not held:
            del self._by_worker[r.worker]
        run_q, run_t = self._run_q, self._run_t
        left = run_q[r.queue] - 1
        if left:
            run_q[r.queue] = left
        else:
            del run_q[r.queue]
        left = run_t[r.type] - 1
        if left:
            run_t[r.type] = left
        else:
            del run_t[r.type]
        if self._gated:  # a slot freed: pairs parked at a concurrency limit may go
            self._slot_freed(r.queue, r.type)

    def _slot_freed(self, queue: str, type_: str) -> None:
        for scope, limits, running, name in (
            ("queue", self._qlim, self._run_q, queue),
            ("type", self._tlim, self._run_t, type_),
        ):
            limit = limits.get(name)
            if (
                limit is not None
                and limit.concurrency is not None
                and running.get(name, 0) < limit.concurrency
            ):
                self._ready.unpark((scope, name))

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
        error: JobError | None = None, *, cascade: bool = True,
    ) -> None:  # fmt: skip
        """Move a job to dead or cancelled (writes the row, counts it), and the jobs
        waiting for it on (``cascade=False``: the caller sees to them)."""
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
        if cascade and jid in self._waiters:
            self._ended(jid, False, now)

    # -- dependencies (JobSpec.after): writer thread ---------------------------------------

    def _ended(self, dep: int, ok: bool, now: float) -> None:
        """Job ``dep`` ended (``ok``: succeeded): every job waiting for it moves on, in
        this operation; the cascade of cancellations that may start goes on as far as
        CASCADE allows (see _drain)."""
        self._move_waiters(dep, ok, now, None)
        if self._cascade:
            self._drain(now)

    def _move_waiters(self, dep: int, ok: bool, now: float, woken: list[int] | None) -> int:
        """The jobs waiting for ``dep`` (which ended, ``ok``: succeeded) move on: with
        on_failure "cancel" and ``dep`` failed, each is cancelled at once (and waits
        for its other jobs no more), its own waiters put on the cascade; otherwise
        each waits for one job less, and one that waits for none now is queued
        (scheduled if its run_at is ahead). Returns how many moved on; appends the
        ids queued to ``woken``."""
        waiters = self._waiters.pop(dep, None)
        if not waiters:
            return 0
        self._conn.execute("DELETE FROM waits WHERE dep = ?", (dep,))
        moved = 0
        for jid in sorted(waiters):  # (at most MAX_WAITERS)
            w = self._waiting[jid]
            w.pending.discard(dep)
            if not ok and w.on_failure == "cancel":
                self._forget_waiting(jid)
                self._finish(jid, w.queue, S.WAITING, S.CANCELLED, now, cascade=False)
                if jid in self._waiters:
                    self._cascade.append((jid, False))
                moved += 1
            elif not w.pending:
                del self._waiting[jid]
                self._wake(jid, w.queue, now, woken)
                moved += 1
        return moved

    def _wake(self, jid: int, queue: str, now: float, woken: list[int] | None) -> None:
        """A waiting job that waits for nothing more: queued, or scheduled if its
        run_at is still ahead."""
        check_transition(jid, S.WAITING, S.QUEUED)
        check_transition(jid, S.WAITING, S.SCHEDULED)
        seq = self._next_seq
        self._next_seq += 1
        state, type_, prio, run_at, deadline, size = self._conn.execute(
            "UPDATE jobs SET state = CASE WHEN run_at > :now THEN 'scheduled' ELSE 'queued' END,"
            " seq = CASE WHEN run_at > :now THEN NULL ELSE :seq END,"
            " queued_at = CASE WHEN run_at > :now THEN NULL ELSE :now END,"
            " run_at = CASE WHEN run_at > :now THEN run_at END"
            f" WHERE id = :id RETURNING state, type, priority, run_at, deadline, {SIZE}",
            {"now": now, "seq": seq, "id": jid},
        ).fetchone()
        if state == "queued":
            self._ready.push(jid, queue, type_, prio, seq, deadline, size)
            if woken is not None:
                woken.append(jid)
        else:
            self._schedule.push(jid, run_at, queue, type_, prio)
        self._count(queue, S.WAITING.value, state)

    def _drain(self, now: float, budget: int = CASCADE) -> list[int]:
        """Go on with the cascade left (and move on waiting jobs found waiting for
        nothing on load) until ``budget`` jobs moved; returns the ids queued."""
        woken: list[int] = []
        moved = 0
        while self._orphans:
            jid = self._orphans.pop()
            w = self._waiting.get(jid)
            if w is not None and not w.pending:
                del self._waiting[jid]
                self._wake(jid, w.queue, now, woken)
                moved += 1
        cascade = self._cascade
        while cascade and moved < budget:
            dep, ok = cascade.popleft()
            moved += self._move_waiters(dep, ok, now, woken)
        return woken

    def _forget_waiting(self, jid: int) -> None:
        """A waiting job leaves (cancelled): it waits for nothing any more."""
        w = self._waiting.pop(jid)
        for dep in w.pending:
            waiters = self._waiters[dep]
            waiters.discard(jid)
            if not waiters:
                del self._waiters[dep]
        self._conn.executemany(
            "DELETE FROM waits WHERE dep = ? AND waiter = ?", [(dep, jid) for dep in w.pending]
        )

    # -- flow control: writer thread -------------------------------------------------------

    def _put_limit(self, limit: Limit, tokens: float | None, at: float | None) -> None:
        """Set ``limit`` in memory, its bucket (if a rate) at ``tokens`` as of ``at``."""
        key = (limit.scope, limit.name)
        self._limits[key] = limit
        limits = self._qlim if limit.scope == "queue" else self._tlim
        if limit.concurrency is not None or limit.rate is not None:
            limits[limit.name] = limit
        else:
            limits.pop(limit.name, None)
        if limit.rate is not None:
            self._buckets[key] = Bucket(limit.rate, limit.period, limit.burst, tokens, at)
        else:
            self._buckets.pop(key, None)
        if limit.max_depth is not None:
            self._depth[limit.name] = limit.max_depth
        else:
            self._depth.pop(limit.name, None)

    def _drop_limit(self, key: tuple[str, str]) -> None:
        del self._limits[key]
        (self._qlim if key[0] == "queue" else self._tlim).pop(key[1], None)
        self._buckets.pop(key, None)
        if key[0] == "queue":
            self._depth.pop(key[1], None)

    def _regate(self) -> None:
        """Claims go through a gate while any limit or pause can hold a pair back."""
        self._gated = bool(self._qlim or self._tlim or self._paused)
        if not self._gated:
            self._ready.unpark_all()
            self._rate_heap.clear()

    def _unpark_due(self, now: float) -> None:
        """Unpark the pairs held back by a rate limit whose bucket has a token by now."""
        heap = self._rate_heap
        while heap and heap[0][0] <= now:
            self._ready.unpark(heapq.heappop(heap)[1])

    def _held(self, queue: str) -> int:
        """Unfinished jobs in ``queue`` (what its max_depth bounds)."""
        counts = self._counts
        return sum(counts.get((queue, state), 0) for state in UNFINISHED)

    def _check_depth(self, adding: dict[str, int]) -> None:
        """QueueFull unless ``adding`` (queue -> new unfinished jobs) fits every
        max_depth."""
        depth = self._depth
        for queue, n in adding.items():
            most = depth.get(queue)
            if most is not None:
                held = self._held(queue)
                if held + n > most:
                    raise QueueFull(f"queue {queue} holds {held} jobs (max_depth {most})")
        most = depth.get(ALL_QUEUES)
        if most is not None and self._unfinished + sum(adding.values()) > most:
            raise QueueFull(f"all queues hold {self._unfinished} jobs (max_depth {most})")

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
        # each answer: an existing job's Enqueued, or (index in ``fresh``, created)
        answers: list[Enqueued | tuple[int, bool]] = []
        #: (spec index, id, spec, args) of each job this call creates
        fresh: list[tuple[int, int, JobSpec, bytes | None]] = []
        keys: dict[str, Enqueued | int] = {}
        next_id = self._next_id
        deps = False
        for i, (spec, args) in enumerate(items):
            key = spec.unique_key
            if key is not None:
                seen = keys.get(key)
                if seen is None:
                    row = db.execute(
                        "SELECT id, state FROM jobs WHERE unique_key = ?", (key,)
                    ).fetchone()
                    if row is not None:
                        seen = keys[key] = Enqueued(id=row[0], created=False,
                                                    state=JobState(row[1]))  # fmt: skip
                if seen is not None:
                    answers.append(seen if isinstance(seen, Enqueued) else (seen, False))
                    continue
                keys[key] = len(fresh)
            answers.append((len(fresh), True))
            fresh.append((i, next_id, spec, args))
            next_id += 1
            if spec.after:
                deps = True
        # what each new job becomes; InvalidJob/QueueFull here, before any write
        states = [
            S.SCHEDULED if spec.run_at is not None and spec.run_at > now else S.QUEUED
            for _, _, spec, _ in fresh
        ]
        pending: dict[int, list[int]] = self._plan_after(fresh, states) if deps else {}
        if self._depth:
            adding: dict[str, int] = {}
            for (_, _, spec, _), state in zip(fresh, states, strict=True):
                if state is not S.CANCELLED:
                    adding[spec.queue] = adding.get(spec.queue, 0) + 1
            if adding:
                self._check_depth(adding)
        rows: list[tuple[Any, ...]] = []
        more: list[tuple[Any, ...]] = []  # with dependencies' columns
        seqs: list[int | None] = []
        for (_, jid, spec, args), state in zip(fresh, states, strict=True):
            seq = None
            if state is S.QUEUED:
                seq = self._next_seq
                self._next_seq += 1
            seqs.append(seq)
            run_at = spec.run_at if state in (S.SCHEDULED, S.WAITING) else None
            row = (
                jid, spec.type, spec.queue, spec.priority, args, spec.payload, state.value,
                spec.max_retries, spec.timeout, spec.deadline, run_at, spec.unique_key, seq,
                now,
            )  # fmt: skip
            if spec.after or spec.on_failure != "cancel" or state is S.CANCELLED:
                after = codec.dumps(list(spec.after)).decode() if spec.after else None
                more.append((
                    *row, after, None if spec.on_failure == "cancel" else spec.on_failure,
                    1 if spec.pass_results else None,
                    now if state is S.CANCELLED else None,
                ))  # fmt: skip
            else:
                rows.append(row)
        if rows:
            db.executemany(
                "INSERT INTO jobs (id, type, queue, priority, args, payload, state, max_retries,"
                " timeout, deadline, run_at, unique_key, seq, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        if more:
            db.executemany(
                "INSERT INTO jobs (id, type, queue, priority, args, payload, state, max_retries,"
                " timeout, deadline, run_at, unique_key, seq, created_at, after_ids, on_failure,"
                " pass_results, finished_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                more,
            )
        if pending:
            db.executemany(
                "INSERT INTO waits (dep, waiter) VALUES (?, ?)",
                [(dep, jid) for jid, ids in pending.items() for dep in ids],
            )
        for (_, jid, spec, args), state, seq in zip(fresh, states, seqs, strict=True):
            if state is S.QUEUED:
                assert seq is not None
                size = len(args or b"") + len(spec.payload or b"")
                self._ready.push(jid, spec.queue, spec.type, spec.priority, seq, spec.deadline,
                                 size)  # fmt: skip
            elif state is S.SCHEDULED:
                assert spec.run_at is not None
                self._schedule.push(jid, spec.run_at, spec.queue, spec.type, spec.priority)
            elif state is S.WAITING:
                ids = pending[jid]
                self._waiting[jid] = Waiting(spec.queue, spec.on_failure, set(ids))
                for dep in ids:
                    self._waiters.setdefault(dep, set()).add(jid)
            else:
                self._total("cancelled")
            self._count(spec.queue, None, state.value)
        self._next_id = next_id
        if fresh:
            self._total("submitted", len(fresh))
        self._meta_dirty = True
        out: list[Enqueued] = []
        for answer in answers:
            if isinstance(answer, Enqueued):
                out.append(answer)
            else:
                slot, created = answer
                out.append(Enqueued(id=fresh[slot][1], created=created, state=states[slot]))
        return out

    def _plan_after(
        self, fresh: list[tuple[int, int, JobSpec, bytes | None]], states: list[JobState]
    ) -> dict[int, list[int]]:
        """Decide what each new job with dependencies becomes (``states`` updated in
        place: waiting, cancelled, or as it was when every job it waits for is done);
        returns new id -> the ids it waits for. InvalidJob naming the spec for a job
        id that does not exist or has MAX_WAITERS waiters already."""
        wanted = sorted({dep for _, _, spec, _ in fresh for dep in spec.after})
        found: dict[int, str] = {}
        for i in range(0, len(wanted), SIZE_LOOKUP):
            part = wanted[i : i + SIZE_LOOKUP]
            found.update(self._conn.execute(
                f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(part))})", part
            ).fetchall())  # fmt: skip
        out: dict[int, list[int]] = {}
        extra: dict[int, int] = {}
        for slot, (index, jid, spec, _) in enumerate(fresh):
            if not spec.after:
                continue
            waits: list[int] = []
            failed = False
            for dep in spec.after:
                state = found.get(dep)
                if state is None:
                    raise InvalidJob(f"job {index}: after names job {dep}, which does not exist")
                if state == "succeeded":
                    continue
                if state in ("dead", "cancelled"):
                    failed = failed or spec.on_failure == "cancel"
                    continue
                waits.append(dep)
            if failed:
                check_transition(jid, None, S.CANCELLED)
                states[slot] = S.CANCELLED
                continue
            if not waits:
                continue
            for dep in waits:
                if len(self._waiters.get(dep, ())) + extra.get(dep, 0) >= MAX_WAITERS:
                    raise InvalidJob(
                        f"job {index}: {MAX_WAITERS} jobs wait for job {dep} already"
                        f" (at most {MAX_WAITERS})"
                    )
                extra[dep] = extra.get(dep, 0) + 1
            check_transition(jid, None, S.WAITING)
            states[slot] = S.WAITING
            out[jid] = waits
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
        gate = None
        if self._gated:  # (no limit and no pause: nothing more on the hot path)
            if self._rate_heap:
                self._unpark_due(now)
            gate = _Gate(self, now)
        for jid, prio, deadline, key in self._ready.take(
            queues, types, admit, None if gate is None else gate.blocked
        ):
            if deadline is not None and deadline < now:
                self._expire_queued(jid, key[0], deadline, now)
                ended += 1
                if ended == BATCH and not chosen:  # bounded work: claim() goes on
                    return None
                continue
            check_transition(jid, S.QUEUED, S.RUNNING)
            chosen.append((jid, prio))
            if gate is not None:
                gate.took(key)
            if len(chosen) == n:
                break
        if gate is not None:
            gate.save()
        if not chosen:
            return []
        return self._start(worker, chosen, now, lease_until)

    def _expire_queued(self, jid: int, queue: str, deadline: float, now: float) -> None:
        """A queued job, already out of the ready queues, past its deadline: dead,
        error kind expired (claim, claim_job)."""
        expired = JobError(kind="expired", message=f"deadline {deadline} passed before it started")
        self._finish(jid, queue, S.QUEUED, S.DEAD, now, expired)
        self._total("expired")

    def _start(
        self, worker: str, chosen: list[tuple[int, int]], now: float, lease_until: float
    ) -> list[Job]:
        """Lease ``chosen`` ((id, priority) of queued jobs already out of the ready
        queues, in hand-out order) to ``worker``: rows written, running indexes and
        counts moved (claim, claim_job)."""
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
        if jid in self._waiters:
            self._ended(jid, True, now)

    def _op_complete_many(
        self, items: list[tuple[int, int, tuple[bytes, str]]], now: float, worker: str | None
    ) -> list[DistQueueError | None]:
        out: list[DistQueueError | None] = []
        rows = []
        ended: list[int] = []
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
            if jid in self._waiters:
                ended.append(jid)
        if rows:
            self._conn.executemany(
                "UPDATE jobs SET state = 'succeeded', result = ?, result_kind = ?,"
                " finished_at = ?, lease_until = NULL WHERE id = ?",
                rows,
            )
            self._total("succeeded", len(rows))
        for jid in ended:  # their waiters move on, in this operation too
            self._ended(jid, True, now)
        return out

    def _op_fail(
        self, jid: int, token: int, error: JobError, now: float, retryable: bool,
        worker: str | None, priority: int | None = None,
    ) -> FailOutcome:  # fmt: skip
        r = self._holder(jid, token, worker)
        prio = r.priority if priority is None else priority
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
            "UPDATE jobs SET failures = ?, error = ?, priority = ? WHERE id = ?",
            (failures, codec.dumps(error.to_dict()), prio, jid),
        )
        self._total("failed")
        if new is S.RETRYING:
            assert run_at is not None
            self._conn.execute(
                "UPDATE jobs SET state = 'retrying', run_at = ?, lease_until = NULL WHERE id = ?",
                (run_at, jid),
            )
            self._schedule.push(jid, run_at, r.queue, r.type, prio)
            self._count(r.queue, S.RUNNING.value, new.value)
            self._total("retried")
        else:
            self._finish(jid, r.queue, S.RUNNING, new, now)
        return FailOutcome(state=new, run_at=run_at)

    def _op_requeue(
        self, jid: int, token: int, now: float, priority: int | None, run_at: float | None,
        worker: str | None,
    ) -> JobState:  # fmt: skip
        r = self._holder(jid, token, worker)
        prio = r.priority if priority is None else priority
        if r.cancel:  # a cancel asked while it ran sticks (as in release)
            new = S.CANCELLED
        elif run_at is not None and run_at > now:
            new = S.SCHEDULED
        else:
            new = S.QUEUED
        check_transition(jid, S.RUNNING, new)
        self._drop_running(jid, r)
        if prio != r.priority:
            self._conn.execute("UPDATE jobs SET priority = ? WHERE id = ?", (prio, jid))
        if new is S.CANCELLED:
            self._finish(jid, r.queue, S.RUNNING, S.CANCELLED, now)
        elif new is S.SCHEDULED:
            assert run_at is not None
            self._conn.execute(
                "UPDATE jobs SET state = 'scheduled', run_at = ?, lease_until = NULL WHERE id = ?",
                (run_at, jid),
            )
            self._schedule.push(jid, run_at, r.queue, r.type, prio)
            self._count(r.queue, S.RUNNING.value, S.SCHEDULED.value)
        else:
            self._requeue(jid, r.queue, r.type, prio, S.RUNNING, now)
        return new

    def _op_touch(
        self, jid: int, token: int, now: float, lease: float, worker: str | None
    ) -> float:
        r = self._holder(jid, token, worker)
        lease_until = now + lease
        r.lease_until = lease_until  # (its older heap entries are stale now)
        heapq.heappush(self._lease_heap, (lease_until, jid, r.token))
        self._conn.execute("UPDATE jobs SET lease_until = ? WHERE id = ?", (lease_until, jid))
        return lease_until

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
        if self._cascade or self._orphans:  # a cascade of dependencies left to go on
            out += self._drain(now, limit)
        if self._rate_heap:  # rate limits with tokens again: their pairs may go
            self._unpark_due(now)
        for promoted, (jid, queue, type_, prio) in enumerate(self._schedule.due(now), 1):
            old = self._state(jid)
            assert old is not None
            self._requeue(jid, queue, type_, prio, old, now)
            out.append(jid)
            if promoted == limit:
                break
        return out

    def _op_next_wakeup(self) -> float | None:
        if self._cascade or self._orphans:
            return 0.0  # a promote has work now (the cascade of dependencies left)
        times = [
            t
            for t in (self._schedule.next_at(), self._leases_next(), self._pause_next())
            if t is not None
        ]
        heap = self._rate_heap
        while heap and not self._ready.parked(heap[0][1]):
            heapq.heappop(heap)  # stale: that reason holds no pair back any more
        if heap:
            times.append(heap[0][0])
        (periodic,) = self._conn.execute("SELECT min(next_at) FROM periodics").fetchone()
        if periodic is not None:
            times.append(periodic)
        return min(times) if times else None

    def _leases_next(self) -> float | None:
        return self._lease_heap[0][0] if self._lease_heap else None

    def _op_cancel(self, jid: int, now: float, running: bool = True) -> JobState:
        row = self._conn.execute(
            "SELECT state, queue, priority FROM jobs WHERE id = ?", (jid,)
        ).fetchone()
        if row is None:
            raise JobNotFound(jid)
        state, queue, prio = JobState(row[0]), row[1], row[2]
        if state is S.RUNNING:
            if not running:
                raise IllegalTransition(f"job {jid} is running: not cancelled")
            self._running[jid].cancel = True
            self._conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (jid,))
            return S.RUNNING
        check_transition(jid, state, S.CANCELLED)
        if state is S.QUEUED:
            self._ready.drop(jid, prio)
        elif state is S.WAITING:
            self._forget_waiting(jid)
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
        self._revive(jid, state, row[1], row[2], row[3], now)

    def _revive(
        self, jid: int, old: JobState, queue: str, type_: str, prio: int, now: float
    ) -> None:
        """A dead or cancelled job queued again, its failures and lost reset (retry,
        kick)."""
        check_transition(jid, old, S.QUEUED)
        if jid in self._waiters:  # it ended in a cascade not yet done: its waiters
            self._move_waiters(jid, False, now, None)  # move on as it ended, first
        self._conn.execute(
            "UPDATE jobs SET failures = 0, lost = 0, finished_at = NULL WHERE id = ?", (jid,)
        )
        self._requeue(jid, queue, type_, prio, old, now)
        self._total("retried")

    def _kick_due(
        self, jid: int, old: JobState, queue: str, type_: str, prio: int, now: float
    ) -> None:
        """A scheduled or retrying job queued now, before its run-at (kick)."""
        self._schedule.drop(jid)  # (its heap entry goes stale)
        self._requeue(jid, queue, type_, prio, old, now)

    def _op_kick(self, queue: str, n: int, now: float, type_: str | None) -> list[int]:
        """Up to ``n`` dead jobs of the queue (and type), else up to ``n`` of its due
        ones, found through the partial indexes (_by_queue): work bounded by ``n``."""
        db = self._conn
        params = (queue, n) if type_ is None else (queue, type_, n)
        dead = db.execute(_by_queue("dead", "id, type, priority", type_), params).fetchall()
        for jid, t, prio in dead:
            self._revive(jid, S.DEAD, queue, t, prio, now)
        if dead:
            return [row[0] for row in dead]
        due = db.execute(_by_queue("due", "id, state, type, priority", type_), params).fetchall()
        for jid, state, t, prio in due:
            self._kick_due(jid, JobState(state), queue, t, prio, now)
        return [row[0] for row in due]

    def _op_kick_job(self, jid: int, now: float) -> JobState:
        row = self._conn.execute(
            "SELECT state, queue, type, priority FROM jobs WHERE id = ?", (jid,)
        ).fetchone()
        if row is None:
            raise JobNotFound(jid)
        state = JobState(row[0])
        if state is S.DEAD:
            self._revive(jid, state, row[1], row[2], row[3], now)
        elif state in (S.SCHEDULED, S.RETRYING):
            self._kick_due(jid, state, row[1], row[2], row[3], now)
        else:
            raise IllegalTransition(
                f"job {jid} is {state.value}: only dead, scheduled or retrying jobs can be kicked"
            )
        return state

    def _op_claim_job(self, worker: str, jid: int, now: float, lease: float) -> Job | None:
        """claim_job: one given queued job leased as a claim that picked it would, its
        place in the ready queues, pauses and limits aside (its running counts, by
        queue and by type, do count against the limits). None when its deadline had
        passed: it is dead (expired) instead, as a claim would leave it."""
        row = self._conn.execute(
            "SELECT state, queue, priority, deadline FROM jobs WHERE id = ?", (jid,)
        ).fetchone()
        if row is None:
            raise JobNotFound(jid)
        state, queue, prio, deadline = JobState(row[0]), row[1], row[2], row[3]
        if state is not S.QUEUED:
            raise IllegalTransition(f"job {jid} is {state.value}: only a queued job can be claimed")
        check_transition(jid, S.QUEUED, S.RUNNING)
        self._ready.drop(jid, prio)  # (its FIFO entry goes stale, as a cancel leaves it)
        if deadline is not None and deadline < now:
            self._expire_queued(jid, queue, deadline, now)
            return None
        [job] = self._start(worker, [(jid, prio)], now, now + lease)
        return job

    def _op_first_ready(self, queue: str, type_: str | None) -> int | None:
        return self._ready.first(queue, type_)

    def _op_peek_ready(self, queue: str, type_: str | None) -> Job | None:
        """peek of the queued jobs, whole on the writer thread (when reading the one
        found on a reader thread kept missing it)."""
        jid = self._ready.first(queue, type_)
        if jid is None:
            return None
        row = self._conn.execute(f"SELECT {FULL_COLS} FROM jobs WHERE id = ?", (jid,)).fetchone()
        return job_from_row(row)

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

    def _read_get_small(self, jid: int) -> tuple[bool, Job | None]:
        """(read, the job): read is False when its payload or result is over
        SMALL_READ bytes (their lengths come from the row's header: nothing big is
        read to learn them) and it must be read whole elsewhere."""
        found = self._reader().execute(SMALL_GET, (jid,)).fetchone()
        if found is None:
            return True, None
        if (found[6] or 0) > SMALL_READ or (found[-1] or 0) > SMALL_READ:
            return False, None
        return True, job_from_row(found)

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
            where.append(INDEXED_WHERE)
        sql = f"SELECT {SUMMARY_COLS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        return [job_from_row(row) for row in self._reader().execute(sql, (*params, limit))]

    def _read_queued(self, jid: int) -> Job | None:
        row = (
            self._reader()
            .execute(f"SELECT {FULL_COLS} FROM jobs WHERE id = ? AND state = 'queued'", (jid,))
            .fetchone()
        )
        return None if row is None else job_from_row(row)

    def _read_peek(self, queue: str, kind: str, type_: str | None) -> Job | None:
        row = (
            self._reader()
            .execute(
                _by_queue(kind, FULL_COLS, type_),
                (queue, 1) if type_ is None else (queue, type_, 1),
            )
            .fetchone()
        )
        return None if row is None else job_from_row(row)

    def _read_periodics(self) -> list[Periodic]:
        rows = self._reader().execute(f"SELECT {PERIODIC_COLS} FROM periodics ORDER BY name")
        return [_periodic_from_row(row) for row in rows]

    def _read_due_periodics(self, now: float, limit: int) -> list[Periodic]:
        return [
            _periodic_from_row(row)
            for row in self._reader().execute(
                f"SELECT {PERIODIC_COLS} FROM periodics INDEXED BY periodics_next"
                " WHERE next_at <= ? ORDER BY next_at, name LIMIT ?",
                (now, limit),
            )
        ]

    def _op_stats(self) -> Stats:
        by_state = {s.value: 0 for s in JobState}
        by_queue: dict[str, dict[str, int]] = {}
        for (queue, state), count in self._counts.items():
            if count:
                by_state[state] += count
                by_queue.setdefault(queue, {})[state] = count
        queued = dict(sorted(self._ready.by_priority.items()))  # (only those with jobs)
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

    def _op_set_limit(self, limit: Limit) -> None:
        key = (limit.scope, limit.name)
        old = self._limits.get(key)
        if limit.empty:
            if old is None:
                return
            self._conn.execute("DELETE FROM limits WHERE scope = ? AND name = ?", key)
            self._drop_limit(key)
        else:
            if old is None and len(self._limits) >= MAX_LIMITS:
                raise InvalidJob(f"there are {MAX_LIMITS} limits already (at most {MAX_LIMITS})")
            tokens = at = None
            bucket = self._buckets.get(key)
            if (
                bucket is not None
                and old is not None
                and (old.rate, old.period, old.burst) == (limit.rate, limit.period, limit.burst)
            ):  # the same rate: its bucket goes on as it is (a new or changed one is full)
                tokens, at = bucket.tokens, bucket.at
            self._conn.execute(
                "INSERT OR REPLACE INTO limits (scope, name, concurrency, rate, period, burst,"
                " max_depth, tokens, tokens_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, limit.concurrency, limit.rate, float(limit.period), limit.burst,
                 limit.max_depth, tokens, at),
            )  # fmt: skip
            self._put_limit(limit, tokens, at)
        self._ready.unpark(key)  # a claim parks its pairs again if they are still held
        self._regate()

    def _op_limits(self) -> list[Limit]:
        return [self._limits[key] for key in sorted(self._limits)]

    def _op_pause(self, queue: str, paused: bool, until: float | None) -> None:
        if paused:
            if queue not in self._paused or self._pause_until.get(queue) != until:
                self._conn.execute(
                    "INSERT OR REPLACE INTO paused (queue, until) VALUES (?, ?)", (queue, until)
                )
                self._paused.add(queue)
                if until is None:
                    self._pause_until.pop(queue, None)
                else:
                    self._pause_until[queue] = until
                    heapq.heappush(self._pause_heap, (until, queue))
        elif queue in self._paused:
            self._conn.execute("DELETE FROM paused WHERE queue = ?", (queue,))
            self._paused.discard(queue)
            self._pause_until.pop(queue, None)
            self._ready.unpark(("paused", queue))
        self._regate()

    def _op_paused(self) -> list[str]:
        return sorted(self._paused)

    def _op_pauses(self) -> dict[str, float | None]:
        return {queue: self._pause_until.get(queue) for queue in sorted(self._paused)}

    def _op_resume_due(self, now: float) -> list[str]:
        resumed: list[str] = []
        heap = self._pause_heap
        while heap and heap[0][0] <= now and len(resumed) < MAX_RESUME:
            until, queue = heapq.heappop(heap)
            if self._pause_until.get(queue) == until:  # (else stale: resumed or re-paused)
                self._op_pause(queue, False, None)
                resumed.append(queue)
        return sorted(resumed)

    def _pause_next(self) -> float | None:
        """When the first timed pause ends (stale heap entries dropped on the way)."""
        heap = self._pause_heap
        while heap and self._pause_until.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _op_set_periodic(self, periodic: Periodic, spec: bytes) -> Periodic:
        db = self._conn
        row = db.execute(
            f"SELECT {PERIODIC_COLS}, definition FROM periodics WHERE name = ?", (periodic.name,)
        ).fetchone()
        definition = periodic.definition
        if row is not None and row[-1] == definition:
            return _periodic_from_row(row)  # kept as it is: its ticks do not move
        if row is None:
            (count,) = db.execute("SELECT count(*) FROM periodics").fetchone()
            if count >= MAX_PERIODICS:
                raise InvalidJob(
                    f"there are {MAX_PERIODICS} schedules already (at most {MAX_PERIODICS})"
                )
        stored = db.execute(
            f"INSERT OR REPLACE INTO periodics ({PERIODIC_COLS}, definition)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {PERIODIC_COLS}",
            (periodic.name, periodic.cron, periodic.every, periodic.timezone, spec,
             periodic.catch_up, int(periodic.paused), float(periodic.next_at), definition),
        ).fetchone()  # fmt: skip
        return _periodic_from_row(stored)

    def _op_remove_periodic(self, name: str) -> bool:
        return self._conn.execute("DELETE FROM periodics WHERE name = ?", (name,)).rowcount > 0

    def _op_pause_periodic(self, name: str, paused: bool) -> None:
        changed = self._conn.execute(
            "UPDATE periodics SET paused = ? WHERE name = ?", (int(paused), name)
        ).rowcount
        if not changed:
            raise InvalidJob(f"no schedule named {name!r}")

    def _op_fire_periodic(
        self, name: str, tick: float, next_at: float,
        items: list[tuple[JobSpec, bytes | None]] | None, now: float,
    ) -> Enqueued | None:  # fmt: skip
        row = self._conn.execute("SELECT next_at FROM periodics WHERE name = ?", (name,)).fetchone()
        if row is None or row[0] != tick:
            return None  # fired already (or changed, or gone): nothing to do
        # the normal enqueue (dependencies, depth): it raises before it writes
        answer = self._op_enqueue(items, now)[0] if items else None
        self._conn.execute("UPDATE periodics SET next_at = ? WHERE name = ?", (next_at, name))
        return answer

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
        priority: int | None = None,
    ) -> FailOutcome:
        check_id("job id", job_id), check_id("token", token)
        if not isinstance(error, JobError):
            raise InvalidJob("error must be a JobError")
        if priority is not None:
            check_priority(priority)
        return await self._writer.call(
            self._op_fail, job_id, token, error, now, bool(retryable), worker, priority
        )

    async def requeue(
        self,
        job_id: int,
        token: int,
        now: float,
        *,
        priority: int | None = None,
        run_at: float | None = None,
        worker: str | None = None,
    ) -> JobState:
        check_id("job id", job_id), check_id("token", token)
        if priority is not None:
            check_priority(priority)
        if run_at is not None:
            check_seconds("run_at", run_at)
        return await self._writer.call(
            self._op_requeue, job_id, token, now, priority, run_at, worker
        )

    async def touch(
        self, job_id: int, token: int, now: float, lease: float, *, worker: str | None = None
    ) -> float:
        check_id("job id", job_id), check_id("token", token)
        check_seconds("lease", lease, positive=True)
        return await self._writer.call(self._op_touch, job_id, token, now, lease, worker)

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

    async def cancel(self, job_id: int, now: float, *, running: bool = True) -> JobState:
        return await self._writer.call(
            self._op_cancel, check_id("job id", job_id), now, bool(running)
        )

    async def retry(self, job_id: int, now: float) -> None:
        await self._writer.call(self._op_retry, check_id("job id", job_id), now)

    async def kick(
        self, queue: str, n: int, now: float, *, type: str | None = None
    ) -> builtins.list[int]:
        check_name("queue", queue)
        if type is not None:
            check_name("job type", type)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_KICK:
            raise InvalidJob(f"n must be an integer 1-{MAX_KICK}, not {n!r}")
        return await self._writer.call(self._op_kick, queue, n, now, type)

    async def claim_job(
        self, worker: str, job_id: int, now: float, *, lease: float = DEFAULT_LEASE
    ) -> Job:
        check_claim(worker, 1, lease)
        check_id("job id", job_id)
        # answered before its commit, as a claim is: lost in a crash, the job is just
        # queued again (and its token never handed out again: see EPOCH_SHIFT)
        job = await self._writer.call(self._op_claim_job, worker, job_id, now, lease, durable=False)
        if job is None:
            raise IllegalTransition(f"job {job_id} expired before it started")
        return job

    async def kick_job(self, job_id: int, now: float) -> JobState:
        return await self._writer.call(self._op_kick_job, check_id("job id", job_id), now)

    async def peek(self, queue: str, state: JobState, *, type: str | None = None) -> Job | None:
        check_name("queue", queue)
        if type is not None:
            check_name("job type", type)
        state = JobState(state)  # (ValueError for no state at all)
        if state is S.SCHEDULED or state is S.DEAD:
            kind = "dead" if state is S.DEAD else "due"
            return await self._read(self._read_peek, queue, kind, type)
        if state is not S.QUEUED:
            raise ValueError(f"peek shows a queued, scheduled or dead job, not a {state} one")
        # the next claim's job comes from the writer's memory, and its row (payload
        # and all) is read on a reader thread, as get reads one; claimed in between,
        # it looks again, and at last reads it on the writer thread
        for _ in range(PEEK_TRIES):
            jid = await self._writer.call(self._op_first_ready, queue, type, durable=False)
            if jid is None:
                return None
            job = await self._read(self._read_queued, jid)
            if job is not None:
                return job
        return await self._writer.call(self._op_peek_ready, queue, type, durable=False)

    async def get(self, job_id: int) -> Job | None:
        jid = check_id("job id", job_id)
        if self._writer.settled_here():
            # nothing pending: a job of small payload and result is read right here
            # (a big one on a reader thread, below: it never holds up the loop)
            try:
                read, job = self._read_get_small(jid)
            except sqlite3.Error as exc:
                raise StoreError(f"reading {self.path} failed: {exc}") from None
            if read:
                return job
        return await self._read(self._read_get, jid)

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

    # -- flow control: limits, paused queues, periodic schedules ----------------------
    # Limits and paused queues live in the file and, for the claims, in memory (the
    # writer thread's): their reads come from memory. Schedules are read from the file.

    async def set_limit(self, limit: Limit) -> None:
        await self._writer.call(self._op_set_limit, check_limit(limit))

    async def limits(self) -> builtins.list[Limit]:
        return await self._writer.call(self._op_limits, durable=False)

    async def pause(self, queue: str, paused: bool, *, until: float | None = None) -> None:
        until = check_pause(queue, paused, until)
        await self._writer.call(self._op_pause, queue, bool(paused), until)

    async def paused(self) -> builtins.list[str]:
        return await self._writer.call(self._op_paused, durable=False)

    async def pauses(self) -> dict[str, float | None]:
        return await self._writer.call(self._op_pauses, durable=False)

    async def resume_due(self, now: float) -> builtins.list[str]:
        # (durable=False: a resume lost in a crash is done again by the next tick)
        return await self._writer.call(
            self._op_resume_due, check_seconds("now", now), durable=False
        )

    async def set_periodic(self, periodic: Periodic) -> Periodic:
        periodic = check_periodic(periodic)
        spec = codec.dumps(periodic.spec, "schedule spec")
        return await self._writer.call(self._op_set_periodic, periodic, spec)

    async def periodics(self) -> builtins.list[Periodic]:
        return await self._read(self._read_periodics)

    async def remove_periodic(self, name: str) -> bool:
        return await self._writer.call(self._op_remove_periodic,
                                       check_name("schedule name", name))  # fmt: skip

    async def pause_periodic(self, name: str, paused: bool) -> None:
        await self._writer.call(
            self._op_pause_periodic, check_name("schedule name", name), bool(paused)
        )

    async def due_periodics(self, now: float, limit: int = 100) -> builtins.list[Periodic]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidJob("limit must be 1-10000")
        return await self._read(self._read_due_periodics, now, limit)

    async def fire_periodic(
        self, name: str, tick: float, next_at: float, spec: JobSpec | None, now: float
    ) -> Enqueued | None:
        check_name("schedule name", name)
        if not next_at > tick:
            raise InvalidJob(f"the next tick ({next_at}) must come after this one ({tick})")
        items = None
        if spec is not None:
            if not isinstance(spec, JobSpec):
                raise InvalidJob("job 0: not a JobSpec")
            items = check_specs([dataclasses.replace(spec, unique_key=periodic_key(name, tick))])
        return await self._writer.call(self._op_fire_periodic, name, tick, next_at, items, now)


def _by_queue(kind: str, cols: str, type_: str | None) -> str:
    """The query of a queue's (and type's) first dead jobs (``kind`` "dead": by
    finished_at) or due ones ("due": scheduled and retrying, by run_at), through its
    partial index (sqlite_schema.sql): parameters queue, [type,] limit."""
    if kind == "dead":
        index, where, order = "jobs_dead_queue", DEAD_WHERE, "finished_at"
    else:
        index, where, order = "jobs_due_queue", DUE_WHERE, "run_at"
    if type_ is None:
        return (
            f"SELECT {cols} FROM jobs INDEXED BY {index} WHERE queue = ? AND {where}"
            f" ORDER BY {order}, id LIMIT ?"
        )
    return (
        f"SELECT {cols} FROM jobs INDEXED BY {index}_type WHERE queue = ? AND type = ?"
        f" AND {where} ORDER BY {order}, id LIMIT ?"
    )


def _periodic_from_row(row: Sequence[Any]) -> Periodic:
    return Periodic(
        name=row[0], cron=row[1], every=row[2], timezone=row[3], spec=codec.loads(row[4]),
        catch_up=row[5], paused=bool(row[6]), next_at=row[7],
    )  # fmt: skip


class _Gate:
    """A claim's flow control, as ``ReadyQueues.take`` asks it pair by pair: which
    (queue, type) pairs are held back now, and why (the reason they are parked
    under: ("paused", queue), or the (scope, name) of the limit). Counts the jobs the
    claim took so far against the concurrency limits, and takes their tokens from the
    rate limits' buckets (refilled to the claim's ``now``); ``save`` writes the
    buckets it used to the file with the claim, so a restart grants no fresh burst."""

    __slots__ = ("now", "store", "taken", "used")

    def __init__(self, store: SQLiteStore, now: float) -> None:
        self.store = store
        self.now = now
        #: (scope, name) -> jobs this claim took of it
        self.taken: dict[tuple[str, str], int] = {}
        #: the buckets it took tokens from
        self.used: set[tuple[str, str]] = set()

    def blocked(self, key: tuple[str, str]) -> Hashable | None:
        queue, type_ = key
        store = self.store
        if queue in store._paused:
            return ("paused", queue)
        limit = store._qlim.get(queue)
        if limit is not None and not self._room(("queue", queue), limit, store._run_q):
            return ("queue", queue)
        limit = store._tlim.get(type_)
        if limit is not None and not self._room(("type", type_), limit, store._run_t):
            return ("type", type_)
        return None

    def _room(self, key: tuple[str, str], limit: Limit, running: dict[str, int]) -> bool:
        if (
            limit.concurrency is not None
            and running.get(key[1], 0) + self.taken.get(key, 0) >= limit.concurrency
        ):
            return False
        if limit.rate is not None:
            bucket = self.store._buckets[key]
            if bucket.refill(self.now) < 1.0 - TOKEN_EPS:
                heapq.heappush(self.store._rate_heap, (bucket.ready_at(), key))
                return False
        return True

    def took(self, key: tuple[str, str]) -> None:
        """The claim took a job of the pair ``key``."""
        store = self.store
        for limit, scoped in (
            (store._qlim.get(key[0]), ("queue", key[0])),
            (store._tlim.get(key[1]), ("type", key[1])),
        ):
            if limit is not None:
                self.taken[scoped] = self.taken.get(scoped, 0) + 1
                if limit.rate is not None:
                    bucket = store._buckets[scoped]
                    bucket.refill(self.now)
                    bucket.tokens -= 1.0
                    self.used.add(scoped)

    def save(self) -> None:
        """Write the buckets the claim took tokens from (in its transaction)."""
        if self.used:
            buckets = self.store._buckets
            self.store._conn.executemany(
                "UPDATE limits SET tokens = ?, tokens_at = ? WHERE scope = ? AND name = ?",
                [(buckets[key].tokens, buckets[key].at, *key) for key in self.used],
            )


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
