"""The worker: connects, says which types it serves, fetches, runs, reports.

Shape (start -> side tasks -> stop):
- two connections to its server under one worker id: the *fetcher* blocks in
  FETCH asking for exactly its free slots; the *control* connection carries
  ACK/FAIL/PROGRESS (pipelined in batches) and BEAT, so reports never wait
  behind a FETCH;
- side tasks: the fetch loop, the heartbeat (BEAT at a third of the lease: it
  learns which jobs to cancel and which it lost), the reporter;
- each job runs as its own asyncio task, enforcing its timeout;
- when the server goes away it reconnects with backoff (to the next address if
  given several); running jobs go on meanwhile and their reports wait in
  ``unreported`` until a server takes them;
- stop(): no more FETCH, running jobs get ``grace`` seconds, the rest are
  stopped and returned to the queue by BYE; hurry() cuts the grace short.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from distqueue import codec, defaults
from distqueue.aio import cancel_and_wait
from distqueue.client.client import schedule_command
from distqueue.client.connection import AsyncConnection
from distqueue.client.direct import DirectConnection, is_store_url
from distqueue.config import redact_url
from distqueue.errors import (
    DistQueueError,
    InvalidJob,
    JobFailed,
    JobNotFound,
    LeaseLost,
    ServerUnavailable,
    StoreError,
)
from distqueue.worker.builtins import ALL_BUILTINS, BUILTINS, SHELL
from distqueue.worker.executors import (
    SHELL_OUTPUT_LIMIT,
    Outcome,
    ProcessPool,
    call_sync,
    error_outcome,
    run_async,
    run_builtin,
    run_inline,
    run_shell,
)
from distqueue.worker.registry import (
    PERIODIC,
    JobContext,
    Task,
    import_tasks,
    run_with_context,
)  # fmt: skip
from distqueue.worker.threads import ThreadRunner

__all__ = ["Worker", "WorkerOptions"]

#: Per-job events, with structured fields (``extra=``: job, type, attempt, duration,
#: error, state; the JSON log format carries them):
#:   DEBUG   job started; job succeeded (with its duration). Not INFO: a worker runs
#:           up to ~20,000 jobs/s, and a line per job would be its bottleneck (and
#:           flood the log); each call is guarded by ``log.isEnabledFor(DEBUG)`` so a
#:           disabled one costs one cached lookup.
#:   WARNING job failed: the error's first line (kind: message) and what the server
#:           made of it, read from the FAIL reply (retrying or dead); lost the lease
#:           of a job. A task's failure is the task's trouble, not the worker's: it
#:           is a WARNING whether it retries or is dead (ERROR is for the worker's own).
#:   INFO    job cancelled while running.
log = logging.getLogger("distqueue.worker")
#: the most characters of an error's first line a log line carries
ERROR_LINE_MAX = 500

#: reconnect backoff: first wait, longest wait (seconds)
RECONNECT_MIN, RECONNECT_MAX = 0.1, 5.0
#: built-ins that finish at once: run inline, without a task or a slot
INLINE = frozenset(BUILTINS)
#: seconds one FETCH blocks on the server before it is sent again
FETCH_WAIT = 5.0
#: the most jobs a worker claims beyond its free slots (its prefetch, see _prefetch)
PREFETCH_MAX = 1000
#: weight of the newest sample in the running means of job and FETCH times
EWMA = 0.2
#: retry backoff while the store fails (STORE replies): first wait, longest wait
STORE_RETRY_MIN, STORE_RETRY_MAX = 0.1, 5.0


class _Outage:
    """A store outage as one worker loop sees it: logged once when it starts and once
    when it ends; ``pause()`` waits a capped, growing, jittered while between tries."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.delay = STORE_RETRY_MIN

    async def pause(self, exc: BaseException, cap: float = STORE_RETRY_MAX) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s: the store is unavailable (%s); retrying", self.what, exc)
        await asyncio.sleep(min(cap, self.delay) * random.uniform(0.5, 1.0))
        self.delay = min(STORE_RETRY_MAX, self.delay * 2)

    def over(self) -> None:
        if self.since is not None:
            log.info("%s: the store answers again after %.1fs", self.what,
                     time.monotonic() - self.since)  # fmt: skip
            self.since, self.delay = None, STORE_RETRY_MIN


@dataclass(kw_only=True)
class WorkerOptions:
    #: host:port[,host:port...] (None = $DISTQUEUE_SERVER or 127.0.0.1:7700)
    server: str | None = None
    token: str | None = None
    #: queues served (None = every queue)
    queues: list[str] | None = field(default_factory=lambda: [defaults.QUEUE])
    #: jobs run at once; FETCH asks for the free slots
    concurrency: int = defaults.CONCURRENCY
    #: where sync Python tasks run: "thread" or "process" (killable, CPU-bound)
    pool: str = "thread"
    #: modules whose @task functions this worker serves
    tasks: list[str] = field(default_factory=list)
    #: serve shell jobs (off by default: they run any command)
    allow_shell: bool = False
    #: seconds a shell job may run when the job sets no timeout
    shell_timeout: float = 3600.0
    #: the most bytes of a shell job's stdout, and of its stderr: one that passes it
    #: has the command killed and the job failed (OutputTooLarge)
    shell_output_limit: int = SHELL_OUTPUT_LIMIT
    #: seconds running jobs get to finish after stop()
    grace: float = defaults.GRACE
    #: the worker id (default: host-pid-random)
    id: str | None = None
    #: serve the built-in types (echo, wordcount, charcount, capitalize, gzip, gunzip)
    builtins: bool = True
    #: direct mode only: seconds a claim leases a job (a server sets its own)
    lease: float | None = None
    #: TLS to every server (also on for an address written tls://HOST:PORT), verified
    #: against ``tls_ca`` (a CA file) or else the system's trust store; a client
    #: certificate: ``tls_cert`` and ``tls_key``. A CA or certificate implies TLS; not
    #: given, they are read from DISTQUEUE_TLS_CA, DISTQUEUE_TLS_CERT, DISTQUEUE_TLS_KEY
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


def with_results(args: Any, value: Any) -> Any:
    """A job's arguments with its parents' results put first (JobSpec.pass_results):
    one parent's result, or the list of several parents' results in ``after`` order,
    as Celery's chains and chords pass them."""
    if args is None:
        return [value]
    if isinstance(args, list):
        return [value, *args]
    if isinstance(args, dict):
        if set(args) == {"args", "kwargs"} and isinstance(args["args"], list):
            return {"args": [value, *args["args"]], "kwargs": args["kwargs"]}
        return {"args": [value], "kwargs": args}
    return [value, args]


@dataclass(eq=False)
class JobRun:
    """One job this worker is running."""

    id: int
    token: int
    type: str
    args: Any
    payload: bytes | None
    timeout: float | None
    deadline: float | None
    #: the fetch generation it arrived in (a BEAT sent later must list it)
    generation: int
    #: which attempt this is (1 = the first)
    attempts: int = 1
    #: why it was stopped: "timeout", "cancelled", "lost", "shutdown"; "" = not stopped
    stop_reason: str = ""
    #: stops the job's code (kills a child, a process group, cancels a task)
    kill: Any = None
    #: a sync task's thread (it cannot be killed: its slot waits for it)
    thread: Future[Outcome] | None = None
    #: its report was queued
    reported: bool = False
    #: time.monotonic() when it started (when its FETCH answered, for an inline one)
    started: float = 0.0
    #: a sync task on the ThreadRunner: its context, and its timeout's timer
    ctx: JobContext | None = None
    timer: asyncio.TimerHandle | None = None

    def stop(self, reason: str) -> None:
        if self.stop_reason:
            return
        self.stop_reason = reason
        if self.kill is not None:
            self.kill()


class _Failure(NamedTuple):
    """A failed job's log fields, kept until the server answers its FAIL."""

    type: str
    attempt: int
    duration: float
    error: str
    #: it was stopped because it was cancelled (not a failure of its own)
    cancelled: bool = False


def _error_line(error: dict[str, Any]) -> str:
    """An error's first line, ``kind: message``, cut to ERROR_LINE_MAX characters."""
    kind = str(error.get("kind", "error"))
    message = str(error.get("message") or "")[: ERROR_LINE_MAX + 1].partition("\n")[0].strip()
    text = f"{kind}: {message}" if message else kind
    return text if len(text) <= ERROR_LINE_MAX else text[: ERROR_LINE_MAX - 3] + "..."


class Worker:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.tasks: dict[str, Task] = import_tasks(options.tasks) if options.tasks else {}
        types = set(self.tasks)
        if options.builtins:
            types |= ALL_BUILTINS
        if options.allow_shell:
            types.add(SHELL)
        if not types:
            raise ValueError("this worker would serve no job type: give --tasks")
        if options.pool not in ("thread", "process"):
            raise ValueError("pool must be thread or process")
        self.types = sorted(types)
        host = socket.gethostname().split(".")[0] or "host"
        self.id = options.id or f"{host}-{os.getpid()}-{secrets.token_hex(2)}"
        hello: list[Any] = [
            "ID", self.id, "NAME", f"{host}:{os.getpid()}", "TYPES", ",".join(self.types),
            "QUEUES", "*" if options.queues is None else ",".join(options.queues),
            "CONCURRENCY", options.concurrency,
        ]  # fmt: skip
        self.fetcher: Any
        self.control: Any
        #: working on the store itself (direct mode), not through a server
        self.direct = is_store_url(options.server)
        #: the most finished jobs whose reports may wait for their answer at once
        self._ahead = options.concurrency * (1 if self.direct else 2)
        if self.direct:  # no server, the store itself
            url = str(options.server)
            lease = options.lease
            self.control = DirectConnection(url, role="worker", hello=hello, lease=lease,
                                           housekeeping=True)  # fmt: skip
            # one store and one service for both: an ACK on the control connection
            # wakes a FETCH blocked on the fetcher (a freed slot, a released waiter)
            self.fetcher = DirectConnection(url, role="worker", hello=hello, lease=lease,
                                           share=self.control)  # fmt: skip
        else:
            if options.lease is not None:
                raise ValueError(
                    "--lease is for direct mode (--store redis://...): a server sets the"
                    " lease of its jobs (distqueue server --lease)"
                )
            tls: dict[str, Any] = dict(
                tls=options.tls or None, tls_ca=options.tls_ca,
                tls_cert=options.tls_cert, tls_key=options.tls_key,
            )  # fmt: skip
            self.fetcher = AsyncConnection(options.server, token=options.token,
                                           role="worker", hello=hello, **tls)  # fmt: skip
            self.control = AsyncConnection(options.server, token=options.token,
                                           role="worker", hello=hello, **tls)  # fmt: skip
        self.running: dict[int, JobRun] = {}
        self._job_tasks: set[asyncio.Task[None]] = set()
        #: ACK/FAIL/PROGRESS commands not yet answered by a server, in order
        self.unreported: list[list[Any]] = []
        #: of those, the ACKs and FAILs (each holds a slot until accepted): kept as
        #: they come and go, not counted again at every dispatch
        self._unaccepted_count = 0
        #: (job id, token) of each FAIL not yet answered -> what its log line says
        self._failing: dict[tuple[int, int], _Failure] = {}
        self.processed = 0
        #: connected to its server (or its store, in direct mode) right now
        self.connected = False
        self.lease = defaults.LEASE
        #: the largest result the server accepts, and the most jobs one FETCH may ask
        self.max_result = defaults.MAX_PAYLOAD
        self.max_fetch = 1000
        self._generation = 0
        self._stopping = asyncio.Event()
        self._drained = False
        self._hurry = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._reports_ready = asyncio.Event()
        self._threads = ThreadPoolExecutor(options.concurrency, thread_name_prefix="dq-job")
        #: sync tasks' threads (threads.py), made on the first one; jobs on them now
        self._runner: ThreadRunner | None = None
        self._in_threads = 0
        #: the jobs running in threads (a stopped one stays until its code returns)
        self._thread_runs: set[JobRun] = set()
        #: jobs claimed and not started yet (in ``running`` too), oldest first; how
        #: many the fetch loop may claim beyond the free slots (see _prefetch); the
        #: running means it is worked out from: a job's run time, a FETCH's round trip
        self._waiting: deque[JobRun] = deque()
        self.prefetch = 0
        self._job_time: float | None = None
        self._fetch_time: float | None = None
        self._procs = (
            ProcessPool(options.concurrency, options.tasks) if options.pool == "process" else None
        )

    # -- control from outside -------------------------------------------------------------

    def stop(self) -> None:
        """Graceful stop: no more FETCH; running jobs get ``grace`` seconds."""
        if self._stopping.is_set():
            self.hurry()
        self._stopping.set()

    def hurry(self) -> None:
        """Stop now: running jobs are stopped and returned to the queue."""
        self._stopping.set()
        self._hurry.set()

    @property
    def stuck(self) -> bool:
        """Jobs whose code would not stop (threads) are still running."""
        return bool(self._job_tasks) or self._in_threads > 0

    # -- the main loop --------------------------------------------------------------------

    async def run(self) -> None:
        if self._procs is not None:
            await self._procs.start()
        try:
            await self._serve()
            if not self._drained:  # stopped while disconnected
                await self._drain()
        finally:
            await self._goodbye()
            if self._procs is not None:
                await self._procs.close()
            self._threads.shutdown(wait=False, cancel_futures=True)
            if self._runner is not None:
                self._runner.close()

    async def _serve(self) -> None:
        delay = RECONNECT_MIN
        while not self._stopping.is_set():
            try:
                await self._connect()
                self.connected = True
                delay = RECONNECT_MIN
                await self._session()
            except (ServerUnavailable, StoreError) as exc:
                self.connected = False
                # StoreError: direct mode, the store could not be opened (Redis down)
                await self.fetcher.close()
                await self.control.close()
                if self._stopping.is_set():
                    break
                log.warning("server unavailable (%s); reconnecting in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay * random.uniform(0.5, 1)):
                        await self._stopping.wait()
                delay = min(RECONNECT_MAX, delay * 2)

    async def _connect(self) -> None:
        await self.control.connect()
        if self.control.address is not None:  # the fetcher follows to the same server
            first = self.control.address
            self.fetcher.addresses = [first] + [a for a in self.control.addresses if a != first]
        await self.fetcher.connect()
        info = self.control.info
        self.lease = float(info.get("lease", defaults.LEASE))
        self.max_result = int(info.get("max_payload", self.max_result))
        self.max_fetch = int(info.get("max_fetch", self.max_fetch))
        where = self.control.address or (redact_url(getattr(self.control, "url", "?")), "")
        log.info("worker %s connected to %s:%s", self.id, *where, extra={"worker": self.id})
        await self._set_schedules()

    async def _set_schedules(self) -> None:
        """Set the schedules of the periodic tasks this worker serves (@periodic);
        the server keeps the ticks of one already set the same way."""
        for p in PERIODIC.values():
            if p.task not in self.tasks:
                continue
            command = schedule_command(p.name, p.task, p.args, p.kwargs, p.options, p.cron,
                                       p.every, p.timezone, p.catch_up)  # fmt: skip
            try:
                await self.control.call(*command)
            except (ServerUnavailable, StoreError):
                raise  # the connection: _serve reconnects
            except DistQueueError as exc:  # refused (an older server: UNKNOWN): go on
                log.error("periodic task %s: its schedule is refused: %s", p.name, exc)

    async def _session(self) -> None:
        """Run the side tasks until one fails (server gone) or a stop is asked; on a
        stop, drain while the heartbeat keeps the leases and the reporter reports."""
        fetch = asyncio.create_task(self._fetch_loop(), name="fetch")
        side = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._reporter(), name="reporter"),
        ]
        stop = asyncio.create_task(self._stopping.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([fetch, *side, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop:
                    task.result()  # raises ServerUnavailable (or a bug)
            # stopping: no FETCH may claim after this point
            await cancel_and_wait(fetch)
            await self.fetcher.close()
            await self._drain()
        finally:
            await cancel_and_wait(stop, fetch, *side)

    async def _fetch_loop(self) -> None:
        outage = _Outage("fetch")
        while not self._stopping.is_set():  # (it is cancelled then, too: belt and braces)
            # never more than its slots ahead of what the store recorded (direct mode:
            # a finished job holds its slot until its ACK/FAIL is accepted; with a
            # server, finished jobs waiting for its answer have as many slots again,
            # see _held) ... and, when jobs are short, a few more claimed ahead
            # (self.prefetch) so the slots never wait for a FETCH's round trip
            unaccepted = self._unaccepted()
            concurrency = self.options.concurrency
            free = concurrency + self.prefetch - len(self.running) - self._held(unaccepted)
            if free <= 0 or unaccepted >= self._ahead:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            ask = min(free, self.max_fetch)
            sent = time.monotonic()
            try:
                jobs = await self.fetcher.call("FETCH", ask, FETCH_WAIT)
            except StoreError as exc:
                await outage.pause(exc)
                continue
            outage.over()
            if len(jobs) == ask:  # it had them all at hand: a round trip, no wait in it
                self._fetch_time = _mean(self._fetch_time, time.monotonic() - sent)
            self._generation += 1
            now = time.monotonic()
            for job_id, token, meta_json, payload in jobs:
                meta = codec.loads(meta_json, "job")
                run = JobRun(
                    id=job_id, token=token, type=meta["type"], args=meta.get("args"),
                    payload=payload, timeout=meta.get("timeout"), deadline=meta.get("deadline"),
                    generation=self._generation, attempts=meta.get("attempts", 1), started=now,
                )  # fmt: skip
                if meta.get("after"):  # its parents' results come first (pass_results)
                    self.running[job_id] = run
                    task = asyncio.create_task(self._with_results(run, meta["after"]))
                    self._job_tasks.add(task)
                    task.add_done_callback(self._job_tasks.discard)
                    continue
                if run.type in INLINE and run.type not in self.tasks and self.options.builtins:
                    self._run_inline(run)
                    continue
                self.running[job_id] = run
                run.kill = functools.partial(self._drop_waiting, run)
                self._waiting.append(run)
            self._dispatch()

    async def _with_results(self, run: JobRun, after: list[int]) -> None:
        """A job submitted with pass_results: read the results of the jobs it waited
        for, put them first in its arguments (see with_results), then let it run. A
        failed parent's result is null; a result that cannot be read fails the job
        (for good when it is gone, purged; else to be retried)."""
        run.kill = functools.partial(self._drop_waiting, run)  # a stop meanwhile: dropped
        try:
            # (on the control connection: the fetcher may be in a blocking FETCH)
            replies = await self.control.pipeline([["RESULT", i] for i in after])
        except DistQueueError as exc:  # the server went away: its lease brings it back
            log.warning("job %s: could not read its parents' results: %s", run.id, exc)
            if self.running.get(run.id) is run:
                del self.running[run.id]
                run.kill = None
                self._slot_freed.set()
            return
        if self.running.get(run.id) is not run or run.reported:
            return  # stopped meanwhile (cancelled, lost): dropped already
        results: list[Any] = []
        for parent, reply in zip(after, replies, strict=True):
            if isinstance(reply, JobFailed):
                results.append(None)  # it ended dead or cancelled (on_failure "run")
            elif isinstance(reply, BaseException):
                gone = isinstance(reply, JobNotFound)
                why = (
                    InvalidJob(f"the result of job {parent} is gone (purged)")
                    if gone
                    else (reply if isinstance(reply, Exception) else RuntimeError(str(reply)))
                )
                self._finish(run, error_outcome(why, retryable=not gone))
                del self.running[run.id]
                run.kill = None
                self._slot_freed.set()
                return
            else:
                results.append(
                    reply[1] if reply[0] == b"bytes" else codec.loads(reply[1], "result")
                )
        run.args = with_results(run.args, results[0] if len(results) == 1 else results)
        self._waiting.append(run)
        self._dispatch()

    def _held(self, unaccepted: int) -> int:
        """The slots finished jobs hold until their reports are accepted: all of them
        in direct mode; connected to a server, those beyond a slot count of their
        own (a server records a batch of ACKs in one store call at once, and a FETCH
        need not wait for the ACKs' round trip: 15 % more drain for short jobs)."""
        return unaccepted if self.direct else max(0, unaccepted - self.options.concurrency)

    def _unaccepted(self) -> int:
        """Reports of finished jobs the server has not accepted yet (each holds a slot)."""
        return self._unaccepted_count

    def _dispatch(self) -> None:
        """Start waiting jobs while a slot is free: a slot is held by a running job, and
        by a finished one until its report is accepted."""
        waiting = self._waiting
        if not waiting:
            return
        room = self.options.concurrency - self._held(self._unaccepted()) - self._started()
        while waiting and room > 0:
            run = waiting.popleft()
            run.kill = None
            room -= 1
            if self._start_in_thread(run):
                continue
            task = asyncio.create_task(self._execute(run), name=f"job-{run.id}")
            self._job_tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._job_tasks.discard(task)
        self._dispatch()  # (its slot counts as taken until now)

    def _started(self) -> int:
        return len(self._job_tasks) + self._in_threads

    def _drop_waiting(self, run: JobRun) -> None:
        """A job stopped before it started (cancelled, lost, the worker stopping):
        reported as such (nothing for lost or shutdown), never run."""
        with contextlib.suppress(ValueError):
            self._waiting.remove(run)
        self._finish(run, None)
        run.kill = None
        if self.running.get(run.id) is run:
            del self.running[run.id]
        self._slot_freed.set()

    def _freed(self, run: JobRun) -> None:
        """A started job ended: count its time, let a waiting one start, wake FETCH."""
        self._job_time = _mean(self._job_time, time.monotonic() - run.started)
        if self._fetch_time is not None:
            # enough claimed ahead to keep every slot busy through two FETCH round
            # trips: for jobs that take a fraction of a round trip only (a job of a
            # second claims nothing ahead: no hoarding from other workers)
            ahead = 2 * self.options.concurrency * self._fetch_time / max(self._job_time, 1e-6)
            self.prefetch = min(PREFETCH_MAX, int(ahead))
        self._slot_freed.set()

    async def _heartbeat(self) -> None:
        outage = _Outage("heartbeat")
        nap = self.lease / 3
        while True:
            await asyncio.sleep(nap)
            generation = self._generation
            # what it runs and what it still has to report keep their leases; the
            # server returns any other job it holds for us (a lost FETCH answer)
            holding = set(self.running) | {c[1] for c in self.unreported if c[0] != "PROGRESS"}
            try:
                reply = await self.control.call("BEAT", "HOLDING", *sorted(holding))
            except StoreError as exc:  # the leases may run out: try again soon
                nap = 0.0
                await outage.pause(exc, cap=min(self.lease / 6, 1.0))
                continue
            outage.over()
            nap = self.lease / 3
            beat = codec.loads(reply, "BEAT reply")
            held = set(beat["held"])
            for job_id in beat["cancel"]:
                run = self.running.get(job_id)
                if run is not None:
                    run.stop("cancelled")
            for run in list(self.running.values()):
                if not run.stop_reason and run.generation <= generation and run.id not in held:
                    log.warning("job %s (%s) lost its lease: stopping it", run.id, run.type,
                                extra=self._fields(run))  # fmt: skip
                    run.stop("lost")

    async def _reporter(self) -> None:
        """Send the reports; keep each until the server accepts it or refuses it for
        good (STALE: the job went elsewhere). A STORE refusal is sent again later."""
        outage = _Outage("reports")
        while True:
            if not self.unreported:
                self._reports_ready.clear()
                await self._reports_ready.wait()
                continue
            store_error = await self._send_reports()  # ServerUnavailable: all kept
            self._slot_freed.set()  # accepted reports free their slots for FETCH
            self._dispatch()
            if store_error is not None:
                await outage.pause(store_error)
            else:
                outage.over()

    async def _send_reports(self) -> StoreError | None:
        """Send what is unreported once; keep what must be sent again (in front, so a
        job's reports stay in order). Returns a STORE refusal if there was one."""
        batch = list(self.unreported)
        replies = await self.control.pipeline(batch)
        again: list[list[Any]] = []
        store_error = None
        for command, reply in zip(batch, replies, strict=True):
            if not isinstance(reply, DistQueueError):
                if command[0] == "FAIL":
                    self._log_failure(command, reply)
                continue
            if command[0] == "PROGRESS":
                continue
            if isinstance(reply, StoreError):
                again.append(command)
                store_error = reply
                continue
            if command[0] == "FAIL":  # refused for good: no outcome to log
                self._failing.pop((command[1], command[2]), None)
            if isinstance(reply, LeaseLost | JobNotFound):
                # the job was taken back and went elsewhere: not ours to report
                log.warning("%s of job %s refused: %s", command[0], command[1], reply,
                            extra={"job": command[1]})  # fmt: skip
            elif command[0] == "ACK":  # the result itself was refused: fail it for good
                log.warning("result of job %s refused: %s", command[1], reply,
                            extra={"job": command[1]})  # fmt: skip
                again.append(
                    self._fail_command(
                        command[1],
                        command[2],
                        "ResultRefused",
                        f"the server refused the result: {reply}",
                    )
                )
            else:
                log.warning("%s of job %s refused: %s", command[0], command[1], reply,
                            extra={"job": command[1]})  # fmt: skip
        self.unreported[: len(batch)] = again
        self._unaccepted_count += sum(1 for c in again if c[0] != "PROGRESS") - sum(
            1 for c in batch if c[0] != "PROGRESS"
        )
        return store_error

    def _log_failure(self, command: list[Any], reply: Any) -> None:
        """The one log line of a failed job, once the server said what became of it
        (its FAIL reply: retrying, dead or cancelled)."""
        job_id = command[1]
        state = reply.decode() if isinstance(reply, bytes) else str(reply)
        info = self._failing.pop((job_id, command[2]), None)
        if info is None:  # a FAIL made of a refused ACK (ResultRefused): no run to ask
            try:
                error = _error_line(codec.loads(command[3], "error"))
            except Exception:
                error = "?"
            info = _Failure(type="", attempt=0, duration=0.0, error=error)
        fields: dict[str, Any] = {"job": job_id, "error": info.error, "state": state}
        if info.type:
            fields.update(type=info.type, attempt=info.attempt, duration=round(info.duration, 6))
        if info.cancelled and state == "cancelled":
            log.info("job %s (%s) cancelled while running", job_id, info.type or "?",
                     extra=fields)  # fmt: skip
            return
        outcome = f", now {state}" if state in ("retrying", "dead", "cancelled") else ""
        log.warning("job %s (%s) failed (attempt %s)%s: %s", job_id, info.type or "?",
                    info.attempt or "?", outcome, info.error, extra=fields)  # fmt: skip

    @staticmethod
    def _fields(run: JobRun) -> dict[str, Any]:
        """A job's structured log fields."""
        return {"job": run.id, "type": run.type, "attempt": run.attempts,
                "duration": round(time.monotonic() - run.started, 6)}  # fmt: skip

    def _log_started(self, run: JobRun) -> None:
        # DEBUG: at thousands of jobs/s a line per job floods the log; callers check
        # log.isEnabledFor(DEBUG) first, so a disabled line costs nearly nothing
        log.debug("job %s (%s) started, attempt %d", run.id, run.type, run.attempts,
                  extra={"job": run.id, "type": run.type, "attempt": run.attempts})  # fmt: skip

    @staticmethod
    def _fail_command(job_id: int, token: int, kind: str, message: str) -> list[Any]:
        """A FAIL report that no retry can help (the job becomes dead)."""
        error = {"kind": kind, "message": message, "traceback": "", "retryable": False}
        return ["FAIL", job_id, token, codec.dumps(error)]

    def _report(self, command: list[Any]) -> None:
        self.unreported.append(command)
        if command[0] != "PROGRESS":
            self._unaccepted_count += 1
        self._reports_ready.set()

    # -- running one job --------------------------------------------------------------------

    async def _execute(self, run: JobRun) -> None:
        loop = asyncio.get_running_loop()

        def report(percent: float, message: str) -> None:  # from any thread
            loop.call_soon_threadsafe(self._progress, run, percent, message)

        ctx = JobContext(
            id=run.id, attempts=run.attempts, type=run.type, payload=run.payload,
            report=report, token=run.token,
        )  # fmt: skip
        try:
            if self._expired(run):
                return
            run.started = time.monotonic()
            if log.isEnabledFor(logging.DEBUG):  # the hot path: nothing more when off
                self._log_started(run)
            work = asyncio.ensure_future(self._start(run, ctx))
            # until the job's code says how to stop it (kill a child, a process group),
            # cancelling its task does (and for a thread, at least stops the waiting)
            run.kill = work.cancel
            done, _ = await asyncio.wait({work}, timeout=run.timeout)
            if work in done and not run.stop_reason:
                self._finish(run, work.result())
                return
            run.stop(run.stop_reason or "timeout")
            self._finish(run, None)
            # the slot stays taken until the code really stops
            await asyncio.gather(work, return_exceptions=True)
            if run.thread is not None:
                await asyncio.wrap_future(run.thread)
        except Exception as exc:  # a bug in the worker itself: report, keep serving
            log.exception("job %s: the worker failed running it", run.id)
            self._finish(run, error_outcome(exc, retryable=True))
        finally:
            ctx.cleanup()
            # the job may have been lost and handed to us again meanwhile: that newer
            # run is not this one's to drop (its BEAT would then not list it)
            if self.running.get(run.id) is run:
                del self.running[run.id]
            self._freed(run)

    def _start_in_thread(self, run: JobRun) -> bool:
        """A sync task on the thread pool goes straight to a thread (threads.py): no
        asyncio task, no future of its own, the loop woken once per batch of finished
        jobs. False for every other kind of job (``_execute`` runs those)."""
        task = self.tasks.get(run.type)
        if task is None or task.is_async or self._procs is not None:
            return False
        if self._expired(run):  # reported as expired: its slot is free at once
            del self.running[run.id]
            return True
        loop = asyncio.get_running_loop()
        if self._runner is None:
            self._runner = ThreadRunner(self.options.concurrency, loop, self._threads_done)

        def report(percent: float, message: str) -> None:  # from the job's thread
            loop.call_soon_threadsafe(self._progress, run, percent, message)

        run.ctx = JobContext(
            id=run.id, attempts=run.attempts, type=run.type, payload=run.payload,
            report=report, token=run.token,
        )  # fmt: skip
        run.started = time.monotonic()
        if log.isEnabledFor(logging.DEBUG):  # the hot path: nothing more when off
            self._log_started(run)
        # a thread cannot be stopped: a stop (timeout, cancel, lost, shutdown) is
        # reported at once, and the slot waits for the code to return
        run.kill = functools.partial(self._finish, run, None)
        if run.timeout is not None:
            run.timer = loop.call_later(run.timeout, run.stop, "timeout")
        self._in_threads += 1
        self._thread_runs.add(run)
        self._runner.submit(run, run_with_context, run.ctx, call_sync, task, run.args)
        return True

    def _threads_done(self, batch: list[tuple[Any, Any, BaseException | None]]) -> None:
        """Sync tasks that returned (a batch, on the loop): report them, free their slots."""
        for key, outcome, error in batch:
            run: JobRun = key
            if run.timer is not None:
                run.timer.cancel()
            if error is not None:  # call_sync catches Exception: this is a BaseException
                outcome = error_outcome(error, retryable=True)
            self._finish(run, outcome)  # (a stopped one was reported when it stopped)
            if run.ctx is not None:
                run.ctx.cleanup()
            # both point back at run: left set, every job would be a cycle for the
            # collector (a full collection under load stalls the loop for ms)
            run.ctx = run.kill = None
            if self.running.get(run.id) is run:
                del self.running[run.id]
            self._thread_runs.discard(run)
            self._freed(run)
        self._in_threads -= len(batch)
        self._dispatch()

    def _expired(self, run: JobRun) -> bool:
        """A job past its deadline is not started: it fails as expired, for good."""
        if run.deadline is None or time.time() <= run.deadline:
            return False
        err = InvalidJob(f"deadline {run.deadline} passed before it started")
        outcome = error_outcome(err, retryable=False)
        assert outcome.error is not None
        outcome.error["kind"] = "expired"
        self._finish(run, outcome)
        return True

    def _run_inline(self, run: JobRun) -> None:
        """The instant built-ins (text, noop) run right here: no task, no slot held."""
        if not self._expired(run):
            if log.isEnabledFor(logging.DEBUG):
                self._log_started(run)
            self._finish(run, run_inline(run.type, run.args))

    async def _start(self, run: JobRun, ctx: JobContext) -> Outcome:
        def on_start(kill: Any) -> None:
            run.kill = kill

        if run.type == SHELL and self.options.allow_shell:
            limit = run.timeout or self.options.shell_timeout
            return await run_shell(run.args, limit, on_start, self.options.shell_output_limit)
        task = self.tasks.get(run.type)
        if task is None:
            if self.options.builtins and run.type in ALL_BUILTINS:
                return await run_builtin(run.type, run.args, run.payload)
            return error_outcome(InvalidJob(f"this worker cannot run job type {run.type!r}"))
        if task.is_async:
            return await run_async(task, run.args, ctx)
        if self._procs is not None:
            return await self._procs.run(task, run.args, ctx, on_start)
        run.thread = self._threads.submit(run_with_context, ctx, call_sync, task, run.args)
        return await asyncio.wrap_future(run.thread)

    def _finish(self, run: JobRun, outcome: Outcome | None) -> None:
        """Queue the report of a finished or stopped job (at most once per job)."""
        if run.reported:
            return
        run.reported = True
        reason = run.stop_reason
        if reason in ("lost", "shutdown"):
            return  # not ours any more / BYE gives it back
        if reason == "timeout":
            outcome = Outcome(error={
                "kind": "timeout", "message": f"ran over its {run.timeout:g}s timeout",
                "traceback": "", "retryable": True,
            })  # fmt: skip
        elif reason == "cancelled":
            outcome = Outcome(error={"kind": "cancelled", "message": "cancelled while running",
                                     "traceback": "", "retryable": False})  # fmt: skip
        assert outcome is not None
        self.processed += 1
        if outcome.error is not None:
            self._failed(run, outcome.error)
            self._report(["FAIL", run.id, run.token, _error_within(outcome.error, self.max_result)])
            return
        if isinstance(outcome.result, bytes):
            ack: list[Any] = ["ACK", run.id, run.token, outcome.result, "bytes"]
        else:
            ack = ["ACK", run.id, run.token, codec.dumps(outcome.result)]
        size = len(ack[3])
        if size > self.max_result:  # the server would refuse it: retrying cannot help
            ack = self._fail_command(
                run.id,
                run.token,
                "ResultTooLarge",
                f"result too large: {size} bytes > limit {self.max_result}",
            )
            self._failed(run, codec.loads(ack[3], "error"))
        elif log.isEnabledFor(logging.DEBUG):  # the hot path: nothing more when off
            fields = self._fields(run)
            log.debug("job %s (%s) succeeded in %.3fms", run.id, run.type,
                      1000 * fields["duration"], extra=fields)  # fmt: skip
        self._report(ack)

    def _failed(self, run: JobRun, error: dict[str, Any]) -> None:
        """Keep a failed job's log line until the server's FAIL reply completes it."""
        self._failing[(run.id, run.token)] = _Failure(
            type=run.type, attempt=run.attempts, duration=time.monotonic() - run.started,
            error=_error_line(error), cancelled=run.stop_reason == "cancelled",
        )  # fmt: skip

    def _progress(self, run: JobRun, percent: float, message: str) -> None:
        if run.id in self.running and not run.stop_reason:
            self._report(["PROGRESS", run.id, run.token, percent, message])

    # -- stopping -------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period; stop the rest."""
        self._drained = True
        for run in list(self._waiting):  # not started: back to the queue (BYE)
            run.stop("shutdown")

        def unfinished() -> int:
            # a thread whose job was stopped already (a timeout, a cancel: reported
            # then) cannot be stopped, and nothing waits for it: it is not waited for
            threads = sum(1 for run in self._thread_runs if not run.reported)
            return len(self._job_tasks) + threads

        if unfinished():
            log.info("stopping: %d jobs running, %gs grace",
                     unfinished(), self.options.grace)  # fmt: skip
            hurry = asyncio.ensure_future(self._hurry.wait())
            deadline = time.monotonic() + self.options.grace
            while unfinished() and not self._hurry.is_set() and time.monotonic() < deadline:
                self._slot_freed.clear()
                freed = asyncio.ensure_future(self._slot_freed.wait())
                await asyncio.wait([*self._job_tasks, hurry, freed],
                                   timeout=deadline - time.monotonic(),
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                freed.cancel()
            hurry.cancel()
        for run in list(self.running.values()):
            run.stop("shutdown")
        if self._job_tasks:
            await asyncio.wait(list(self._job_tasks), timeout=2.0)

    async def _goodbye(self) -> None:
        await self.fetcher.close()
        try:
            if not self.control.connected:
                async with asyncio.timeout(5.0):
                    await self.control.connect()
            deadline = time.monotonic() + 5.0
            while self.unreported and time.monotonic() < deadline:
                if await self._send_reports() is not None:
                    await asyncio.sleep(0.2)  # the store is failing: a little later
            if self.unreported:
                log.warning("stopping with %d reports the server did not take: their jobs"
                            " run again elsewhere", len(self.unreported))  # fmt: skip
            await self.control.call("BYE")
        except (DistQueueError, TimeoutError) as exc:
            log.warning("could not say goodbye: %s", exc)
        await self.control.close()


def _error_within(error: dict[str, Any], limit: int) -> bytes:
    """A FAIL's error as JSON of at most ``limit`` bytes (the server refuses larger):
    the text fields of a longer one (a shell job's output in its traceback) are cut,
    saying so, keeping their ends (a traceback's last lines say the most)."""
    encoded = codec.dumps(error)
    if len(encoded) <= limit:
        return encoded
    cut = dict(error)
    # JSON may escape a character into 6 bytes: keep a sixth of the room per field
    room = max(0, limit // 6 - 200)
    for name in ("traceback", "message"):
        text = cut.get(name)
        if isinstance(text, str) and len(text) > room // 2:
            keep = room // 2
            cut[name] = (
                f"[{len(text) - keep} characters cut: the error passed the server's"
                f" --max-payload of {limit} bytes]\n" + text[len(text) - keep :]
            )
    return codec.dumps(cut)


def _mean(mean: float | None, sample: float) -> float:
    """A running mean (exponentially weighted: recent samples count most)."""
    return sample if mean is None else mean + EWMA * (sample - mean)
