"""A beanstalkd-protocol listener on distqueue's own model (#16, first step).

``distqueue server --beanstalk 127.0.0.1:11300`` runs it beside the server's own
port, on the same Service and store: a tube is a queue, a beanstalk job is a
distqueue job of type ``beanstalk`` (its body the payload, its id the job's id,
visible in ``distqueue status``, the dashboard and the metrics), ``put`` a SUBMIT
(durable when answered), ``reserve`` a FETCH by the connection (each connection
that reserves is a worker of the server, ``beanstalk-…``), ``delete`` of a job the
connection holds its ACK, ``bury`` a failure that makes it dead (buried = the
dead-letter list), ``release`` hands it back, a closed connection gives back what
it held (nothing counted against the jobs). docs/beanstalk.md says what is
supported and how it differs from beanstalkd. ``pause-tube`` is a pause of the
queue with an end the store keeps: it ends on time whichever server runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from distqueue import __version__
from distqueue.beanstalk.wire import (
    MAX_JOB_SIZE,
    Command,
    Parser,
    WireError,
    job_reply,
    yaml_list,
    yaml_map,
)
from distqueue.errors import (
    DistQueueError,
    IllegalTransition,
    JobNotFound,
    LeaseLost,
    QueueFull,
)
from distqueue.jobs import TERMINAL_STATES, Job, JobError, JobSpec, JobState
from distqueue.store.base import MAX_KICK

if TYPE_CHECKING:
    from distqueue.service.core import Service, WorkerInfo

__all__ = ["BEANSTALK_TYPE", "BeanstalkListener"]

log = logging.getLogger("distqueue.beanstalk")

#: the job type of every job a beanstalk client puts (a distqueue worker may serve it:
#: its task gets the body as the payload)
BEANSTALK_TYPE = "beanstalk"
#: beanstalkd's version as this listener reports it (fivebeans runs its kick-job test
#: only against >= 1.8)
VERSION = "1.12"
#: seconds one blocked reserve waits on the service before looking again
RESERVE_SLICE = 5.0
#: jobs whose last given delay a listener remembers (stats-job's ``delay``)
DELAYS_KEPT = 100_000
#: requests parsed ahead of the one running before a connection is read no more
#: (a client that pipelines without reading its replies is held back, not buffered)
QUEUED_MAX = 256
#: beanstalkd's safety margin: in the last second of a reservation it holds, a
#: connection's reserve does not wait (DEADLINE_SOON)
DEADLINE_MARGIN = 1.0

_STATE = {
    JobState.QUEUED: "ready", JobState.RUNNING: "reserved", JobState.SCHEDULED: "delayed",
    JobState.RETRYING: "delayed", JobState.WAITING: "delayed", JobState.DEAD: "buried",
}  # fmt: skip
_PEEK = {"peek-ready": JobState.QUEUED, "peek-delayed": JobState.SCHEDULED,
         "peek-buried": JobState.DEAD}  # fmt: skip


class Closed(Exception):
    """The client left (or said quit)."""


class Session:
    """One client connection: its tubes, what it holds, its worker (from its first
    reserve on)."""

    def __init__(self, listener: BeanstalkListener, peer: str) -> None:
        self.listener = listener
        self.peer = peer
        self.used = "default"
        #: watched tubes (as beanstalkd keeps them: an ignore moves the last into the hole)
        self.watched = ["default"]
        #: id -> (fencing token, tube) of the jobs this connection reserved
        self.reserved: dict[int, tuple[int, str]] = {}
        #: id -> when its TTR ends (the service's clock), for DEADLINE_SOON
        self.deadlines: dict[int, float] = {}
        #: the lease a reserve asks for: the TTR of the job it got last (a tube's jobs
        #: mostly share one), so that the claim's lease is the TTR already
        self.lease: float | None = None
        self.worker: WorkerInfo | None = None
        self.waiting = False
        #: it put a job (a producer, in stats)
        self.producer = False

    @property
    def service(self) -> Service:
        return self.listener.service

    def _worker(self) -> WorkerInfo:
        from distqueue.service.core import WorkerInfo

        if self.worker is None:
            self.worker = WorkerInfo(
                id=f"beanstalk-{self.listener.node}-{next(self.listener.ids)}",
                name=f"beanstalk client {self.peer}", types=frozenset({BEANSTALK_TYPE}),
                queues=frozenset(self.watched), concurrency=1, since=time.time(),
            )  # fmt: skip
            self.service.connect_worker(self.worker)
            self.worker.connections += 1
        return self.worker

    async def close(self) -> None:
        """The connection ended: what it reserved goes back at once (as beanstalkd:
        nothing counted against the jobs)."""
        if self.worker is not None:
            with contextlib.suppress(DistQueueError):
                await self.service.bye(self.worker)
            self.worker.connections -= 1
            workers = self.service.workers
            if workers.get(self.worker.id) is self.worker:
                del workers[self.worker.id]
            self.worker = None
        self.reserved.clear()
        self.deadlines.clear()

    # -- commands --------------------------------------------------------------------------

    async def run(self, command: Command, eof: asyncio.Event) -> bytes:
        name = command.name
        self.listener.counts[name] = self.listener.counts.get(name, 0) + 1
        if name in _PEEK:
            return await self.peek_state(_PEEK[name])
        handler: Callable[..., Any] = getattr(self, "cmd_" + name.replace("-", "_"))
        if name in ("reserve", "reserve-with-timeout"):
            result: bytes = await handler(*command.args, eof=eof)
        elif name == "put":
            result = await handler(*command.args, body=command.body)
        else:
            result = await handler(*command.args)
        return result

    async def cmd_quit(self) -> bytes:
        raise Closed

    async def cmd_use(self, tube: str) -> bytes:
        self.used = tube
        self.listener.tubes.add(tube)
        return b"USING %s\r\n" % tube.encode()

    async def cmd_list_tube_used(self) -> bytes:
        return b"USING %s\r\n" % self.used.encode()

    async def cmd_watch(self, tube: str) -> bytes:
        if tube not in self.watched:
            self.watched.append(tube)
            self.listener.tubes.add(tube)
            self._watch_changed()
        return b"WATCHING %d\r\n" % len(self.watched)

    async def cmd_ignore(self, tube: str) -> bytes:
        if tube in self.watched:
            if len(self.watched) == 1:
                return b"NOT_IGNORED\r\n"
            i = self.watched.index(tube)
            last = self.watched.pop()
            if i < len(self.watched):
                self.watched[i] = last
            self._watch_changed()
        return b"WATCHING %d\r\n" % len(self.watched)

    def _watch_changed(self) -> None:
        if self.worker is not None:
            self.worker.queues = frozenset(self.watched)

    async def cmd_list_tubes_watched(self) -> bytes:
        return yaml_list(self.watched)

    async def cmd_list_tubes(self) -> bytes:
        stats = await self.service.stats()
        return yaml_list(sorted(self.listener.tubes | set(stats["queues"])))

    async def cmd_put(self, pri: int, delay: int, ttr: int, _size: int, body: bytes) -> bytes:
        if self.listener.draining():
            return b"DRAINING\r\n"
        now = self.service.clock()
        spec = JobSpec(
            type=BEANSTALK_TYPE, queue=self.used, priority=pri, payload=body,
            timeout=float(max(1, ttr)), run_at=now + delay if delay else None,
        )  # fmt: skip
        try:
            [job_id] = await self.service.submit([(spec, False)])
        except QueueFull:  # (a --max-depth limit: beanstalkd's word for "no room")
            return b"OUT_OF_MEMORY\r\n"
        self.listener.delayed(job_id, delay)
        self.listener.tubes.add(self.used)
        self.producer = True
        return b"INSERTED %d\r\n" % job_id

    async def cmd_reserve(self, eof: asyncio.Event) -> bytes:
        return await self._reserve(None, eof)

    async def cmd_reserve_with_timeout(self, seconds: int, eof: asyncio.Event) -> bytes:
        return await self._reserve(float(seconds), eof)

    def _margin(self) -> float | None:
        """Seconds until the safety margin of the soonest TTR this connection holds
        (beanstalkd's last second of a reservation), or None when it holds none."""
        now = self.service.clock()
        for job_id in [i for i, end in self.deadlines.items() if end <= now]:
            # its TTR ran out: the job went back to the queue, it is not ours now
            self.deadlines.pop(job_id, None)
            self.reserved.pop(job_id, None)
        if not self.deadlines:
            return None
        return min(self.deadlines.values()) - DEADLINE_MARGIN - now

    async def _reserve(self, timeout: float | None, eof: asyncio.Event) -> bytes:
        """Wait for a job. ``eof``: the client sent all it will (it may still read):
        a reserve then takes a job that is ready at once or answers TIMED_OUT, as
        beanstalkd does for a half-closed connection."""
        worker = self._worker()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self.waiting = True
        try:
            while True:
                if self.listener.closing:
                    return b"TIMED_OUT\r\n"
                left = RESERVE_SLICE if deadline is None else max(0.0, deadline - loop.time())
                wait = 0.0 if eof.is_set() else min(left, RESERVE_SLICE)
                margin = self._margin()
                soon = margin is not None and margin <= 0
                if margin is not None:
                    # in the last second of a reservation it holds, a connection is
                    # not made to wait: a job at once, or DEADLINE_SOON
                    wait = 0.0 if soon else min(wait, margin)
                fetch: asyncio.Future[list[Job]] | None = None
                if eof.is_set() or wait == 0.0:  # one look, no wait
                    # (not raced against the FIN: a look cancelled by it could have
                    # claimed the job already, and answered TIMED_OUT holding it)
                    jobs = await self.service.fetch(worker, 1, 0.0, self.lease)
                else:
                    fetch = asyncio.ensure_future(self.service.fetch(worker, 1, wait, self.lease))
                    ended = asyncio.ensure_future(eof.wait())
                    try:
                        await asyncio.wait({fetch, ended}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        ended.cancel()
                        if not fetch.done():
                            # the client is done sending, or the listener stops: this
                            # wait ends here, and takes nothing after it ended
                            fetch.cancel()
                            with contextlib.suppress(BaseException):
                                await fetch
                    jobs = [] if fetch.cancelled() else fetch.result()
                if jobs:
                    job = jobs[0]
                    self.reserved[job.id] = (job.token, job.queue)
                    await self._lease(job)
                    return job_reply("RESERVED", job.id, job.payload or b"")
                if soon:
                    return b"DEADLINE_SOON\r\n"
                if fetch is not None and fetch.cancelled():
                    continue  # (eof: one more look, not waiting)
                if eof.is_set() or (deadline is not None and loop.time() >= deadline):
                    return b"TIMED_OUT\r\n"
        finally:
            self.waiting = False

    async def _lease(self, job: Job) -> None:
        """The job's TTR (kept as its timeout) as its lease."""
        ttr = job.timeout or self.service.config.lease
        if ttr != (self.lease or self.service.config.lease):
            # the claim leased it for another TTR: set its own (and ask for this one next)
            now = self.service.clock()
            await self.service.store.touch(job.id, job.token, now, ttr, worker=self._worker().id)
            self.deadlines[job.id] = now + ttr
        else:
            self.deadlines[job.id] = job.lease_until or self.service.clock() + ttr
        self.lease = ttr

    async def cmd_delete(self, job_id: int) -> bytes:
        self.deadlines.pop(job_id, None)
        held = self.reserved.pop(job_id, None)
        if held is not None and self.worker is not None:
            try:
                await self.service.ack(self.worker, job_id, held[0], None)
            except LeaseLost:
                pass  # its TTR ran out meanwhile: deleted as any job it does not hold
            else:
                self.listener.deleted(held[1])
                return b"DELETED\r\n"
        job = await self._beanstalk_job(job_id)
        if job is None or job.state is JobState.RUNNING:  # another connection's
            return b"NOT_FOUND\r\n"
        try:
            if job.state is JobState.DEAD:
                await self.service.purge(job_id)
            else:
                # refused, changing nothing, if another connection reserved it since
                await self.service.cancel(job_id, running=False)
        except (JobNotFound, IllegalTransition):
            return b"NOT_FOUND\r\n"
        self.listener.deleted(job.queue)
        return b"DELETED\r\n"

    async def cmd_release(self, job_id: int, pri: int, delay: int) -> bytes:
        self.deadlines.pop(job_id, None)
        held = self.reserved.pop(job_id, None)
        if held is None or self.worker is None:
            return b"NOT_FOUND\r\n"
        run_at = self.service.clock() + delay if delay else None
        try:
            await self.service.requeue(self.worker, job_id, held[0], priority=pri, run_at=run_at)
        except (LeaseLost, JobNotFound):
            return b"NOT_FOUND\r\n"
        self.listener.delayed(job_id, delay)
        return b"RELEASED\r\n"

    async def cmd_bury(self, job_id: int, pri: int) -> bytes:
        self.deadlines.pop(job_id, None)
        held = self.reserved.pop(job_id, None)
        if held is None or self.worker is None:
            return b"NOT_FOUND\r\n"
        error = JobError(kind="buried", message="buried by its beanstalk client")
        try:
            await self.service.fail(
                self.worker, job_id, held[0], error, retryable=False, priority=pri
            )
        except (LeaseLost, JobNotFound):
            return b"NOT_FOUND\r\n"
        return b"BURIED\r\n"

    async def cmd_touch(self, job_id: int) -> bytes:
        held = self.reserved.get(job_id)
        if held is None or self.worker is None:
            return b"NOT_FOUND\r\n"
        job = await self.service.store.get(job_id)
        if job is None or job.token != held[0]:
            self.reserved.pop(job_id, None)
            return b"NOT_FOUND\r\n"
        ttr = job.timeout or self.service.config.lease
        now = self.service.clock()
        try:
            await self.service.store.touch(job_id, held[0], now, ttr, worker=self.worker.id)
        except (LeaseLost, JobNotFound):
            self.reserved.pop(job_id, None)
            self.deadlines.pop(job_id, None)
            return b"NOT_FOUND\r\n"
        self.deadlines[job_id] = now + ttr
        return b"TOUCHED\r\n"

    async def peek_state(self, state: JobState) -> bytes:
        job = await self.service.store.peek(self.used, state, type=BEANSTALK_TYPE)
        if job is None:
            return b"NOT_FOUND\r\n"
        return job_reply("FOUND", job.id, job.payload or b"")

    async def cmd_kick(self, bound: int) -> bytes:
        kicked = 0
        while kicked < bound:  # (the store kicks at most MAX_KICK a call)
            want = min(bound - kicked, MAX_KICK)
            got = await self.service.kick(self.used, want, BEANSTALK_TYPE)
            kicked += len(got)
            if len(got) < want:
                break
        return b"KICKED %d\r\n" % kicked

    async def cmd_reserve_job(self, job_id: int) -> bytes:
        job = await self._beanstalk_job(job_id)
        if job is None or job.state is JobState.RUNNING:
            return b"NOT_FOUND\r\n"
        worker = self._worker()
        ttr = job.timeout or self.service.config.lease
        try:
            if job.state in (JobState.DEAD, JobState.SCHEDULED, JobState.RETRYING):
                await self.service.kick_job(job_id)  # (delayed or buried: ready first)
            job = await self.service.claim_job(worker, job_id, ttr)
        except (JobNotFound, IllegalTransition):
            return b"NOT_FOUND\r\n"
        self.reserved[job.id] = (job.token, job.queue)
        self.deadlines[job.id] = job.lease_until or self.service.clock() + ttr
        return job_reply("RESERVED", job.id, job.payload or b"")

    async def cmd_kick_job(self, job_id: int) -> bytes:
        job = await self._beanstalk_job(job_id)
        if job is None:
            return b"NOT_FOUND\r\n"
        try:
            await self.service.kick_job(job_id)
        except (JobNotFound, IllegalTransition):
            return b"NOT_FOUND\r\n"
        return b"KICKED\r\n"

    async def _beanstalk_job(self, job_id: int) -> Job | None:
        """The job as a beanstalk client may see it: one of its type, not ended
        (a dead one is buried)."""
        job = await self.service.store.get(job_id)
        if job is None or job.type != BEANSTALK_TYPE:
            return None
        if job.state in TERMINAL_STATES and job.state is not JobState.DEAD:
            return None
        return job

    async def cmd_peek(self, job_id: int) -> bytes:
        job = await self._beanstalk_job(job_id)
        if job is None:
            return b"NOT_FOUND\r\n"
        return job_reply("FOUND", job.id, job.payload or b"")

    async def cmd_stats_job(self, job_id: int) -> bytes:
        job = await self._beanstalk_job(job_id)
        if job is None:
            return b"NOT_FOUND\r\n"
        now = self.service.clock()
        state = _STATE[job.state]
        if job.state is JobState.RUNNING and job.lease_until is not None:
            left = job.lease_until - now
        elif state == "delayed" and job.run_at is not None:
            left = job.run_at - now
        else:
            left = 0.0
        delay = self.listener.delays.get(job.id)
        if delay is None:  # (put or released through another server, or long ago)
            delay = 0
            if job.run_at is not None and state == "delayed" and not job.attempts:
                delay = max(0, round(job.run_at - job.created_at))
        return yaml_map([
            ("id", job.id), ("tube", job.queue), ("state", state), ("pri", job.priority),
            ("age", max(0, math.floor(now - job.created_at))), ("delay", delay),
            ("ttr", int(job.timeout or self.service.config.lease)),
            ("time-left", max(0, math.floor(left))), ("file", 0),
            ("reserves", job.attempts), ("timeouts", job.lost), ("releases", 0),
            ("buries", 1 if job.state is JobState.DEAD else 0), ("kicks", 0),
        ])  # fmt: skip

    async def cmd_stats_tube(self, tube: str) -> bytes:
        stats = await self.service.stats()
        counts = stats["queues"].get(tube)
        if counts is None and tube not in self.listener.tubes:
            return b"NOT_FOUND\r\n"
        counts = counts or {}
        using = sum(1 for s in self.listener.sessions if s.used == tube)
        watching = [s for s in self.listener.sessions if tube in s.watched]
        end = (await self.service.store.pauses()).get(tube)  # (None: not paused for a time)
        left = 0 if end is None else max(0, math.floor(end - self.service.clock()))
        # the seconds asked, as this server was asked them (another server's pause:
        # what is left of it, rounded up)
        asked = 0 if end is None else self.listener.asked.get(tube, left)
        return yaml_map([
            ("name", tube), ("current-jobs-urgent", 0),
            ("current-jobs-ready", counts.get("queued", 0)),
            ("current-jobs-reserved", counts.get("running", 0)),
            ("current-jobs-delayed", counts.get("scheduled", 0) + counts.get("retrying", 0)
             + counts.get("waiting", 0)),
            ("current-jobs-buried", counts.get("dead", 0)),
            ("total-jobs", sum(counts.values())), ("current-using", using),
            ("current-watching", len(watching)),
            ("current-waiting", sum(1 for s in watching if s.waiting)),
            ("cmd-delete", self.listener.deletes.get(tube, 0)),
            ("cmd-pause-tube", self.listener.pauses.get(tube, 0)),
            ("pause", asked), ("pause-time-left", left),
        ])  # fmt: skip

    async def cmd_stats(self) -> bytes:
        stats = await self.service.stats()
        jobs = stats["jobs"]
        counts = self.listener.counts
        rusage = os.times()
        sessions = self.listener.sessions
        return yaml_map([
            ("current-jobs-urgent", 0), ("current-jobs-ready", jobs.get("queued", 0)),
            ("current-jobs-reserved", jobs.get("running", 0)),
            ("current-jobs-delayed", jobs.get("scheduled", 0) + jobs.get("retrying", 0)
             + jobs.get("waiting", 0)),
            ("current-jobs-buried", jobs.get("dead", 0)),
            *((f"cmd-{c}", counts.get(c, 0)) for c in (
                "put", "peek", "peek-ready", "peek-delayed", "peek-buried", "reserve",
                "reserve-with-timeout", "delete", "release", "use", "watch", "ignore", "bury",
                "kick", "touch", "stats", "stats-job", "stats-tube", "list-tubes",
                "list-tube-used", "list-tubes-watched", "pause-tube")),
            ("job-timeouts", stats["totals"].get("lost", 0)),
            ("total-jobs", stats["totals"].get("submitted", 0)),
            ("max-job-size", self.listener.max_job_size),
            ("current-tubes", len(self.listener.tubes | set(stats["queues"]))),
            ("current-connections", len(sessions)),
            ("current-producers", sum(1 for s in sessions if s.producer)),
            ("current-workers", sum(1 for s in sessions if s.worker is not None)),
            ("current-waiting", sum(1 for s in sessions if s.waiting)),
            ("total-connections", self.listener.total_connections), ("pid", os.getpid()),
            ("version", VERSION), ("rusage-utime", rusage.user), ("rusage-stime", rusage.system),
            ("uptime", math.floor(time.monotonic() - self.listener.started)),
            ("binlog-oldest-index", 0), ("binlog-current-index", 0),
            ("binlog-records-migrated", 0), ("binlog-records-written", 0),
            ("binlog-max-size", 0), ("draining", self.listener.draining()),
            ("id", self.listener.node), ("hostname", socket.gethostname()),
            ("os", os.uname().release), ("platform", os.uname().machine),
            ("distqueue-version", __version__),
        ])  # fmt: skip

    async def cmd_pause_tube(self, tube: str, seconds: int) -> bytes:
        stats = await self.service.stats()
        if tube not in self.listener.tubes and tube not in stats["queues"]:
            return b"NOT_FOUND\r\n"
        await self.listener.pause(tube, seconds)
        return b"PAUSED\r\n"


class BeanstalkListener:
    """The listener: its sessions, the tubes they named, its counters."""

    def __init__(
        self,
        service: Service,
        host: str,
        port: int,
        *,
        draining: Callable[[], bool] = lambda: False,
        max_job_size: int = MAX_JOB_SIZE,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.draining = draining
        self.max_job_size = max_job_size
        self.node = os.urandom(4).hex()
        self.ids = itertools.count(1)
        self.sessions: set[Session] = set()
        #: tubes named by a use or watch (a tube exists in the store once it holds jobs)
        self.tubes: set[str] = {"default"}
        self.counts: dict[str, int] = {}
        self.deletes: dict[str, int] = {}
        #: job id -> the delay its last put or release gave (stats-job), newest jobs
        self.delays: collections.OrderedDict[int, int] = collections.OrderedDict()
        #: stopping: waiting reserves answer at once, taking nothing
        self.closing = False
        self.pauses: dict[str, int] = {}
        #: tube -> the seconds of the last pause-tube this server was asked (stats-tube's
        #: "pause"; the pause itself, and its end, are the store's)
        self.asked: dict[str, int] = {}
        self.total_connections = 0
        self.started = time.monotonic()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: each connection's transport (cut at close) and end-of-input event (set then)
        self._transports: set[asyncio.WriteTransport] = set()
        self._wakes: set[asyncio.Event] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  reuse_address=True)  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop: no new connections; waiting reserves answer at once and take nothing;
        each connection is cut and gives back what it held."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for wake in list(self._wakes):
            wake.set()
        for transport in list(self._transports):
            transport.abort()
        if self._tasks:
            _, stuck = await asyncio.wait(list(self._tasks), timeout=5.0)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()

    def deleted(self, tube: str) -> None:
        self.deletes[tube] = self.deletes.get(tube, 0) + 1

    def delayed(self, job_id: int, delay: int) -> None:
        """Remember the delay last given to a job (stats-job), for the newest jobs."""
        self.delays[job_id] = delay
        self.delays.move_to_end(job_id)
        if len(self.delays) > DELAYS_KEPT:
            self.delays.popitem(last=False)

    async def pause(self, tube: str, seconds: int) -> None:
        """pause-tube: a pause of the queue that the store ends after ``seconds``
        (any server's housekeeping does, on time); 0 resumes it now."""
        self.pauses[tube] = self.pauses.get(tube, 0) + 1
        if seconds == 0:
            self.asked.pop(tube, None)
            await self.service.pause(tube, False)
            return
        await self.service.pause(tube, True, seconds=seconds)
        self.asked[tube] = seconds

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # (a stop that could not wait cancels it: asyncio's callback must not log that)
        with contextlib.suppress(asyncio.CancelledError):
            await self._session(reader, writer)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        transport = writer.transport
        self._transports.add(transport)
        peer = writer.get_extra_info("peername")
        session = Session(self, f"{peer[0]}:{peer[1]}" if peer else "?")
        self.sessions.add(session)
        self.total_connections += 1
        parser = Parser(self.max_job_size)
        eof = asyncio.Event()  # the client sent all it will (or the listener stops)
        self._wakes.add(eof)
        room = asyncio.Event()  # fewer than QUEUED_MAX requests wait: read more
        room.set()
        queue: collections.deque[Command | WireError] = collections.deque()
        more = asyncio.Event()  # something was queued, or the input ended

        async def read() -> None:
            try:
                while not eof.is_set():
                    await room.wait()
                    data = await reader.read(65536)
                    if not data:
                        break
                    parser.feed(data)
                    while (item := parser.next()) is not None:
                        queue.append(item)
                    more.set()
                    if len(queue) >= QUEUED_MAX:
                        room.clear()
            except (ConnectionError, OSError):
                pass
            finally:
                eof.set()
                more.set()

        reading = asyncio.create_task(read())
        try:
            while True:
                if not queue:
                    if eof.is_set():
                        break
                    more.clear()
                    await more.wait()
                    continue
                item = queue.popleft()
                if len(queue) < QUEUED_MAX // 2:
                    room.set()
                if isinstance(item, WireError):
                    reply = item.word.encode("ascii") + b"\r\n"
                else:
                    try:
                        reply = await session.run(item, eof)
                    except Closed:
                        break
                    except DistQueueError as exc:
                        log.warning("beanstalk %s: %s failed: %s", session.peer, item.name, exc)
                        reply = b"INTERNAL_ERROR\r\n"
                    except (ConnectionError, asyncio.CancelledError):
                        raise
                    except Exception:  # a bug: said, logged, and the connection goes on
                        log.exception("beanstalk %s: %s failed", session.peer, item.name)
                        reply = b"INTERNAL_ERROR\r\n"
                if transport.is_closing():  # cut (a stop, a reset): nobody to answer
                    break
                writer.write(reply)
                # (waits only while the client leaves more than asyncio's high-water
                # mark unread: replies are never buffered without bound)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
            self.sessions.discard(session)
            self._wakes.discard(eof)
            with contextlib.suppress(Exception):
                await session.close()
            if self.closing:
                transport.abort()
            else:
                writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            self._transports.discard(transport)
            if task is not None:
                self._tasks.discard(task)
