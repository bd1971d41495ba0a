"""The rules the server applies to each command, between the wire and the Store.

Command handlers (commands.py) parse and reply; this module decides (which types
are accepted, when a blocked FETCH or WAIT wakes, which jobs go back when a
worker leaves); the Store makes every state change atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from distqueue._version import __version__
from distqueue.aio import cancel_and_wait
from distqueue.clock import Clock, system_clock
from distqueue.config import ServerConfig
from distqueue.errors import (
    DistQueueError,
    InvalidJob,
    JobFailed,
    JobNotFound,
    LeaseLost,
    NotFinished,
    StoreError,
    Timeout,
    UnknownType,
)
from distqueue.jobs import TERMINAL_STATES, Job, JobError, JobSpec, JobState
from distqueue.limits import limit_to_wire, merge_limit
from distqueue.names import BUILTIN_TYPES
from distqueue.schedules import make_periodic
from distqueue.schedules import tick as fire_due_ticks
from distqueue.service.metrics import Metrics, TimedStore
from distqueue.service.waiters import POLL, DoneWaiters, ReadyWaiters
from distqueue.store.base import (
    FailOutcome,
    Heartbeat,
    Limit,
    Periodic,
    Stats,
    Store,
    WorkerRecord,
)  # fmt: skip

__all__ = ["BUILTIN_TYPES", "Service", "StoreHealth", "WorkerInfo"]

log = logging.getLogger("distqueue.server")

#: a claim the worker does not know about is orphaned once it is this old (seconds)
ORPHAN_AGE = 5.0
#: seconds between reloads of the known types from a (possibly shared) store
TYPES_REFRESH = 5.0
#: seconds between two looks at whether limits or waiting jobs exist (flow_active):
#: jobs submitted and limits set through other servers or processes count from then
FLOW_REFRESH = 1.0
#: retry backoff of background store work while the store fails: first, longest wait
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
#: seconds a worker whose connection dropped (no BYE) keeps its jobs, so a worker that
#: reconnects at once keeps them too; at most a third of the lease
RECONNECT_GRACE = 3.0
#: the longest pause with an end (seconds): beanstalk's pause-tube range, 2**32-1
MAX_PAUSE = 2**32 - 1


class StoreHealth:
    """Whether the store answers, judged by the calls that need it; an outage is
    logged once when it starts and once when it ends, never per attempt."""

    def __init__(self, what: str = "store") -> None:
        self.what = what
        #: the last error while the store fails, None while it works
        self.error: str | None = None
        #: epoch seconds the current outage began
        self.since: float | None = None
        #: outages seen since start
        self.outages = 0
        #: monotonic time the last outage ended (0.0: none yet)
        self.recovered_at = 0.0
        self._began = 0.0

    def failed(self, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        if self.error is None:
            self.outages += 1
            self.since, self._began = time.time(), time.monotonic()
            if isinstance(exc, StoreError):
                log.error("%s unavailable: %s; retrying with backoff", self.what, message)
            else:  # not a store fault: a bug; show where, once
                log.error("%s work failed; retrying with backoff", self.what, exc_info=exc)
        self.error = message

    def ok(self) -> None:
        if self.error is not None:
            self.recovered_at = time.monotonic()
            log.warning("%s available again after %.1fs", self.what,
                        time.monotonic() - self._began)  # fmt: skip
            self.error, self.since = None, None

    def to_wire(self) -> dict[str, Any]:
        return {"ok": self.error is None, "error": self.error, "since": self.since,
                "outages": self.outages}  # fmt: skip


async def keep_trying(step: Callable[[], Awaitable[float]], health: StoreHealth) -> None:
    """Run ``step`` forever, sleeping the seconds it returns; when it raises, report
    it to ``health`` and try again after a capped, jittered backoff. Never returns
    on an error: a store that fails for a while is weather, not death."""
    delay = BACKOFF_MIN
    while True:
        try:
            nap = await step()
        except Exception as exc:
            health.failed(exc)
            nap = delay * random.uniform(0.5, 1.0)
            delay = min(BACKOFF_MAX, delay * 2)
        else:
            health.ok()
            delay = BACKOFF_MIN
        await asyncio.sleep(nap)


@dataclass(kw_only=True, eq=False)
class WorkerInfo:
    """A worker as this server knows it (from HELLO)."""

    #: the worker's id, unique per worker process
    id: str
    #: a name for people (host and pid by default)
    name: str
    #: the job types it serves
    types: frozenset[str]
    #: the queues it serves (None = every queue)
    queues: frozenset[str] | None
    #: how many jobs it runs at once
    concurrency: int
    #: when it said HELLO (epoch seconds)
    since: float
    #: open connections of this worker (a worker may use one for FETCH, one for ACKs)
    connections: int = 0
    #: jobs it holds, as far as this server saw (FETCH adds, ACK/FAIL/BEAT correct
    #: it): id -> (monotonic time this server handed it out, its priority), both
    #: None for a job another server (or this one before a restart) handed out
    held: dict[int, tuple[float | None, int | None]] = field(default_factory=dict)
    #: it said BYE on one of its connections: its leaving is not a vanishing
    said_bye: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "types": sorted(self.types),
            "queues": None if self.queues is None else sorted(self.queues),
            "concurrency": self.concurrency, "since": self.since, "held": len(self.held),
        }  # fmt: skip


class Service:
    """One per server: the store, the waiters and the connected workers."""

    def __init__(self, store: Store, config: ServerConfig, clock: Clock = system_clock) -> None:
        #: what this server counted (metrics.py); the store's calls are timed into it
        self.metrics = Metrics()
        self.store = cast(Store, TimedStore(store, self.metrics))
        self.config = config
        self.clock = clock
        self.ready = ReadyWaiters()
        self.done = DoneWaiters()
        self.workers: dict[str, WorkerInfo] = {}
        self._types: dict[str, float] = {}
        self._types_loaded = 0.0
        self.started = time.monotonic()
        self.health = StoreHealth()
        self._background: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        #: stops the server this service runs in (SHUTDOWN); None in direct mode
        self.on_shutdown: Callable[[str], None] | None = None
        #: where its workers are connected, as the worker registry shows it
        self.where = "direct"
        #: limits exist or jobs wait for others: a finish may make jobs claimable that
        #: were not (a freed slot, a released waiter), so blocked FETCHes are woken
        #: on every finish and tick (refreshed from the store every FLOW_REFRESH)
        self.flow_active = False
        self._flow_loaded = 0.0
        #: concurrency or rate limits exist, or paused queues: queued jobs may be held
        #: back on purpose (/health does not call an idle queue stuck then)
        self.flow_held = False
        #: the configuration's limits, set in the store by the first tick that can
        self._limits_pending = list(config.limits)

    def start_watching(self) -> None:
        """Wake blocked FETCH and WAIT on what other processes sharing the store do
        (a store only this process opens has nothing to report; see Store.watch)."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(
                self.store.watch(self.ready.notify_all, self.done.notify)
            )
            self._watcher.add_done_callback(self._reap)

    async def stop_watching(self) -> None:
        watcher, self._watcher = self._watcher, None
        await cancel_and_wait(watcher)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, keeping it referenced, logging failures."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, StoreError):
            self.health.failed(exc)  # logged once per outage
        elif exc is not None:
            log.error("background task failed", exc_info=exc)

    async def drain_background(self) -> None:
        """Wait for background work (releases of closed workers) to finish."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- types ----------------------------------------------------------------------

    async def refresh_types(self) -> None:
        self._types = await self.store.known_types()
        self._types_loaded = time.monotonic()

    def _type_known(self, type_: str, now: float) -> bool:
        if type_ in BUILTIN_TYPES:
            return True
        seen = self._types.get(type_)
        if seen is not None and seen >= now - self.config.type_memory:
            return True
        return any(type_ in w.types for w in self.workers.values())

    async def check_types(self, types: Collection[str], now: float) -> None:
        """Raise UnknownType for a type that is not known — built in, served by a
        connected worker, or in the type memory — and is close to one that is: a typo
        (``wordcont``). Any other unknown type is accepted and waits until a worker
        serves it: one that looks like a task's import path (``myapp.tasks.resize``,
        it has a dot), or a bare name far from every known type (a task named with
        ``@task(name=...)`` whose workers have not started yet)."""
        unknown = sorted({t for t in types if not self._type_known(t, now)})
        if unknown and time.monotonic() - self._types_loaded > 0.5:
            await self.refresh_types()  # another server's workers may serve them
            unknown = [t for t in unknown if not self._type_known(t, now)]
        if not unknown:
            return
        known = sorted(self.known_types(now))
        for type_ in unknown:
            close = [] if "." in type_ else difflib.get_close_matches(type_, known, 1, 0.8)
            if close:
                raise UnknownType(
                    f"unknown job type {type_!r}: no worker serves it; did you mean"
                    f" {close[0]!r}? (known types: {', '.join(known)}); to queue it anyway:"
                    " distqueue submit --no-check-type, or check_type=False in Python"
                )

    def known_types(self, now: float) -> set[str]:
        """The types a job may have without a warning: built in, served by a connected
        worker, or declared by one within the type memory."""
        memory = now - self.config.type_memory
        return (
            set(BUILTIN_TYPES)
            | {t for t, seen in self._types.items() if seen >= memory}
            | {t for w in self.workers.values() for t in w.types}
        )

    # -- clients ----------------------------------------------------------------------

    async def submit(self, specs: Sequence[tuple[JobSpec, bool]]) -> list[int]:
        now = self.clock()
        await self.check_types([spec.type for spec, check in specs if check], now)
        if getattr(self.store, "serial", False):
            # Wake the FETCHes that can take these jobs as soon as the enqueue is in
            # the store's queue (call_soon runs once this task waits on it): their
            # claims follow it there and find the jobs, without waiting for the
            # enqueue's commit to come back first. A spec that turns out not to be
            # ready (a unique key's earlier job) costs one empty claim.
            expected = [(spec.queue, spec.type) for spec, _ in specs
                        if (spec.run_at is None or spec.run_at <= now)
                        and not spec.after]  # fmt: skip
            if expected:
                asyncio.get_running_loop().call_soon(self.ready.notify, expected)
            results = await self.store.enqueue([spec for spec, _ in specs], now)
            self._count_submitted(specs, results)
            after = [(spec.queue, spec.type) for (spec, _), res in zip(specs, results, strict=True)
                     if spec.after and res.created and res.state is JobState.QUEUED]  # fmt: skip
            if after:  # (jobs whose jobs had all succeeded already)
                self.ready.notify(after)
            return [res.id for res in results]
        results = await self.store.enqueue([spec for spec, _ in specs], now)
        self._count_submitted(specs, results)
        ready = [
            (spec.queue, spec.type)
            for (spec, _), res in zip(specs, results, strict=True)
            if res.created and res.state is JobState.QUEUED
        ]
        if ready:
            self.ready.notify(ready)
        return [res.id for res in results]

    def _count_submitted(
        self, specs: Sequence[tuple[JobSpec, bool]], results: Sequence[Any]
    ) -> None:
        submitted = self.metrics.submitted
        for (spec, _), res in zip(specs, results, strict=True):
            if res.created:
                submitted.inc(spec.priority)
                if res.state is JobState.WAITING:
                    self.flow_active = True

    async def status(self, job_id: int) -> Job:
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def result(self, job_id: int) -> Job:
        """The succeeded job; NotFinished or JobFailed otherwise."""
        job = await self.status(job_id)
        if job.state is JobState.SUCCEEDED:
            return job
        if job.state in TERMINAL_STATES:
            why = "" if job.error is None else f": {job.error.kind}: {job.error.message}"
            raise JobFailed(f"job {job_id} is {job.state.value}{why}")
        raise NotFinished(f"job {job_id} is {job.state.value}, not finished")

    async def wait(self, job_id: int, timeout: float | None) -> Job:
        """Return the job once it is finished; Timeout after ``timeout`` seconds. A
        store outage meanwhile is waited out too (its StoreError only if the
        time runs out during it)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            poll = self.config.poll
            # told of a finish from before the read on: none slips in between
            watch = self.done.watch(job_id)
            try:
                job = await self.status(job_id)
            except StoreError:
                self.done.drop(watch, job_id)
                if deadline is not None and loop.time() + poll > deadline:
                    raise
                await asyncio.sleep(poll)
                continue
            except BaseException:
                self.done.drop(watch, job_id)
                raise
            if job.state in TERMINAL_STATES:
                self.done.drop(watch, job_id)
                return job
            remaining = poll if deadline is None else min(poll, deadline - loop.time())
            if remaining <= 0:
                self.done.drop(watch, job_id)
                raise Timeout(f"job {job_id} is still {job.state.value} after {timeout}s")
            finished = await self.done.until(watch, job_id, remaining)
            if finished is not None and finished.state in TERMINAL_STATES:
                return finished  # read for us right after the ACK: see ack_many

    async def cancel(self, job_id: int, *, running: bool = True) -> JobState:
        """Cancel a job (``running=False``: unless it is running, IllegalTransition)."""
        state = await self.store.cancel(job_id, self.clock(), running=running)
        if state is JobState.CANCELLED:
            self.metrics.cancelled += 1
            self.done.notify([job_id])
            if self.flow_active:
                self.ready.notify_all()
                self.done.notify_all()  # jobs waiting for it may be cancelled with it
        return state

    async def retry(self, job_id: int) -> None:
        await self.store.retry(job_id, self.clock())
        self.ready.notify_all()

    async def purge(self, job_id: int) -> None:
        await self.store.delete(job_id)

    async def stats(self) -> dict[str, Any]:
        """The numbers STATS shows; while the store fails, its counts are empty and
        ``store.ok`` is false (the rest still answers)."""
        try:
            stats = await self.store.stats()
        except StoreError as exc:
            self.health.failed(exc)
            stats = Stats(by_state={s.value: 0 for s in JobState}, by_queue={},
                          queued_by_priority={})  # fmt: skip
        succeeded = stats.totals.get("succeeded", 0)
        dead = stats.totals.get("dead", 0)
        workers = list(self.workers.values())
        active = sum(1 for w in workers if w.held)
        metrics = self.metrics
        busy = sum(min(len(w.held), w.concurrency) for w in workers)
        slots = sum(w.concurrency for w in workers)
        return {
            "types": sorted(self.known_types(self.clock())),
            "queues_served": await self._queues_served(),
            "store": self.health.to_wire(),
            "jobs": stats.by_state,
            "queues": stats.by_queue,
            "queued_by_priority": {str(p): n for p, n in stats.queued_by_priority.items()},
            "oldest_ready_age": None
            if stats.oldest_queued_at is None
            else max(0.0, self.clock() - stats.oldest_queued_at),
            "totals": stats.totals,
            "oldest_transaction_age": stats.oldest_transaction_age,
            "processed": succeeded + dead,
            "success_rate": None if succeeded + dead == 0 else succeeded / (succeeded + dead),
            "workers": {
                "connected": len(workers),
                "active": active,
                "idle": len(workers) - active,
                "waiting": len(self.ready),
                "slots": slots,
                "busy_slots": busy,
                "list": [w.to_wire() for w in workers],
            },
            "counters": {
                "submitted": metrics.submitted.total(),
                "completed": metrics.completed.total(),
                "failed": metrics.failed.total(),
                "retried": metrics.retried.total(),
                "dead": metrics.dead.total(),
                "cancelled": metrics.cancelled,
                "lease_expired": metrics.lease_expired,
                "workers_vanished": metrics.workers_vanished,
                "stale_refused": metrics.stale_refused,
            },
            "server": {
                "version": __version__,
                "uptime": round(time.monotonic() - self.started, 3),
                # what a returned change survives: the embedded store's setting, or
                # "redis" (Redis's own appendfsync decides)
                "durability": self.durability(),
                "store": type(getattr(self.store, "inner", self.store)).__name__,
            },
        }

    async def _queues_served(self) -> list[str] | None:
        """The queues live workers serve — connected here, or anywhere else the store's
        worker registry saw them (other servers, direct mode) —; None when one of them
        serves every queue."""
        infos = [w.to_wire() for w in self.workers.values()]
        with contextlib.suppress(StoreError):
            infos += [r.info for r in await self.workers_everywhere()]
        served: set[str] = set()
        for info in infos:
            queues = info.get("queues", ())
            if queues is None:
                return None
            served.update(str(q) for q in queues)
        return sorted(served)

    def durability(self) -> str:
        inner = getattr(self.store, "inner", self.store)
        if type(inner).__name__ == "SQLiteStore":
            return str(getattr(inner, "_synchronous", self.config.durability)).lower()
        if type(inner).__name__ == "PostgresStore":
            return str(getattr(inner, "durability", "full"))  # read from the database
        return "redis"

    # -- workers ----------------------------------------------------------------------

    def connect_worker(self, info: WorkerInfo) -> WorkerInfo:
        """A worker connection said HELLO; the same worker id may open several.
        Its types are remembered in the store in the background."""
        known = self.workers.get(info.id)
        if known is None:
            self.workers[info.id] = known = info
            now = self.clock()
            for t in info.types:
                self._types[t] = now
            self.spawn(self.store.note_types(info.types, now))
            self.spawn(self._note_worker(known))
        known.connections += 1
        return known

    async def _note_worker(self, worker: WorkerInfo) -> None:
        """Tell the store's worker registry this worker is alive (the dashboard lists
        every worker of every server, and of direct mode, from it)."""
        info = worker.to_wire()
        info["server"] = self.where
        await self.store.note_worker(worker.id, info, self.clock())

    async def workers_everywhere(self) -> list[WorkerRecord]:
        """Every worker the store's registry saw within three leases, whichever
        server (or none) it is connected to."""
        return await self.store.workers(self.clock(), max_age=3 * self.config.lease)

    async def disconnect_worker(self, worker: WorkerInfo) -> None:
        """One of the worker's connections closed; when it was the last one, take back
        its jobs: at once if it said BYE (nothing counted against them); if it
        vanished, after a short grace (counted as lost), unless the same worker
        connected again meanwhile — a network blip costs nothing."""
        worker.connections -= 1
        if worker.connections > 0:
            return
        if self.workers.get(worker.id) is worker:
            del self.workers[worker.id]
        if not worker.said_bye:
            await asyncio.sleep(min(RECONNECT_GRACE, self.config.lease / 3))
            if worker.id in self.workers:
                return  # it is back: its jobs are still its own
        released = await self.store.release(worker.id, self.clock(), vanished=not worker.said_bye)
        if not worker.said_bye:
            self.spawn(self.store.forget_worker(worker.id))
            self.metrics.workers_vanished += 1
            self.metrics.worker_vanished_jobs += len(released)
            log.warning("worker %s vanished (its connection dropped without BYE):"
                        " %d of its jobs go back to the queue", worker.id, len(released),
                        extra={"worker": worker.id})  # fmt: skip
        if released:
            self.ready.notify_all()
            self.done.notify(released)  # some may have ended (poison, cancelled)

    async def fetch(
        self, worker: WorkerInfo, n: int, timeout: float, lease: float | None = None
    ) -> list[Job]:
        """Lease up to ``n`` jobs to the worker (for ``lease`` seconds, default the
        server's), waiting up to ``timeout`` for one; at most ``max_fetch_bytes`` of
        args and payloads (or one job larger than that)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            since = self.ready.version
            jobs = await self.store.claim(
                worker.id, n, self.clock(), queues=worker.queues, types=worker.types,
                lease=lease or self.config.lease, max_bytes=self.config.max_fetch_bytes,
            )  # fmt: skip
            if jobs:
                self._handed_out(worker, jobs)
                return jobs
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            nap = min(remaining, self.config.poll)
            if self.flow_active:  # jobs held back by a rate limit go again at a time
                wakeup = await self.store.next_wakeup()  # (the store's: its tokens)
                if wakeup is not None:
                    nap = min(nap, max(0.01, wakeup - self.clock()))
            await self.ready.wait(worker.queues, worker.types, nap, since)

    def _handed_out(self, worker: WorkerInfo, jobs: Sequence[Job]) -> None:
        metrics = self.metrics
        mono = metrics.last_progress = time.monotonic()
        wall = self.clock()
        for job in jobs:
            worker.held[job.id] = (mono, job.priority)
            if job.attempts == 1:
                metrics.observe_wait(job.priority, wall - job.created_at)

    def _finished(self, worker: WorkerInfo, job_id: int) -> int | None:
        """Forget a job the worker held; observe its duration; its priority."""
        since, priority = worker.held.pop(job_id, (None, None))
        if since is not None:
            self.metrics.last_progress = now = time.monotonic()
            self.metrics.observe_duration(priority, now - since)
        return priority

    def _stale(self, worker: WorkerInfo, job_id: int, what: str, exc: LeaseLost) -> None:
        self.metrics.stale_refused += 1
        worker.held.pop(job_id, None)
        log.warning("refused the %s of job %s from worker %s: %s", what, job_id, worker.id,
                    exc, extra={"job": job_id, "worker": worker.id})  # fmt: skip

    async def ack(self, worker: WorkerInfo, job_id: int, token: int, result: Any) -> None:
        try:
            await self.store.complete(job_id, token, result, self.clock(), worker=worker.id)
        except LeaseLost as exc:
            self._stale(worker, job_id, "result", exc)
            raise
        self.metrics.completed.inc(self._finished(worker, job_id))
        self.done.notify([job_id])
        if self.flow_active:
            self.ready.notify_all()

    async def ack_many(
        self, worker: WorkerInfo, items: Sequence[tuple[int, int, Any]]
    ) -> list[DistQueueError | None]:
        """Pipelined ACKs in one store operation; each answered on its own.

        A job somebody WAITs for is read again right behind its ACK (queued on the
        store together, so no extra round trip), and handed to the waiters finished."""
        watched = [job_id for job_id, _, _ in items if job_id in self.done]
        # the reads start once this task waits on the store, so the complete reaches
        # the store first (and before any command that came after these ACKs)
        reads = [asyncio.ensure_future(self.store.get(job_id)) for job_id in watched]
        try:
            errors = await self.store.complete_many(items, self.clock(), worker=worker.id)
        finally:
            if reads:
                await asyncio.wait(reads)
        done = []
        completed = self.metrics.completed
        for (job_id, _, _), err in zip(items, errors, strict=True):
            if err is None:
                done.append(job_id)
                completed.inc(self._finished(worker, job_id))
            elif isinstance(err, LeaseLost):
                self._stale(worker, job_id, "result", err)
        jobs = {}
        for read in reads:
            if not read.cancelled() and read.exception() is None:
                job = read.result()
                if job is not None and job.state in TERMINAL_STATES:
                    jobs[job.id] = job
        self.done.notify(done, jobs)
        if self.flow_active and done:
            self.ready.notify_all()
        return errors

    async def fail(
        self,
        worker: WorkerInfo,
        job_id: int,
        token: int,
        error: JobError,
        retryable: bool,
        priority: int | None = None,
    ) -> FailOutcome:
        try:
            outcome = await self.store.fail(
                job_id, token, error, self.clock(), retryable=retryable, worker=worker.id,
                priority=priority,
            )  # fmt: skip
        except LeaseLost as exc:
            self._stale(worker, job_id, "failure", exc)
            raise
        priority = self._finished(worker, job_id)
        metrics = self.metrics
        metrics.failed.inc(priority)
        if outcome.state is JobState.RETRYING:
            metrics.retried.inc(priority)
        elif outcome.state is JobState.DEAD:
            metrics.dead.inc(priority)
            log.warning("job %s is dead: %s: %s", job_id, error.kind, _first_line(error.message),
                        extra={"job": job_id, "state": "dead"})  # fmt: skip
        elif outcome.state is JobState.CANCELLED:
            metrics.cancelled += 1
        if outcome.state in TERMINAL_STATES:
            self.done.notify([job_id])
        if self.flow_active:
            self.ready.notify_all()
            if outcome.state in (JobState.DEAD, JobState.CANCELLED):
                self.done.notify_all()  # jobs waiting for it may be cancelled with it
        return outcome

    async def requeue(
        self,
        worker: WorkerInfo,
        job_id: int,
        token: int,
        *,
        priority: int | None = None,
        run_at: float | None = None,
    ) -> JobState:
        """The worker gives one job back (beanstalk's release), at a priority and after
        a delay if given; nothing counted against it."""
        try:
            state = await self.store.requeue(
                job_id, token, self.clock(), priority=priority, run_at=run_at, worker=worker.id
            )
        except LeaseLost as exc:
            self._stale(worker, job_id, "release", exc)
            raise
        worker.held.pop(job_id, None)
        if state is JobState.QUEUED:
            self.ready.notify_all()
        elif state is JobState.CANCELLED:
            self.metrics.cancelled += 1
            self.done.notify([job_id])
            if self.flow_active:
                self.done.notify_all()  # jobs waiting for it are cancelled with it
        return state

    async def kick(self, queue: str, n: int, type_: str | None = None) -> list[int]:
        """Dead jobs of the queue back to the queue, else delayed ones now (beanstalk)."""
        kicked = await self.store.kick(queue, n, self.clock(), type=type_)
        if kicked:
            self.ready.notify_all()
        return kicked

    async def claim_job(self, worker: WorkerInfo, job_id: int, lease: float | None = None) -> Job:
        """Lease one given queued job to the worker (beanstalk's reserve-job)."""
        job = await self.store.claim_job(
            worker.id, job_id, self.clock(), lease=lease or self.config.lease
        )
        self._handed_out(worker, [job])
        return job

    async def kick_job(self, job_id: int) -> JobState:
        was = await self.store.kick_job(job_id, self.clock())
        self.ready.notify_all()
        return was

    async def progress(
        self, worker: WorkerInfo, job_id: int, token: int, percent: float, message: str
    ) -> None:
        try:
            await self.store.progress(
                job_id, token, percent, message, self.clock(), worker=worker.id
            )
        except LeaseLost as exc:
            self._stale(worker, job_id, "progress", exc)
            raise

    async def beat(self, worker: WorkerInfo, holding: set[int] | None = None) -> Heartbeat:
        """Extend the worker's leases. With ``holding`` (what the worker says it runs
        or still has to report), jobs the store has it hold but it does not know —
        claimed for it by a FETCH whose answer was lost, say on a server that died —
        go back to the queue once that claim is ORPHAN_AGE old (younger, its answer
        may still be on its way)."""
        now = self.clock()
        beat = await self.store.heartbeat(worker.id, now, self.config.lease)
        self.spawn(self._note_worker(worker))
        if holding is not None:
            orphans = []
            for job_id in set(beat.held) - holding:
                job = await self.store.get(job_id)
                if job is not None and (job.started_at or now) <= now - ORPHAN_AGE:
                    orphans.append(job_id)
            if orphans:
                # counted as lost: a job whose claims keep getting lost is poison too
                released = await self.store.release(worker.id, now, ids=orphans, vanished=True)
                log.warning("worker %s: returned %d jobs it never received: %s",
                            worker.id, len(released), released)  # fmt: skip
                self.ready.notify_all()
                self.done.notify(released)  # some may have ended (poison, cancelled)
                held = {i: t for i, t in beat.held.items() if i not in released}
                beat = Heartbeat(held=held, cancel=[i for i in beat.cancel if i in held])
        known = worker.held
        worker.held = {i: known.get(i, (None, None)) for i in beat.held}
        return beat

    async def bye(self, worker: WorkerInfo) -> list[int]:
        """The worker leaves: its jobs go back to the queue, nothing counted against them."""
        worker.said_bye = True
        released = await self.store.release(worker.id, self.clock())
        self.spawn(self.store.forget_worker(worker.id))
        worker.held.clear()
        if released:
            self.ready.notify_all()
            self.done.notify(released)  # cancelled ones ended
        return released

    # -- flow control: limits, paused queues, schedules ---------------------------------

    async def refresh_flow(self) -> None:
        """Whether limits exist or jobs wait (see flow_active), from the store."""
        waiting = await self.store.list(state=JobState.WAITING, limit=1)  # (an index read)
        limits = await self.store.limits()
        self.flow_active = bool(waiting) or any(map(_holds_back, limits))
        self.flow_held = any(map(_holds_back, limits)) or bool(await self.store.paused())
        self._flow_loaded = time.monotonic()

    async def apply_limits(self, limits: Sequence[Limit]) -> None:
        """Set the limits the server's configuration gives (each replaces the stored
        limit of its queue or type; others stay as they are)."""
        for limit in limits:
            await self.store.set_limit(limit)
            log.info("limit on %s %s: %s", limit.scope, limit.name, _flow_text(limit))
        if any(map(_holds_back, limits)):
            self.flow_active = True

    async def set_limit(self, scope: str, name: str, changes: dict[str, Any]) -> Limit:
        """Change the given fields of a queue's or type's limit (None removes one);
        return the limit as it now is."""
        old = next(
            (x for x in await self.store.limits() if (x.scope, x.name) == (scope, name)), None
        )
        limit = merge_limit(old, scope, name, changes)
        await self.store.set_limit(limit)
        self.flow_active = self.flow_active or _holds_back(limit)
        self.flow_held = self.flow_held or _holds_back(limit)
        self.ready.notify_all()  # a limit raised or removed may free jobs at once
        log.info("limit on %s %s set: %s", scope, name, _flow_text(limit) or "none")
        return limit

    async def clear_limit(self, scope: str, name: str) -> None:
        await self.store.set_limit(Limit(scope=scope, name=name))
        self.ready.notify_all()

    async def pause(self, queue: str, paused: bool, *, seconds: float | None = None) -> None:
        """Pause or resume a queue; ``seconds``: a pause that ends by itself then (the
        store keeps its end: any process's housekeeping ends it, see resume_due)."""
        until = None
        if seconds is not None:
            if not paused:
                raise InvalidJob("a pause's length is for a pause, not a resume")
            ok = isinstance(seconds, int | float) and not isinstance(seconds, bool)
            if not (ok and 0 < seconds <= MAX_PAUSE):
                raise InvalidJob(f"a pause lasts more than 0 and at most {MAX_PAUSE:g} seconds")
            until = self.clock() + seconds
        await self.store.pause(queue, paused, until=until)
        self.flow_held = self.flow_held or paused
        if seconds is not None:
            log.info("queue %s paused for %gs", queue, seconds)
        else:
            log.info("queue %s %s", queue, "paused" if paused else "resumed")
        if not paused:
            self.ready.notify_all()

    async def add_schedule(
        self, name: str, spec: JobSpec, *, cron: str | None, every: float | None,
        timezone: str, catch_up: str,
    ) -> Periodic:  # fmt: skip
        """Add (or change) a schedule; one with the same definition keeps its ticks."""
        # a schedule changed while paused stays paused (its operator paused it)
        paused = any(p.name == name and p.paused for p in await self.store.periodics())
        wanted = make_periodic(
            name, spec, self.clock(), cron=cron, every=every, timezone=timezone,
            catch_up=catch_up, paused=paused,
        )  # fmt: skip
        return await self.store.set_periodic(wanted)

    # -- housekeeping -----------------------------------------------------------------

    async def tick(self) -> float:
        """Promote due jobs and take back expired leases; return seconds until the
        next thing could be due (at most POLL / 4)."""
        now = self.clock()
        if await self.store.promote(now):
            self.ready.notify_all()
        resumed = await self.store.resume_due(now)  # timed pauses that have ended
        if resumed:
            log.info("queues %s resumed: their pause ended", ", ".join(resumed))
            self.ready.notify_all()
        # after a store outage, the workers get half a lease to heartbeat before any
        # lease is taken back: they could not renew them while the store was away
        health = self.health  # (still failed: this is the first tick to work again)
        recovering = health.error is not None or (
            health.recovered_at and time.monotonic() - health.recovered_at < self.config.lease / 2
        )
        expired = [] if recovering else await self.store.expire(now)
        if expired:
            self.metrics.lease_expired += len(expired)
            log.warning("took back %d jobs whose leases ran out: %s", len(expired),
                        expired[:20])  # fmt: skip
            self.ready.notify_all()
            self.done.notify(expired)
        if time.monotonic() - self._types_loaded > TYPES_REFRESH:
            await self.refresh_types()
        if self._limits_pending:
            await self.apply_limits(self._limits_pending)
            self._limits_pending = []
        if await fire_due_ticks(self.store, now):
            self.ready.notify_all()
        if time.monotonic() - self._flow_loaded > FLOW_REFRESH:
            await self.refresh_flow()
        if self.flow_active:
            self.ready.notify_all()  # rate tokens refill with time
        wakeup = await self.store.next_wakeup()
        nap = POLL / 4
        if wakeup is not None:
            nap = min(nap, max(0.1 if recovering else 0.005, wakeup - self.clock()))
        return nap


def _holds_back(limit: Limit) -> bool:
    """A limit that holds jobs back a finish or time may free (concurrency, rate); a
    depth limit refuses submits, and makes no job claimable later."""
    return limit.concurrency is not None or limit.rate is not None


def _flow_text(limit: Limit) -> str:
    return ", ".join(
        f"{k}={v}" for k, v in limit_to_wire(limit).items() if k not in ("scope", "name")
    )


def _first_line(text: str) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= 200 else line[:200] + "..."
