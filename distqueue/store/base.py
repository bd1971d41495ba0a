"""The Store contract: every backend implements this, and tests/contract proves it.

Rules that hold for every operation of every backend:

- Each call is atomic: it happens whole or not at all, and concurrent calls see
  each other's effects as if they ran one after another.
- A call that returns has made its effect durable (as durable as the backend is
  configured to be); a call that raises a DistQueueError changed nothing (but see
  StoreError below).
- Time comes in as ``now`` (epoch seconds); no operation reads the clock.
- Every claim gives the job a new fencing token (``Job.token``): it grows with each
  claim of the job and is never handed out twice, even when the process crashed
  before the claim was committed (the embedded store puts its open count, an
  epoch, in the high bits). ``complete``, ``fail`` and ``progress`` with any other
  token — or, when ``worker`` is given, from any worker but the holder — raise
  LeaseLost and change nothing.
- A call that raises StoreError may be tried again: the store is unavailable for
  now (Redis down, disk full) and comes back by itself. The embedded store's
  StoreError means nothing changed. On Redis it means *maybe*: a connection that
  dropped after Redis ran the script loses the answer, not the change (nothing is
  retried automatically, so nothing happens twice); an enqueue sent again with a
  unique key is safe.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from distqueue.errors import DistQueueError
from distqueue.jobs import Job, JobError, JobSpec, JobState
from distqueue.policy import DEFAULT_LEASE, Retention

__all__ = [
    "Enqueued", "FailOutcome", "Heartbeat", "Limit", "Periodic", "Stats", "Store",
    "WorkerRecord",
]  # fmt: skip

#: the longest worker id the registry takes (characters)
MAX_WORKER_ID = 200
#: the largest info of a worker the registry takes (bytes of its JSON)
MAX_WORKER_INFO = 64 * 1024
#: the most job ids a WorkerRecord lists
WORKER_JOBS = 100
#: the most jobs one ``kick`` queues again
MAX_KICK = 1000
#: the most timed pauses one resume_due ends (the rest: the next tick, at once)
MAX_RESUME = 100
#: the most records the registry keeps: noting one more worker forgets the one
#: seen longest ago (a safeguard: real queues have hundreds)
MAX_WORKERS = 10_000
#: the most stale records one ``workers`` call deletes
WORKERS_PURGE = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class Enqueued:
    """The answer to one spec of an enqueue."""

    #: the job's id
    id: int
    #: False when the unique key matched an existing job, whose id this is
    created: bool
    #: the job's state (the existing job's state when not created)
    state: JobState


@dataclass(frozen=True, kw_only=True, slots=True)
class FailOutcome:
    """What ``fail`` decided."""

    #: retrying, dead or cancelled
    state: JobState
    #: when retrying: when the job becomes queued again
    run_at: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Heartbeat:
    """The answer to a heartbeat: what the worker still holds."""

    #: job id -> fencing token of every job the worker holds (leases now extended)
    held: dict[int, int]
    #: ids among ``held`` whose cancellation was asked for: the worker should stop them
    cancel: list[int]


@dataclass(frozen=True, kw_only=True, slots=True)
class Stats:
    """Counts without scanning every job."""

    #: state name -> number of jobs in it (every state present, zeros included)
    by_state: dict[str, int]
    #: queue -> state name -> number (states with zero jobs omitted)
    by_queue: dict[str, dict[str, int]]
    #: priority -> number of queued jobs (priorities with none omitted)
    queued_by_priority: dict[int, int]
    #: running totals since the store was created: submitted, succeeded, failed
    #: (attempts that failed), retried, dead, cancelled, lost, expired, purged
    totals: dict[str, int] = field(default_factory=dict)
    #: when the queued job that has waited longest became queued (epoch seconds), or
    #: None when no job is queued. A job becomes queued at the ``now`` of the
    #: operation that last queued it: its enqueue (a job due at once), the promote
    #: that queued it (a scheduled or retrying job: at or after its run-at, when
    #: promote ran), the release or expire that took it back, the retry of a dead or
    #: cancelled job. Read from the first job of each (queue, type, priority) FIFO,
    #: so bounded by those, never by the jobs: exact while ``now`` does not go back
    #: from one operation to the next (each FIFO's first job is then its oldest). A
    #: job queued again by a distqueue older than this field counts from its submit.
    oldest_queued_at: float | None = None
    #: PostgreSQL only: seconds the oldest open transaction of another client of the
    #: database has been running (its snapshot holds back vacuum, and queue tables,
    #: with their constant updates, bloat first), None when there is none or the
    #: store is not a database
    oldest_transaction_age: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerRecord:
    """One worker of the registry (Store.note_worker, Store.workers)."""

    #: the worker's id
    id: str
    #: what it said of itself, a JSON object (name, host, pid, types, queues,
    #: concurrency, server, since ...), as given to note_worker
    info: dict[str, Any]
    #: when it was last noted (the ``now`` of its last note_worker)
    seen: float
    #: ids of the jobs it holds (running, leased to it) now, ascending, at most WORKER_JOBS
    jobs: list[int]


#: the most limits (Store.set_limit) and periodic schedules (Store.set_periodic) a
#: store keeps, each
MAX_LIMITS = 10_000
MAX_PERIODICS = 10_000
#: the name of a limit on every queue together (Limit.max_depth only)
ALL_QUEUES = "*"


@dataclass(frozen=True, kw_only=True, slots=True)
class Limit:
    """Flow control for one queue or one job type, shared by every server and worker
    on the store (Store.set_limit). A field left None sets no limit of that kind.

    - ``concurrency``: at most this many of its jobs running at once. A claim hands out
      no job that would make it more; the jobs stay queued and do not hold up jobs of
      other queues and types.
    - ``rate``/``period``/``burst``: at most ``rate`` starts per ``period`` seconds, a
      token bucket of at most ``burst`` tokens (1 = evenly spaced starts) filled at
      ``rate / period`` tokens a second from the ``now`` of the claims; a claim takes
      one token per job it hands out. A new limit starts with a full bucket.
    - ``max_depth`` (queue scope only): at most this many unfinished jobs (waiting,
      scheduled, queued, running, retrying) in the queue; with ``name`` ALL_QUEUES,
      in all queues together. An enqueue that would create more raises QueueFull and
      stores nothing.
    """

    #: "queue" or "type"
    scope: str
    #: the queue's or type's name (ALL_QUEUES: every queue, for max_depth)
    name: str
    concurrency: int | None = None
    rate: int | None = None
    period: float = 1.0
    burst: int = 1
    max_depth: int | None = None

    @property
    def empty(self) -> bool:
        """No limit of any kind: setting it removes the record."""
        return self.concurrency is None and self.rate is None and self.max_depth is None


@dataclass(frozen=True, kw_only=True, slots=True)
class Periodic:
    """A schedule that submits a job at each tick (Store.set_periodic). The store
    keeps it and its next tick; distqueue/schedules.py computes the ticks (cron or
    interval) and fires them (Store.fire_periodic)."""

    #: its name (a queue-name-like word): one schedule per name
    name: str
    #: a cron expression, 5 fields or 6 with seconds first; or None with ``every``
    cron: str | None = None
    #: an interval in seconds; or None with ``cron``
    every: float | None = None
    #: the IANA time zone the cron expression is read in
    timezone: str = "UTC"
    #: the job each tick submits, as the JSON object of distqueue.schedules.spec_to_dict
    spec: dict[str, Any] = field(default_factory=dict)
    #: a tick missed while nothing ran (more than schedules.MISSED seconds late):
    #: "once" = submit one job for it on recovery, "skip" = none
    catch_up: str = "once"
    #: paused: ticks pass without a job
    paused: bool = False
    #: when the next tick is due (epoch seconds)
    next_at: float = 0.0

    @property
    def definition(self) -> str:
        """What set_periodic compares: the schedule without its state (next_at, paused)."""
        import json

        return json.dumps(
            [self.cron, self.every, self.timezone, self.spec, self.catch_up],
            sort_keys=True, separators=(",", ":"),
        )  # fmt: skip


@runtime_checkable
class Store(Protocol):
    """Where jobs live. One interface; sqlite, redis and postgres implement it."""

    async def enqueue(self, specs: Sequence[JobSpec], now: float) -> list[Enqueued]:
        """Store many jobs in one atomic step; return one Enqueued per spec, in order.

        A spec whose ``run_at`` is after ``now`` is scheduled, else queued. A spec
        whose unique key belongs to a job that still exists (not yet purged) is not
        stored again: its Enqueued names that job with ``created=False``. Two specs
        with the same key in one call yield one job.
        Raises InvalidJob (naming the spec's index) if any spec is invalid, and then
        stores none of them.

        Dependencies (JobSpec.after): every id must name an existing job (else
        InvalidJob, naming the spec and the id) that fewer than MAX_WAITERS jobs wait
        for already. A spec whose jobs have all succeeded (or ended, with on_failure
        "run") is queued or scheduled as usual; one with a job dead or cancelled and
        on_failure "cancel" is created cancelled (Enqueued.state says so); otherwise
        it is ``waiting``. The operation that finishes a job it waits for (complete,
        fail, expire, release, cancel, a claim past a deadline) moves it on in the
        same atomic step: when that job ended dead or cancelled and on_failure is
        "cancel", it is cancelled at once (it waits for nothing more), and a job
        cancelled so moves its own waiters on in turn; otherwise, when that was the
        last job it waited for, it is queued (scheduled if its run_at is ahead). A
        backend may finish a very long cancel cascade in later operations (promote),
        bounded per operation. Specs of one call may wait only for jobs that exist before the call.

        Depth (Limit.max_depth): when the jobs it would create (unique keys that
        match create none) would take a queue, or all queues, past its max_depth,
        raises QueueFull (its message: ``queue <q> holds <n> jobs (max_depth <m>)``,
        or ``all queues hold <n> jobs (max_depth <m>)``) and stores nothing.
        """
        ...

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
        """Lease up to ``n`` queued jobs to ``worker``, most urgent first, FIFO within
        a priority, only of the given queues and types (None = any).

        Each claimed job is running, its ``attempts`` (its fencing token) one higher,
        its lease until ``now + lease``. A queued job whose deadline has passed is
        not handed out: it becomes dead with error kind ``expired``.

        Flow control: no job of a paused queue is handed out; nor a job whose queue or
        type is at its concurrency limit or out of rate tokens (Limit) — it stays
        queued in its place, and jobs of other queues and types are handed out past
        it. The work of a claim is bounded by what it hands out and by the (queue,
        type) pairs that could give a job, not by the limited or paused ones holding
        jobs.

        ``max_bytes`` bounds the claim in bytes as well (None = no byte limit): a
        job's size is its stored args (their JSON encoding) plus its payload, and the
        claim stops before the first job that would take the total of the jobs it
        claimed past ``max_bytes``. That job, and every one behind it, stays queued in
        its place; the claim does not skip it for a smaller one. The first job is
        claimed whatever its size, so a job larger than the budget is handed out
        alone. Jobs ended as expired cost nothing. Raises InvalidJob for a negative
        ``max_bytes``.

        Returns the claimed jobs in hand-out order, payload included; [] if none.
        """
        ...

    async def complete(
        self, job_id: int, token: int, result: Any, now: float, *, worker: str | None = None
    ) -> None:
        """Mark a running job succeeded with ``result`` (a JSON value, or bytes).

        Raises JobNotFound, or LeaseLost if ``token`` is not the job's current claim
        (the job is not running, or it was claimed again since) or ``worker`` (when
        given) is not the worker holding it.
        """
        ...

    async def complete_many(
        self, items: Sequence[tuple[int, int, Any]], now: float, *, worker: str | None = None
    ) -> list[DistQueueError | None]:
        """``complete`` for many ``(id, token, result)`` in one atomic step (pipelined
        ACKs). Each item succeeds or is refused on its own, in order, exactly as
        ``complete`` would: the answer lists None or the error, item by item.
        Raises InvalidJob (and changes nothing) for a malformed id, token or result.
        """
        ...

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
        """Record a failed attempt and decide what follows.

        - A job whose cancellation was asked for becomes cancelled, whatever the
          error (the worker stopped it, reporting kind ``cancelled``, or it failed
          on its own first): a cancelled job never runs again.
        - ``retryable=False`` (unknown type, invalid arguments, ...) makes it dead at once.
        - Otherwise, while its failures do not exceed ``max_retries``, it is retrying
          until ``now + backoff`` (RetryPolicy); after that it is dead.
        ``priority``, when given, becomes the job's priority whatever follows
        (beanstalk's ``bury <id> <pri>`` is a non-retryable fail with one).
        Raises JobNotFound or LeaseLost as ``complete`` does, InvalidJob for a bad
        priority (and changes nothing).
        """
        ...

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
        """The holder gives one running job back (beanstalk's ``release``): queued
        again at the back of its priority (``priority`` when given), or scheduled
        until ``run_at`` when that is after ``now``. Nothing is counted against it:
        failures and lost stay as they were (attempts too: the next claim adds one).
        A job whose cancel was asked for becomes cancelled instead (the jobs waiting
        for it move on, as for any cancel). Returns the job's state afterwards.
        Raises JobNotFound or LeaseLost as ``complete`` does, InvalidJob for a bad
        priority or run_at (and changes nothing).
        """
        ...

    async def touch(
        self, job_id: int, token: int, now: float, lease: float, *, worker: str | None = None
    ) -> float:
        """The holder sets one running job's lease to end at ``now + lease``
        (beanstalk's ``touch``, and its per-job TTR); its other jobs are untouched.
        Returns when the job's lease ends now, as ``get`` reports it (a store that
        keeps a lease per worker may report a later end while the worker's
        heartbeats cover the job). Raises JobNotFound or LeaseLost as ``complete``
        does, InvalidJob for a lease that is not a positive finite number.
        """
        ...

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
        """Record a running job's progress report. Raises JobNotFound or LeaseLost."""
        ...

    async def heartbeat(self, worker: str, now: float, lease: float = DEFAULT_LEASE) -> Heartbeat:
        """Extend every lease ``worker`` holds to ``now + lease``; say what it holds."""
        ...

    async def expire(self, now: float) -> list[int]:
        """Take back every job whose lease ran out at or before ``now``; return their ids.

        Each counts as lost: it is queued again, unless it was lost more than the
        poison limit (then dead, error kind ``poison``) or its cancel was asked for
        (then cancelled).
        """
        ...

    async def release(
        self,
        worker: str,
        now: float,
        *,
        ids: Collection[int] | None = None,
        vanished: bool = False,
    ) -> list[int]:
        """Take back the jobs ``worker`` holds (only ``ids`` among them, if given).

        ``vanished=False`` (the worker returned them, e.g. on a graceful stop): they
        are queued again and nothing is counted against them, except that a job
        whose cancel was asked for becomes cancelled (a cancel always sticks). ``vanished=True``
        (its connection dropped): each counts as lost, exactly as in ``expire``.
        Returns the ids taken back.
        """
        ...

    async def promote(self, now: float) -> list[int]:
        """Queue every scheduled or retrying job whose run-at is at or before ``now``."""
        ...

    async def next_wakeup(self) -> float | None:
        """The earliest time a promote or expire could have work (or None).

        May be early, never late: a caller that sleeps until then misses nothing.
        """
        ...

    async def cancel(self, job_id: int, now: float, *, running: bool = True) -> JobState:
        """Cancel a job. Waiting, scheduled, queued or retrying: it becomes cancelled
        (and the jobs waiting for it move on, see enqueue). Running:
        it stays running with ``cancel_requested`` set, for its worker to be told;
        with ``running=False`` a running job is refused instead (IllegalTransition)
        and nothing changes (``cancel_requested`` stays as it was). The state is
        checked in the same atomic step that cancels, so a claim just before the
        cancel is never overridden (beanstalkd's delete of a job another connection
        reserved).
        Returns the job's state afterwards.
        Raises JobNotFound, or IllegalTransition for a finished job (or, with
        ``running=False``, a running one).
        """
        ...

    async def retry(self, job_id: int, now: float) -> None:
        """Queue a dead or cancelled job again, its failures and lost counts reset.
        Raises JobNotFound, or IllegalTransition for a job in any other state.
        """
        ...

    async def kick(
        self, queue: str, n: int, now: float, *, type: str | None = None
    ) -> builtins.list[int]:
        """beanstalk's ``kick``: up to ``n`` (1..MAX_KICK) of the queue's dead jobs
        (of ``type`` only, when given) queued again as ``retry`` queues them, those
        dead longest first (finished_at, then id); when the queue has no dead job (of
        that type), up to ``n`` of its scheduled and retrying jobs queued now, the
        soonest due first (run_at, then id). Returns their ids in that order. The
        work is bounded by ``n``, never by the jobs stored. InvalidJob for a bad
        queue or type name or ``n``.
        """
        ...

    async def claim_job(
        self, worker: str, job_id: int, now: float, *, lease: float = DEFAULT_LEASE
    ) -> Job:
        """Lease one given queued job to ``worker`` (beanstalk's ``reserve-job``), as
        a claim would — a new fencing token (attempts + 1), running until now +
        lease, the counts moved exactly as a claim moves them — whatever its place in
        its queue, pauses and limits aside (it counts against concurrency limits while
        it runs, takes no rate token). Raises JobNotFound, or IllegalTransition when
        it is not queued (the caller kicks a delayed or buried job first), or when
        its deadline passed: then, as a claim would, it is ended dead (error kind
        ``expired``) — the one IllegalTransition that changed something. InvalidJob
        for a bad worker id or lease.
        """
        ...

    async def kick_job(self, job_id: int, now: float) -> JobState:
        """beanstalk's ``kick-job``: a dead job queued again (as ``retry``), a
        scheduled or retrying job queued now. Returns the state it was in. Raises
        JobNotFound, or IllegalTransition for a job in any other state.
        """
        ...

    async def peek(self, queue: str, state: JobState, *, type: str | None = None) -> Job | None:
        """The job beanstalk's ``peek-ready`` / ``peek-delayed`` / ``peek-buried``
        shows, whole, or None; of ``type`` only when given; bounded work:

        - QUEUED: the job a claim of that queue (and type) would take next, pauses
          and limits aside: the most urgent, the first queued among those;
        - SCHEDULED: the scheduled or retrying job due soonest (run_at, then id);
        - DEAD: the job dead longest (finished_at, then id).

        InvalidJob for a bad queue or type name, ValueError for another state.
        """
        ...

    async def get(self, job_id: int) -> Job | None:
        """The whole job, payload and result included, or None."""
        ...

    async def list(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        type: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[Job]:
        """Jobs matching every filter given, newest (highest id) first, at most
        ``limit`` (1..1000), only ids below ``before`` when given (the paging
        cursor: pass the last id of the previous page). Summaries: ``payload``
        and ``result`` are None; ``payload_size`` is set.
        """
        ...

    async def stats(self) -> Stats:
        """Counts by state, by queue and state, queued by priority, and totals."""
        ...

    async def sweep(self, now: float, retention: Retention | None = None) -> int:
        """Delete succeeded jobs finished more than ``retention.succeeded`` seconds
        before ``now``, and dead or cancelled ones older than ``retention.failed``.
        Their unique keys become free. Returns how many were deleted. Works in
        bounded batches: other operations run between them.
        """
        ...

    async def delete(self, job_id: int) -> None:
        """Delete one finished job now (purge one dead letter).
        Raises JobNotFound, or IllegalTransition for an unfinished job.
        """
        ...

    async def note_types(self, types: Collection[str], now: float) -> None:
        """Remember that a worker serving ``types`` was seen at ``now``."""
        ...

    async def known_types(self) -> dict[str, float]:
        """Every type a worker ever declared (until purged) -> when one was last seen."""
        ...

    async def note_worker(self, worker: str, info: Mapping[str, Any], now: float) -> None:
        """Record that ``worker`` is alive at ``now`` with ``info`` (a JSON object: what
        it says of itself), replacing its previous info and time. The registry keeps
        at most MAX_WORKERS records: noting a new worker beyond that forgets the one
        seen longest ago. Raises InvalidJob, and changes nothing, for info that is
        not a JSON object of at most MAX_WORKER_INFO bytes encoded, or a worker id that
        is empty or longer than MAX_WORKER_ID characters.

        The registry is liveness information, not a promise: a store may keep it in
        memory when only one process opens it (the embedded store does).
        """
        ...

    async def workers(
        self, now: float, *, max_age: float, limit: int = 1000
    ) -> builtins.list[WorkerRecord]:  # (``list`` is the method above, in here)
        """The workers noted at or after ``now - max_age``, by id, at most ``limit``
        (1..1000), each with the ids of the jobs it holds right now (the store's
        truth, as ``heartbeat`` would say). Records older than that are not returned,
        and are deleted (at most WORKERS_PURGE of them per call; the rest by later
        calls). Raises InvalidJob for a bad ``limit`` or a negative ``max_age``.
        """
        ...

    async def forget_worker(self, worker: str) -> None:
        """Drop ``worker``'s record (it said goodbye). Its jobs are not touched.
        Idempotent. Raises InvalidJob for a worker id note_worker would refuse.
        """
        ...

    # -- flow control: limits, paused queues, periodic schedules (#14) -------------------

    async def set_limit(self, limit: Limit) -> None:
        """Set (replace) the limit of ``limit.scope``/``limit.name``; an empty limit
        (Limit.empty) removes it. Takes effect from the next claim or enqueue: jobs
        already running stay running. Raises InvalidJob, changing nothing, for a bad
        scope or name, a count below 1, a period not > 0, a max_depth on a type, a
        rate or concurrency on ALL_QUEUES, or a new limit beyond MAX_LIMITS.
        """
        ...

    async def limits(self) -> builtins.list[Limit]:
        """Every limit set, by (scope, name)."""
        ...

    async def pause(self, queue: str, paused: bool, *, until: float | None = None) -> None:
        """Pause (``paused=True``) or resume a queue: a paused queue's jobs stay queued
        and no claim hands them out; running ones finish. Idempotent.

        ``until`` (epoch seconds) ends the pause then: ``resume_due`` resumes it at
        the first housekeeping tick at or after it (next_wakeup counts it), whichever
        process sharing the store runs that tick — a pause outlives the process that
        asked for it. Without ``until`` it lasts until resumed. A pause replaces the
        one before it (its end too). InvalidJob, changing nothing, for a bad name, an
        ``until`` that is not a finite number, or an ``until`` with ``paused=False``.
        """
        ...

    async def paused(self) -> builtins.list[str]:
        """The paused queues, sorted (a pause whose end has come is listed until
        resume_due has ended it: claims obey it until then)."""
        ...

    async def pauses(self) -> dict[str, float | None]:
        """Each paused queue: when its pause ends (epoch seconds), None for a pause
        without an end."""
        ...

    async def resume_due(self, now: float) -> builtins.list[str]:
        """Resume the queues whose pause ends at or before ``now``, at most
        MAX_RESUME of them (the earliest ends first); those queues, sorted. Waiting
        FETCHes of other processes are woken as by ``pause(queue, False)``. Bounded:
        reads the pauses that end, not every pause."""
        ...

    async def set_periodic(self, periodic: Periodic) -> Periodic:
        """Add or change a schedule; returns it as stored. When a schedule of that name
        exists with the same ``definition``, it is kept as it is (its next_at and
        paused state: every worker that serves a periodic task sets it at start, and
        must not move its ticks); otherwise it is stored as given. InvalidJob for a
        bad name, neither or both of cron and every, a spec that is not a JSON
        object, catch_up not once/skip, or a new schedule beyond MAX_PERIODICS.
        (The cron expression and time zone are checked by distqueue.schedules.)
        """
        ...

    async def periodics(self) -> builtins.list[Periodic]:
        """Every schedule, by name."""
        ...

    async def remove_periodic(self, name: str) -> bool:
        """Delete a schedule; False when there was none of that name."""
        ...

    async def pause_periodic(self, name: str, paused: bool) -> None:
        """Pause or resume a schedule (a paused one's ticks pass without a job).
        Raises InvalidJob when there is no schedule of that name."""
        ...

    async def due_periodics(self, now: float, limit: int = 100) -> builtins.list[Periodic]:
        """Schedules whose next tick is at or before ``now`` (paused ones included:
        their ticks pass without a job), earliest first, at most ``limit``."""
        ...

    async def fire_periodic(
        self, name: str, tick: float, next_at: float, spec: JobSpec | None, now: float
    ) -> Enqueued | None:
        """Fire the tick ``tick`` of schedule ``name``, once however many servers try:
        when the schedule's next_at is ``tick``, in one atomic step, enqueue ``spec``
        (None: the tick passes without a job) with the unique key
        ``periodic:<name>:<tick as %.6f>`` and set next_at to ``next_at`` (> tick);
        return the enqueue's answer (None when spec is None). When next_at is not
        ``tick`` (another server fired it, the schedule changed or is gone), change
        nothing and return None. QueueFull/InvalidJob from the enqueue leave next_at
        as it was.
        """
        ...

    async def watch(
        self, on_ready: Callable[[], None], on_done: Callable[[Collection[int]], None]
    ) -> None:
        """Report what *other* processes sharing this store did, until cancelled:
        ``on_ready()`` when jobs may have become ready (enqueued, promoted, released,
        retried), ``on_done(ids)`` when jobs finished. Servers and direct-mode workers
        wake their blocked FETCH and WAIT with it instead of waiting for their next
        poll. A store only one process can open returns at once: nothing to watch.
        Best effort: a missed report costs at most one poll interval, never a job.
        """
        ...

    async def close(self) -> None:
        """Finish what was asked, release the store's resources. Idempotent."""
        ...
