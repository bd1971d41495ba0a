"""A Jepsen-style history of one fault run, and the checker that judges it.

What is recorded:

- **submits**, on the client side: every job carries a unique tag (its first
  argument). A SUBMIT answered with ids is *acknowledged* (id -> tag). One that
  raised is either *refused* (a definite error reply: the server says nothing
  changed) or *maybe* (connection lost, timeout, a store error: the job may or
  may not exist; Jepsen's ``:info``). Error codes the protocol documents as
  "nothing was changed" count as refused; STORE too on the embedded store, but on
  Redis it means "maybe" (the answer was lost, not necessarily the change), so a
  Redis run sets ``History.store_error_definite = False``.
- **executions**, on the worker side: ``tests.faults.tasks.record`` appends a line
  per run (tag, job id, fencing token, pid, time) to the execution log.
- **nemesis events** and the **worker processes** (worker id -> pid), so a result
  can be traced to the process that produced it.

What is checked, after a quiesce (no job queued, running, retrying or scheduled),
from a final read of every job in the store (LIST pages, then STATUS each, which
carries the result):

- ``lost``: an acknowledged id that did not end ``succeeded`` (gone, dead, stuck).
- ``unexpected``: a job in the store that nobody submitted (no tag of ours, an
  acknowledged id holding another tag, one id answered to two submits); a tag
  living under two ids is ``duplicated``, counted apart; a job whose submit was
  refused with a "nothing was changed" error is ``refused_but_stored``.
- ``stale_accepted``: a succeeded job whose accepted result was produced under a
  claim that is not the job's final one: the result's token differs from the job's
  token, it came from a process other than the job's (last) worker, or it is the
  result of an execution of another job (another tag) that had the same id. That is
  a late ACK of a worker that lost the job, accepted.
- ``inconsistent``: a succeeded job whose counts cannot be (attempts < lost +
  failures + 1: it finished without a claim after its last lost lease), or whose
  result names no execution in the log.
- ``finished_twice``: the store's own count of completions (``totals.succeeded``)
  above the number of succeeded jobs: some job's finish was applied twice.
- ``stuck``: jobs not terminal when the quiesce gave up.

``recovered`` (maybe-submits that did land), executions per job, lost leases and
executions of an id that ends up holding another job (a job that ran but was never
stored, its id handed out again) are reported, not judged: execution is at least
once.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distqueue.client import Client
from distqueue.errors import DistQueueError, ServerUnavailable
from distqueue.jobs import Job, JobState
from distqueue.protocol.messages import job_from_wire
from tests.faults.tasks import RECORD

__all__ = [
    "Execution",
    "History",
    "Load",
    "Report",
    "check",
    "env_for_workers",
    "final_read",
    "quiesce",
    "settle_and_check",
]

#: error codes after which the server promises the submit changed nothing; STORE
#: too on the embedded store (docs/protocol.md, error codes), not on Redis
DEFINITE = frozenset(
    {"INVALID", "NOTYPE", "ARGS", "PROTO", "UNKNOWN", "TOOBIG", "AUTH", "ROLE", "STORE"}
)
#: the states a quiesce waits to be empty
PENDING_STATES = ("queued", "running", "retrying", "scheduled")
#: STATUS commands pipelined at once by the final read
STATUS_CHUNK = 50


@dataclass(frozen=True)
class Execution:
    """One run of ``record``, as its log line says."""

    tag: str
    job_id: int
    token: int
    pid: int
    at: float


class History:
    """Everything a fault run did that the checker needs. Thread-safe."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.run = secrets.token_hex(3)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        #: acknowledged: job id -> tag
        self.acked: dict[int, str] = {}
        #: acknowledged: tag -> every id it was answered with
        self.ids_of: dict[str, list[int]] = {}
        #: submits whose outcome is unknown (connection lost, timeout, store error)
        self.maybe: set[str] = set()
        #: submits refused for sure (nothing was created)
        self.refused: set[str] = set()
        #: (id, first tag, second tag): one id answered to two different submits
        self.reused: list[tuple[int, str, str]] = []
        #: all tags ever sent
        self.attempted: set[str] = set()
        #: why submits failed: error class -> count
        self.errors: Counter[str] = Counter()
        #: (monotonic time, what): nemesis actions and observations
        self.events: list[tuple[float, str]] = []
        #: worker id -> pid of the worker process
        self.worker_pids: dict[str, int] = {}
        self.t0 = time.monotonic()
        #: a STORE refusal changed nothing (the embedded store); False on Redis
        self.store_error_definite = True

    # -- recording ------------------------------------------------------------------

    def tag(self) -> str:
        with self._lock:
            return f"{self.run}-{next(self._seq):07d}"

    def spec(self, tag: str, seconds: float = 0.0) -> dict[str, Any]:
        # check_type off: a submit must not depend on a worker being connected right
        # now (workers come and go here); retries up: nothing but faults fails a job
        return {"type": RECORD, "args": [tag, seconds], "check_type": False, "retries": 10}

    def sent(self, tags: Iterable[str]) -> None:
        with self._lock:
            self.attempted.update(tags)

    def ok(self, tags: list[str], ids: list[int]) -> None:
        assert len(tags) == len(ids), (tags, ids)
        with self._lock:
            for tag, job_id in zip(tags, ids, strict=True):
                self.ids_of.setdefault(tag, []).append(job_id)
                known = self.acked.setdefault(job_id, tag)
                if known != tag:  # one id answered to two different submits
                    self.reused.append((job_id, known, tag))

    def failed(self, tags: list[str], exc: BaseException) -> str:
        """Record a submit that raised; returns "refused" or "maybe"."""
        code = getattr(exc, "code", "")
        definite = isinstance(exc, DistQueueError) and not isinstance(exc, ServerUnavailable)
        if code == "STORE" and not self.store_error_definite:
            definite = False
        outcome = "refused" if definite and code in DEFINITE else "maybe"
        with self._lock:
            (self.refused if outcome == "refused" else self.maybe).update(tags)
            self.errors[f"{type(exc).__name__}[{code}]"] += 1
        return outcome

    def note(self, what: str) -> None:
        with self._lock:
            self.events.append((time.monotonic() - self.t0, what))

    def worker(self, worker_id: str, pid: int) -> None:
        with self._lock:
            self.worker_pids[worker_id] = pid

    # -- reading --------------------------------------------------------------------

    def executions(self) -> list[Execution]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5:
                continue  # never written in part (one write per line), but be lenient
            tag, job_id, token, pid, at = parts
            out.append(Execution(tag, int(job_id), int(token), int(pid), float(at)))
        return out

    def timeline(self) -> str:
        return "\n".join(f"  {t:7.2f}s {what}" for t, what in self.events)


class Load:
    """A client thread submitting tagged jobs at about ``rate`` jobs a second, in
    single SUBMITs and batches, until stopped; every outcome goes to the history."""

    def __init__(
        self,
        history: History,
        address: str,
        *,
        rate: float = 150.0,
        batch: tuple[int, int] = (1, 20),
        seconds: tuple[float, float] = (0.0, 0.03),
        delayed: float = 0.0,
        seed: int = 1,
        timeout: float = 5.0,
    ) -> None:
        self.history = history
        self.address = address
        self.rate = rate
        self.batch = batch
        self.seconds = seconds
        #: the share of jobs submitted with a delay of 0.2-1.5 s (scheduled first)
        self.delayed = delayed
        self.rng = random.Random(seed)
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dq-load", daemon=True)
        self.submitted = 0
        self.failures = 0
        self.crashed: BaseException | None = None

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the load thread did not stop"
        if self.crashed is not None:
            raise AssertionError(f"the load thread crashed: {self.crashed!r}")

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by stop()
            self.crashed = exc

    def _loop(self) -> None:
        client = Client(self.address, timeout=self.timeout)
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                n = self.rng.randint(*self.batch)
                tags = [self.history.tag() for _ in range(n)]
                secs = [round(self.rng.uniform(*self.seconds), 4) for _ in tags]
                self.history.sent(tags)
                delay = round(self.rng.uniform(0.2, 1.5), 3)
                delay_it = self.delayed > 0 and self.rng.random() < self.delayed
                try:
                    if n == 1 and self.rng.random() < 0.5:  # the single form: SUBMIT {spec}
                        job_id = client.submit(
                            RECORD, tags[0], secs[0], check_type=False, retries=10,
                            delay=delay if delay_it else None,
                        )  # fmt: skip
                        ids = [job_id]
                    else:  # the batch form: SUBMIT [{spec}, ...]
                        specs = [self.history.spec(t, s) for t, s in zip(tags, secs, strict=True)]
                        if delay_it:
                            specs = [{**spec, "delay": delay} for spec in specs]
                        ids = client.submit_many(specs)
                    self.history.ok(tags, ids)
                    self.submitted += n
                except DistQueueError as exc:
                    self.history.failed(tags, exc)
                    self.failures += 1
                    client.close()
                    self._stop.wait(0.1)
                # pace: the submitted jobs should have taken n / rate seconds
                ahead = self.submitted / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    self._stop.wait(min(ahead, 1.0))
        finally:
            client.close()


def _client_call(address: str, fn: Callable[[Client], Any], timeout: float) -> Any:
    """``fn(client)``, retried through connection failures for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            with Client(address, timeout=10) as client:
                return fn(client)
        except DistQueueError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"no answer from {address} for {timeout}s: {last!r}")


def quiesce(address: str, timeout: float = 60.0) -> tuple[bool, dict[str, Any]]:
    """Wait (bounded) until no job is queued, running, retrying or scheduled.
    Returns (quiet, the last stats)."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while True:
        stats = _client_call(address, lambda c: c.stats(), max(1.0, deadline - time.monotonic()))
        if sum(stats["jobs"].get(s, 0) for s in PENDING_STATES) == 0:
            return True, stats
        if time.monotonic() > deadline:
            return False, stats
        time.sleep(0.2)


def final_read(address: str, timeout: float = 60.0) -> dict[int, Job]:
    """Every job in the store, with its result (LIST pages, then STATUS each)."""

    def read(client: Client) -> dict[int, Job]:
        ids: list[int] = []
        before = None
        while True:
            page = client.list(limit=1000, before=before)
            if not page:
                break
            ids += [job.id for job in page]
            before = min(job.id for job in page)
        jobs: dict[int, Job] = {}
        pipeline = getattr(client.connection, "pipeline", None)
        # pipelined in modest chunks: a server on Redis runs a connection's pipelined
        # commands at once, and past its Redis pool (100 connections) they fail
        for start in range(0, len(ids), STATUS_CHUNK):
            chunk = ids[start : start + STATUS_CHUNK]
            if pipeline is not None:
                replies = pipeline([("STATUS", i) for i in chunk])
                for reply in replies:
                    if isinstance(reply, BaseException):
                        raise reply
                    job = job_from_wire(reply)
                    jobs[job.id] = job
            else:
                for i in chunk:
                    jobs[i] = client.status(i)
        return jobs

    result: dict[int, Job] = _client_call(address, read, timeout)
    return result


def _token(job: Job) -> int:
    return int(getattr(job, "token", job.attempts))


@dataclass
class Report:
    """The checker's verdict: counts, and the offending ids for each."""

    acknowledged: int = 0
    acknowledged_succeeded: int = 0
    attempted: int = 0
    maybe: int = 0
    refused: int = 0
    in_store: int = 0
    recovered: int = 0
    executions: int = 0
    reexecuted_jobs: int = 0
    foreign_executions: int = 0
    lost_leases: int = 0
    quiet: bool = True
    lost: list[int] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stale_accepted: list[int] = field(default_factory=list)
    inconsistent: list[int] = field(default_factory=list)
    stuck: list[int] = field(default_factory=list)
    refused_but_stored: list[int] = field(default_factory=list)
    finished_twice: int = 0
    notes: list[str] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "unexpected": len(self.unexpected),
            "duplicated": len(self.duplicated),
            "stale_accepted": len(self.stale_accepted),
            "inconsistent": len(self.inconsistent),
            "stuck": len(self.stuck),
            "refused_but_stored": len(self.refused_but_stored),
            "finished_twice": self.finished_twice,
        }

    @property
    def valid(self) -> bool:
        return (
            self.quiet
            and not any(self.counts().values())
            and self.acknowledged_succeeded == self.acknowledged
        )

    def summary(self) -> str:
        lines = [
            f"counts: {self.counts()}",
            f"acknowledged {self.acknowledged}, of which succeeded {self.acknowledged_succeeded};"
            f" attempted {self.attempted}, maybe {self.maybe} (recovered {self.recovered}),"
            f" refused {self.refused}; in store {self.in_store}",
            f"executions {self.executions}, jobs run more than once {self.reexecuted_jobs},"
            f" lost leases {self.lost_leases}, executions of ids re-issued to another job"
            f" {self.foreign_executions}, quiet {self.quiet}, totals {self.totals}",
        ]
        names = ("lost", "unexpected", "duplicated", "stale_accepted", "inconsistent", "stuck",
                 "refused_but_stored")  # fmt: skip
        for name in names:
            bad = getattr(self, name)
            if bad:
                lines.append(f"{name}: {bad[:30]}{' ...' if len(bad) > 30 else ''}")
        lines += self.notes[:40]
        return "\n".join(lines)


def check(history: History, jobs: dict[int, Job], stats: dict[str, Any], quiet: bool) -> Report:
    """Judge the history against the final read (see the module's docstring)."""
    r = Report(quiet=quiet)
    r.acknowledged = len(history.acked)
    r.attempted = len(history.attempted)
    r.maybe = len(history.maybe)
    r.refused = len(history.refused)
    r.in_store = len(jobs)
    r.totals = dict(stats.get("totals", {}))
    execs = history.executions()
    r.executions = len(execs)
    runs: dict[tuple[int, int, int], Execution] = {(e.job_id, e.token, e.pid): e for e in execs}
    per_job = Counter(e.job_id for e in execs)
    r.reexecuted_jobs = sum(1 for n in per_job.values() if n > 1)

    def describe(job: Job | None, why: str) -> str:
        if job is None:
            return f"  {why}: missing from the store"
        err = "" if job.error is None else f" error={job.error.kind}: {job.error.message[:80]}"
        return (
            f"  {why}: job {job.id} {job.state.value} attempts={job.attempts}"
            f" token={_token(job)} lost={job.lost} failures={job.failures}"
            f" worker={job.worker} result={job.result!r}{err}"
        )

    # every acknowledged id: there, with its own tag, succeeded
    for job_id, tag in sorted(history.acked.items()):
        job = jobs.get(job_id)
        if job is None or job.state is not JobState.SUCCEEDED:
            r.lost.append(job_id)
            r.notes.append(describe(job, f"lost (tag {tag})"))
        else:
            r.acknowledged_succeeded += 1
        if job is not None and (not isinstance(job.args, list) or job.args[:1] != [tag]):
            r.unexpected.append(job_id)
            r.notes.append(describe(job, f"acknowledged as tag {tag} but holds {job.args!r}"))
    # a tag under two ids: one submit created two jobs
    for tag, ids in sorted(history.ids_of.items()):
        if len(set(ids)) > 1:
            r.duplicated.append(tag)
            r.notes.append(f"  duplicated: {tag} answered as ids {sorted(set(ids))}")
    for job_id, first, second in history.reused:
        r.unexpected.append(job_id)
        r.notes.append(f"  unexpected: id {job_id} answered to two submits, {first} and {second}")
    # every job in the store: ours, and not from a refused submit
    tags_in_store: dict[str, list[int]] = {}
    for job in jobs.values():
        tag = job.args[0] if isinstance(job.args, list) and job.args else None
        if isinstance(tag, str):
            tags_in_store.setdefault(tag, []).append(job.id)
        if job.id in history.acked:
            pass
        elif job.type != RECORD or not isinstance(tag, str) or tag not in history.attempted:
            r.unexpected.append(job.id)
            r.notes.append(describe(job, "unexpected: nobody submitted it"))
        elif tag in history.refused:
            r.refused_but_stored.append(job.id)
            r.notes.append(describe(job, f"refused but stored: its submit ({tag}) was refused"))
        elif tag in history.maybe:
            r.recovered += 1
        if job.state.value in PENDING_STATES:
            r.stuck.append(job.id)
        r.lost_leases += job.lost
    for tag, ids in sorted(tags_in_store.items()):
        if len(ids) > 1:
            r.duplicated.append(tag)
            r.notes.append(f"  duplicated: tag {tag} lives under ids {sorted(ids)}")
    # every succeeded job: its accepted result came from its final claim, of this job
    pids = history.worker_pids
    for job in sorted(jobs.values(), key=lambda j: j.id):
        if job.state is not JobState.SUCCEEDED or job.type != RECORD:
            continue
        res = job.result if isinstance(job.result, dict) else {}
        token, pid, res_tag = res.get("token"), res.get("pid"), res.get("tag")
        tag = job.args[0] if isinstance(job.args, list) and job.args else None
        stale = []
        if token != _token(job):
            stale.append(f"result of token {token}, the job's is {_token(job)}")
        if job.worker in pids and pid != pids[job.worker]:
            stale.append(f"result from pid {pid}, the job's worker {job.worker} is pid"
                         f" {pids[job.worker]}")  # fmt: skip
        if res_tag != tag:  # an execution of another job under this id (an id re-issued)
            stale.append(f"result of an execution of tag {res_tag!r}, the job's is {tag!r}")
        if stale:
            r.stale_accepted.append(job.id)
            r.notes.append(describe(job, "stale accepted: " + "; ".join(stale)))
        bad = []
        if job.attempts < job.lost + job.failures + 1:
            bad.append("attempts < lost + failures + 1")
        if isinstance(token, int) and isinstance(pid, int) and (job.id, token, pid) not in runs:
            bad.append(f"no execution of job {job.id} token {token} pid {pid} in the log")
        if bad:
            r.inconsistent.append(job.id)
            r.notes.append(describe(job, "inconsistent: " + "; ".join(bad)))
    # executions of an id under a tag that id does not hold at the end: a job that ran
    # but was never stored (a submit lost in a crash), its id handed out again later
    for e in execs:
        job = jobs.get(e.job_id)
        held = job.args[0] if job is not None and isinstance(job.args, list) and job.args else None
        if held != e.tag:
            r.foreign_executions += 1
    # the store's count of applied completions against the succeeded jobs it holds
    succeeded_in_store = sum(1 for j in jobs.values() if j.state is JobState.SUCCEEDED)
    total = r.totals.get("succeeded")
    if isinstance(total, int) and total > succeeded_in_store:
        r.finished_twice = total - succeeded_in_store
        r.notes.append(
            f"  totals.succeeded = {total} but {succeeded_in_store} jobs are succeeded:"
            " some finish was applied twice"
        )
    return r


def settle_and_check(history: History, address: str, timeout: float = 60.0) -> Report:
    """Quiesce, read every job, judge the history."""
    quiet, stats = quiesce(address, timeout)
    jobs = final_read(address)
    if not quiet:
        _, stats = quiesce(address, 1.0)
    report = check(history, jobs, stats, quiet)
    report.notes.insert(0, f"submit errors: {dict(history.errors)}")
    return report


def env_for_workers(log_path: Path) -> dict[str, str]:
    """The environment worker processes need: the execution log, and this repository
    on the import path so ``--tasks tests.faults.tasks`` imports."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {"DQ_FAULT_LOG": str(log_path), "PYTHONPATH": root + (os.pathsep + path if path else "")}
