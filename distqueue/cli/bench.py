"""``distqueue bench``: how much work one machine pushes through distqueue.

It starts a server (fresh data directory, the shipped settings) unless given
``--server``, starts worker processes with the shipped defaults serving the
registered tasks of ``distqueue.benchtasks`` (``--tasks distqueue.benchtasks``:
the task registry, a slot, the executor and argument binding, as every user task
has), warms up, and measures, each ``--repeat`` times (the table shows the median
and the min-max):

- enqueue, one call at a time: one client, one SUBMIT, wait for the answer, again;
- enqueue, one job per call, ``--inflight`` calls in flight: one client, one job per
  SUBMIT, as a web application's many request handlers share one client;
- enqueue, bulk: SUBMIT of ``--batch`` specs per call;
- drain: N jobs already queued, released at once, run by the workers;
- end-to-end: submitting and running at the same time;
- round-trip latency: one job submitted to an idle system and waited for.

Drain, end-to-end and latency are measured for each job type of ``--type``: by
default the sync task and the async task; ``--type noop`` is the built-in the
worker runs inline, a server-only figure. Only jobs that succeeded count: after
each figure the store's counts must show every job it submitted succeeded and none
dead, else the figure fails (and the bench, exit 1), as it does when its jobs do
not all succeed within ``--timeout``. Durability and store come from the server's
STATS.

The jobs of the enqueue figures go to a queue no worker serves; the others to a
queue of this run's own, so they do not mix with earlier runs' jobs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import math
import os
import re
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from distqueue import defaults
from distqueue.cli.common import emit_json, fail, friendly_errors
from distqueue.client import AsyncClient
from distqueue.errors import DistQueueError, Timeout
from distqueue.jobs import JobState

HOLD_QUEUE = "bench-hold"
FIGURES = {"single", "inflight", "bulk", "drain", "e2e", "latency"}
#: the module of the tasks the bench's workers serve
TASKS_MODULE = "distqueue.benchtasks"
LISTENING = re.compile(rb"listening on (\S+):(\d+)")
#: job states that mean a job failed: a figure with any of them is not a throughput
FAILED_STATES = ("dead", "retrying", "cancelled")
#: seconds the bench's workers have to connect
CONNECT_TIMEOUT = 30.0
#: tasks that read the children's output, kept referenced until the process ends
_background: set[asyncio.Future[None]] = set()


class BenchFailed(Exception):
    """A figure whose jobs did not all succeed (in time), or a bench that could not
    start: reported as failed, never as a throughput."""


@dataclass(frozen=True)
class Kind:
    """One job type the bench measures."""

    type: str
    args: Any
    #: what the output calls it
    label: str


def parse_kinds(types: str, sleep: float | None) -> list[Kind]:
    """``--type``: ``sync`` and ``async`` (the registered tasks of benchtasks), ``noop``
    (the built-in run inline), or any job type a worker serves (``--tasks``)."""
    kinds: list[Kind] = []
    for word in dict.fromkeys(w.strip() for w in types.split(",") if w.strip()):
        if word in ("sync", "async"):
            if sleep is None:
                kinds.append(Kind(f"bench.{word}", None, f"{word} task"))
            else:
                label = f"{word} task, sleep {sleep:g} s"
                kinds.append(Kind(f"bench.{word}_sleep", [sleep], label))
        elif word == "noop":
            if sleep is None:
                kinds.append(Kind("noop", None, "noop (inline, server-only figure)"))
            else:
                kinds.append(Kind("sleep", sleep, f"built-in sleep {sleep:g} s"))
        elif sleep is not None:
            raise click.BadParameter(
                f"--sleep goes with --type sync, async or noop, not {word!r}", param_hint="--sleep"
            )
        else:
            kinds.append(Kind(word, None, word))
    if not kinds:
        raise click.BadParameter("name at least one job type", param_hint="--type")
    return kinds


@dataclass
class Results:
    #: figure -> samples (jobs/s)
    samples: dict[str, list[float]] = field(default_factory=dict)
    #: figure -> round-trip latencies (ms)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    #: label -> (seconds since start, jobs succeeded) during the end-to-end runs
    timelines: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    #: figure -> why it failed
    failed: dict[str, str] = field(default_factory=dict)
    #: figure -> the job type it measured, in the order first measured
    types: dict[str, str] = field(default_factory=dict)
    #: what stopped the bench, if anything
    error: str | None = None
    #: the server's STATS ``server`` section, its address and who started it
    server: dict[str, Any] = field(default_factory=dict)
    #: the workers as the server saw them
    workers: dict[str, Any] = field(default_factory=dict)
    #: what the store recorded of the bench's jobs at the end
    jobs: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, job_type: str, value: float) -> None:
        self.types.setdefault(name, job_type)
        self.samples.setdefault(name, []).append(value)


# -- processes -----------------------------------------------------------------------------


def _keep_output(stream: asyncio.StreamReader, lines: collections.deque[str]) -> None:
    async def read() -> None:
        while line := await stream.readline():
            lines.append(line.decode(errors="replace").rstrip())

    _background.add(asyncio.ensure_future(read()))


async def _start_server(
    data: Path, extra: list[str], tail: collections.deque[str]
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "distqueue", "server", "--port", "0", "--data", str(data),
        "--no-console", *extra, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while True:
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                line = await proc.stderr.readline()
        except TimeoutError:
            line = b""
        if not line:
            await _stop([proc])
            said = "; ".join(tail) or "nothing"
            raise BenchFailed(f"the bench's server did not start (it said: {said})")
        tail.append(line.decode(errors="replace").rstrip())
        m = LISTENING.search(line)
        if m:
            _keep_output(proc.stderr, tail)
            return proc, f"{m.group(1).decode()}:{m.group(2).decode()}"


async def _start_workers(opts: dict[str, Any], address: str, queue: str) -> list[Any]:
    """The workers: the shipped defaults, but for what the user asked for."""
    env = dict(os.environ)
    if opts["token"]:
        env["DISTQUEUE_TOKEN"] = opts["token"]
    argv = [sys.executable, "-m", "distqueue", "worker", "--server", address, "--queues", queue,
            "--tasks", TASKS_MODULE]  # fmt: skip
    for module in opts["tasks"]:
        argv += ["--tasks", module]
    if opts["concurrency"] is not None:
        argv += ["--concurrency", str(opts["concurrency"])]
    if opts["pool"] is not None:
        argv += ["--pool", opts["pool"]]
    procs = []
    for _ in range(opts["workers"]):
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        proc.tail = collections.deque(maxlen=20)  # type: ignore[attr-defined]
        assert proc.stderr is not None
        _keep_output(proc.stderr, proc.tail)  # type: ignore[attr-defined]
        procs.append(proc)
    return procs


async def _stop(procs: list[Any], grace: float = 5.0) -> None:
    """SIGTERM; after ``grace`` a second one (a worker stops at once); then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        running = [p for p in procs if p.returncode is None]
        if not running:
            return
        for proc in running:
            proc.send_signal(sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.gather(*(p.wait() for p in running))


# -- the figures ---------------------------------------------------------------------------


def _spec(
    job_type: str, args: Any, payload: bytes | None, queue: str, **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": job_type, "queue": queue, **extra}
    if args is not None:
        spec["args"] = args
    if payload:
        spec["payload"] = payload
    return spec


class Bench:
    """One bench run against a connected client; keeps count of what it submitted."""

    def __init__(self, client: AsyncClient, opts: dict[str, Any], queue: str,
                 results: Results) -> None:  # fmt: skip
        self.client = client
        self.opts = opts
        self.queue = queue
        self.results = results
        self.timeout: float = opts["timeout"]
        self.n: int = opts["jobs"]
        self.batch: int = opts["batch"]
        self.payload = os.urandom(opts["payload_size"]) if opts["payload_size"] else None
        #: jobs submitted to the run queue; before the current figure
        self.submitted = 0
        self.figure_base = 0
        #: jobs submitted to the hold queue, and the jobs it held before the bench
        self.held = 0
        self.hold_base = 0

    def spec(self, kind: Kind, queue: str, **extra: Any) -> dict[str, Any]:
        return _spec(kind.type, kind.args, self.payload, queue, **extra)

    async def queue_counts(self, queue: str) -> dict[str, int]:
        counts = (await self.client.stats())["queues"].get(queue, {})
        return {state: int(n) for state, n in counts.items() if n}

    async def measure(self, name: str, kind: Kind, work: Coroutine[Any, Any, Any]) -> Any:
        """Run one figure within ``--timeout``; BenchFailed (recorded) when its jobs did
        not all succeed."""
        self.figure_base = self.submitted
        self.results.types.setdefault(name, kind.type)
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    return await work
            except (TimeoutError, Timeout):
                raise BenchFailed(await self.missing(name)) from None
            except DistQueueError as exc:
                raise BenchFailed(f"{name}: {exc} [{exc.code}]") from None
        except BenchFailed as exc:
            self.results.failed[name] = str(exc)
            raise

    async def missing(self, name: str) -> str:
        """What a figure that ran out of time left undone."""
        try:
            async with asyncio.timeout(10):
                counts = await self.queue_counts(self.queue)
        except (TimeoutError, DistQueueError, OSError) as exc:
            return (f"{name}: not done within {self.timeout:g} s (--timeout), and the server"
                    f" did not answer STATS ({exc or type(exc).__name__})")  # fmt: skip
        lost = self.submitted - counts.get("succeeded", 0)
        if lost <= 0:
            return f"{name}: not done within {self.timeout:g} s (--timeout)"
        where = ", ".join(f"{n} {s}" for s, n in counts.items() if s != "succeeded")
        left = "" if self.results.server.get("started_by_bench") else f" in queue {self.queue}"
        return (f"{name}: {lost} of {self.submitted - self.figure_base} jobs missing after"
                f" {self.timeout:g} s (--timeout): not succeeded"
                f" ({where or 'not in the store'}){left}")  # fmt: skip

    async def check_failures(self, name: str, counts: dict[str, int]) -> None:
        bad = {s: counts[s] for s in FAILED_STATES if counts.get(s)}
        if not bad:
            return
        first = ""
        for state in bad:
            jobs = await self.client.list(state=state, queue=self.queue, limit=1)
            if jobs and jobs[0].error is not None:
                err = jobs[0].error
                first = f"; job {jobs[0].id} ({jobs[0].type}): {err.kind}: {err.message}"
                break
        what = ", ".join(f"{n} {s}" for s, n in bad.items())
        raise BenchFailed(f"{name}: {sum(bad.values())} of {self.submitted - self.figure_base}"
                          f" jobs failed ({what}){first}; only succeeded jobs count")  # fmt: skip

    async def wait_succeeded(self, name: str, target: int,
                             timeline: list[tuple[float, int]] | None = None,
                             started: float = 0.0) -> float:  # fmt: skip
        """Poll until ``target`` jobs of the run queue succeeded; when that happened.
        A failed job (dead, retrying, cancelled) fails the figure at once."""
        while True:
            counts = await self.queue_counts(self.queue)
            now = time.perf_counter()
            succeeded = counts.get("succeeded", 0)
            if timeline is not None:
                timeline.append((now - started, succeeded - self.figure_base))
            await self.check_failures(name, counts)
            if succeeded >= target:
                if succeeded > target:
                    raise BenchFailed(f"{name}: {succeeded} jobs succeeded in queue"
                                      f" {self.queue}, {target} submitted")  # fmt: skip
                return now
            await asyncio.sleep(0.005)

    async def submit(self, kind: Kind, count: int, **extra: Any) -> None:
        """``count`` jobs to the run queue, in batches of ``--batch``."""
        for start in range(0, count, self.batch):
            size = min(self.batch, count - start)
            await self.client.submit_many([self.spec(kind, self.queue, **extra)] * size)
            self.submitted += size

    async def check_held(self, name: str) -> None:
        counts = await self.queue_counts(HOLD_QUEUE)
        stored = sum(counts.values()) - self.hold_base
        if stored != self.held:
            raise BenchFailed(f"{name}: the store holds {stored} of the {self.held} jobs"
                              f" submitted to {HOLD_QUEUE}")  # fmt: skip

    # each figure: its work, run by measure()

    async def warmup(self, kind: Kind, count: int) -> None:
        await self.submit(kind, count)
        await self.wait_succeeded(f"warm-up, {kind.label}", self.submitted)

    async def single(self, kind: Kind, name: str) -> float:
        count: int = self.opts["single"]
        t0 = time.perf_counter()
        for _ in range(count):
            await self.client.submit_many([self.spec(kind, HOLD_QUEUE)])
            self.held += 1
        rate = count / (time.perf_counter() - t0)
        await self.check_held(name)
        return rate

    async def inflight(self, kind: Kind, name: str) -> float:
        inflight: int = self.opts["inflight"]
        per_caller = max(1, self.n // inflight)

        async def caller() -> None:
            for _ in range(per_caller):
                await self.client.submit_many([self.spec(kind, HOLD_QUEUE)])
                self.held += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(inflight)))
        rate = per_caller * inflight / (time.perf_counter() - t0)
        await self.check_held(name)
        return rate

    async def bulk(self, kind: Kind, name: str) -> float:
        n = self.n
        t0 = time.perf_counter()
        for start in range(0, n, self.batch):
            size = min(self.batch, n - start)
            await self.client.submit_many([self.spec(kind, HOLD_QUEUE)] * size)
            self.held += size
        rate = n / (time.perf_counter() - t0)
        await self.check_held(name)
        return rate

    async def drain(self, kind: Kind, name: str, bulk_rate: float) -> float:
        """N jobs queued, released at one instant (one run_at)."""
        n = self.n
        release = time.time() + max(1.0, 3 * n / bulk_rate)
        await self.submit(kind, n, run_at=release)
        while time.time() < release:
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        t1 = await self.wait_succeeded(name, self.submitted)
        return n / (t1 - t0)

    async def e2e(self, kind: Kind, name: str) -> float:
        """Submitting and running at once."""
        n = self.n
        timeline = self.results.timelines.setdefault(kind.label, [])
        t0 = time.perf_counter()
        waiter = asyncio.ensure_future(self.wait_succeeded(name, self.submitted + n, timeline, t0))
        try:
            for start in range(0, n, self.batch):
                if waiter.done():  # failed already
                    break
                size = min(self.batch, n - start)
                await self.client.submit_many([self.spec(kind, self.queue)] * size)
                self.submitted += size
            t1 = await waiter
        finally:
            waiter.cancel()
        return n / (t1 - t0)

    async def latency(self, kind: Kind, name: str) -> list[float]:
        """Round trips on an idle system: submit one job, WAIT for it."""
        samples: list[float] = []
        for _ in range(self.opts["latency_samples"]):
            t0 = time.perf_counter()
            [job_id] = await self.client.submit_many([self.spec(kind, self.queue)])
            self.submitted += 1
            job = await self.client.wait(job_id, timeout=self.timeout)
            samples.append((time.perf_counter() - t0) * 1000)
            if job.state != JobState.SUCCEEDED:
                err = f": {job.error.kind}: {job.error.message}" if job.error else ""
                raise BenchFailed(f"{name}: job {job_id} ended {job.state}{err};"
                                  " only succeeded jobs count")  # fmt: skip
        await self.wait_succeeded(name, self.submitted)  # the store's count agrees
        return samples


async def _connect_workers(client: AsyncClient, workers: list[Any], queue: str) -> dict[str, Any]:
    """Wait until every bench worker is connected; the server's view of them."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        stats = await client.stats()
        ours = [w for w in stats["workers"]["list"] if w.get("queues") == [queue]]
        if len(ours) >= len(workers):
            return {"count": len(ours), "slots": [w["concurrency"] for w in ours],
                    "types": sorted({t for w in ours for t in w["types"]})}  # fmt: skip
        for proc in workers:
            if proc.returncode is not None:
                await asyncio.sleep(0.2)  # its last words
                said = "; ".join(proc.tail) or "nothing"
                raise BenchFailed(f"a bench worker exited (code {proc.returncode}): {said}")
        if time.monotonic() > deadline:
            raise BenchFailed(f"{len(workers) - len(ours)} of the bench's {len(workers)}"
                              f" workers did not connect within {CONNECT_TIMEOUT:g} s")  # fmt: skip
        await asyncio.sleep(0.05)


async def _run(opts: dict[str, Any], kinds: list[Kind], progress: Any) -> Results:
    results = Results()
    queue = f"bench-{secrets.token_hex(4)}"
    server_proc = None
    workers: list[Any] = []
    address = opts["server"]
    failed = True
    try:
        if address is None:
            tmp = tempfile.mkdtemp(prefix="distqueue-bench-")
            extra = [] if opts["durability"] is None else ["--durability", opts["durability"]]
            server_proc, address = await _start_server(
                Path(tmp) / "data", extra, collections.deque(maxlen=20)
            )
        workers = await _start_workers(opts, address, queue)
        async with AsyncClient(address, token=opts["token"]) as client:
            results.workers = await _connect_workers(client, workers, queue)
            stats = await client.stats()
            results.server = {
                **stats["server"], "address": address, "started_by_bench": server_proc is not None
            }  # fmt: skip
            served = set(results.workers["types"])
            for kind in kinds:
                if kind.type not in served:
                    raise BenchFailed(
                        f"no bench worker serves job type {kind.type!r}: they serve"
                        f" {TASKS_MODULE} ({', '.join(sorted(t for t in served if '.' in t))}),"
                        " the built-ins, and the tasks of --tasks MODULE"
                    )
            bench = Bench(client, opts, queue, results)
            bench.hold_base = sum((await bench.queue_counts(HOLD_QUEUE)).values())
            try:
                await _figures(bench, kinds, progress)
                failed = False
            finally:
                final: dict[str, Any] | None = None
                with contextlib.suppress(TimeoutError, DistQueueError, OSError):
                    async with asyncio.timeout(10):
                        final = await client.stats()
                if final is not None:
                    counts = final["queues"].get(queue, {})
                    held = final["queues"].get(HOLD_QUEUE, {})
                    results.jobs = {
                        "queue": queue, "submitted": bench.submitted,
                        "succeeded": counts.get("succeeded", 0), "dead": counts.get("dead", 0),
                        "states": counts, "hold_queue": HOLD_QUEUE, "held": bench.held,
                        "hold_stored": sum(held.values()) - bench.hold_base,
                    }  # fmt: skip
    except BenchFailed as exc:
        results.error = str(exc)
    finally:
        await _stop(workers, grace=2.0 if failed else 30.0)
        if server_proc is not None:
            await _stop([server_proc], grace=30.0)
    return results


async def _figures(bench: Bench, kinds: list[Kind], progress: Any) -> None:
    opts, results = bench.opts, bench.results
    want, repeat = opts["figures"], opts["repeat"]
    task = progress.add_task("benchmarking", total=len(kinds) * (repeat + 2) + repeat)
    if opts["warmup"]:
        for kind in kinds:
            await bench.measure(f"warm-up, {kind.label}", kind,
                                bench.warmup(kind, opts["warmup"]))  # fmt: skip
            progress.advance(task)
    first = kinds[0]  # enqueueing does not depend on the type
    bulk_rate = 50_000.0  # a guess, until measured, for the drain's release time

    async def figure(name: str, kind: Kind, work: Coroutine[Any, Any, float]) -> float:
        rate: float = await bench.measure(name, kind, work)
        results.add(name, kind.type, rate)
        return rate

    for _ in range(repeat):
        if "single" in want:
            name = "enqueue, one call at a time"
            await figure(name, first, bench.single(first, name))
        if "inflight" in want:
            name = f"enqueue, one job per call, {opts['inflight']} in flight"
            await figure(name, first, bench.inflight(first, name))
        if "bulk" in want:
            name = "enqueue, bulk"
            bulk_rate = await figure(name, first, bench.bulk(first, name))
        progress.advance(task)
        for kind in kinds:
            if "drain" in want:
                name = f"drain, {kind.label}"
                await figure(name, kind, bench.drain(kind, name, bulk_rate))
            if "e2e" in want:
                name = f"end-to-end, {kind.label}"
                await figure(name, kind, bench.e2e(kind, name))
            progress.advance(task)
    if "latency" in want:
        for kind in kinds:
            name = f"round-trip latency, {kind.label}"
            results.latencies[name] = await bench.measure(name, kind, bench.latency(kind, name))
            progress.advance(task)


# -- the report ----------------------------------------------------------------------------


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _summary(results: Results) -> dict[str, Any]:
    """Every figure, in the order measured: rates, latencies, or why it failed."""
    out: dict[str, Any] = {}
    for name, job_type in results.types.items():
        if name in results.failed:
            out[name] = {"failed": results.failed[name], "type": job_type}
        elif name in results.samples:
            values = results.samples[name]
            out[name] = {
                "jobs_per_s": round(statistics.median(values)), "min": round(min(values)),
                "max": round(max(values)), "runs": len(values), "type": job_type,
            }  # fmt: skip
        elif results.latencies.get(name):
            lat = results.latencies[name]
            out[name] = {
                "p50_ms": round(_percentile(lat, 50), 3), "p95_ms": round(_percentile(lat, 95), 3),
                "p99_ms": round(_percentile(lat, 99), 3), "samples": len(lat), "type": job_type,
            }  # fmt: skip
    return out


def _plot(results: Results, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException(
            "--plot needs matplotlib: pip install 'distqueue[plot]'"
        ) from None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, points in results.timelines.items():
        rates = [
            ((t0 + t1) / 2, (d1 - d0) / (t1 - t0))
            for (t0, d0), (t1, d1) in itertools.pairwise(points)
            if t1 > t0 and d1 >= d0
        ]
        if rates:
            ax1.plot([r[0] for r in rates], [r[1] for r in rates], lw=0.8, label=label)
    ax1.set(title="end-to-end throughput", xlabel="seconds into a run", ylabel="jobs/s")
    for name, lat in results.latencies.items():
        ax2.hist(lat, bins=50, alpha=0.6, label=name.removeprefix("round-trip latency, "))
    ax2.set(title="round-trip latency", xlabel="ms", ylabel="jobs")
    for ax in (ax1, ax2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@click.command()
@click.option(
    "--server",
    default=None,
    metavar="HOST:PORT",
    help="Bench this server (default: start one with a fresh data directory).",
)
@click.option("--token", envvar="DISTQUEUE_TOKEN", default=None)
@click.option(
    "--durability",
    type=click.Choice(["full", "normal"]),
    default=None,
    help=f"The durability of the server bench starts [default: {defaults.DURABILITY}, the"
    " server's]; a --server's is its own. The report says what the server runs with.",
)
@click.option("-n", "--jobs", type=click.IntRange(1), default=20_000, show_default=True,
              help="Jobs per figure.")  # fmt: skip
@click.option("-w", "--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Worker processes.")  # fmt: skip
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=None,
    help=f"Slots per worker [default: the worker's, {defaults.CONCURRENCY}].",
)
@click.option(
    "--pool",
    type=click.Choice(["thread", "process"]),
    default=None,
    help=f"Where the workers run sync tasks [default: the worker's, {defaults.POOL}].",
)
@click.option(
    "--type",
    "types",
    default="sync,async",
    show_default=True,
    help="Job types to run, comma-separated: sync and async (the registered tasks of"
    f" {TASKS_MODULE}), noop (the built-in the worker runs inline: a server-only"
    " figure), or a type of --tasks.",
)
@click.option(
    "--tasks",
    multiple=True,
    metavar="MODULE",
    help="Also serve these @distqueue.task functions (to bench your own with --type).",
)
@click.option(
    "--sleep",
    type=click.FloatRange(0, 86_400),
    default=None,
    help="Jobs sleep this many seconds (the sleep variant of each --type).",
)
@click.option("--payload-size", type=click.IntRange(0), default=0, show_default=True,
              help="Payload bytes.")  # fmt: skip
@click.option("--batch", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Specs per bulk SUBMIT.")  # fmt: skip
@click.option(
    "--single",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="Jobs for the one-call-at-a-time figure.",
)
@click.option(
    "--inflight",
    type=int,
    default=64,
    show_default=True,
    help="Calls in flight at once for the one-job-per-call figure.",
)
@click.option("--repeat", type=click.IntRange(1), default=3, show_default=True,
              help="Runs of each figure.")  # fmt: skip
@click.option("--latency-samples", type=click.IntRange(1), default=300, show_default=True)
@click.option(
    "--warmup",
    type=click.IntRange(0),
    default=None,
    help="Jobs of each type run before measuring, 0 for none [default: 10% of -n, at most 2,000].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Seconds a figure may take before its missing jobs fail the bench"
    " [default: the larger of 60 and N/500].",
)
@click.option(
    "--figures",
    default="single,inflight,bulk,drain,e2e,latency",
    show_default=True,
    help="Which figures to measure (comma-separated).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Draw throughput and latency to this PNG (needs matplotlib).",
)
@friendly_errors
def bench(as_json: bool, plot: Path | None, **opts: Any) -> None:
    """Measure enqueue, drain and end-to-end rates and round-trip latency.

    The workers run registered tasks (sync and async) with the shipped defaults;
    only jobs that succeeded count. Exit 1 when a figure fails.
    """
    wanted = {f.strip() for f in opts["figures"].split(",") if f.strip()}
    unknown = wanted - FIGURES
    if unknown:
        raise click.BadParameter(
            f"unknown figure(s) {sorted(unknown)}; choose from {sorted(FIGURES)}"
        )
    opts["figures"] = wanted
    if opts["inflight"] < 1:
        raise click.BadParameter("--inflight must be at least 1")
    if opts["server"] is not None and opts["durability"] is not None:
        raise click.UsageError(
            "--durability is for the server the bench starts; a --server runs with its own"
            " (the report says which)"
        )
    kinds = parse_kinds(opts["types"], opts["sleep"])
    n = opts["jobs"]
    if opts["warmup"] is None:
        opts["warmup"] = min(2000, math.ceil(n / 10))
    if opts["timeout"] is None:
        opts["timeout"] = max(60.0, n / 500)
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        results = asyncio.run(_run(opts, kinds, progress))
    summary = _summary(results)
    if plot is not None and results.error is None:
        _plot(results, plot)
    if as_json:
        config = {k: sorted(v) if isinstance(v, set) else v for k, v in opts.items()}
        config.pop("token", None)
        emit_json({
            "ok": results.error is None, "error": results.error, "config": config,
            "types": [{"type": k.type, "label": k.label} for k in kinds],
            "server": results.server, "workers": results.workers, "jobs": results.jobs,
            "figures": summary,
        })  # fmt: skip
    elif summary:
        server = results.server
        where = "started by the bench" if server["started_by_bench"] else server["address"]
        slots = sorted(set(results.workers.get("slots", [])))
        table = Table(
            title=f"distqueue bench: {n:,} jobs per figure, {opts['workers']} worker(s) x"
            f" {'/'.join(map(str, slots))} slots",
            caption=f"server {where}: store {server['store']}, durability"
            f" {server['durability']} (its STATS); warm-up {opts['warmup']:,} jobs per type;"
            " only succeeded jobs count",
        )
        table.add_column("figure")
        table.add_column("median", justify="right")
        table.add_column("min - max", justify="right")
        for name, row in summary.items():
            if "failed" in row:
                table.add_row(name, "FAILED", "see below")
            elif "jobs_per_s" in row:
                table.add_row(name, f"{row['jobs_per_s']:,} jobs/s",
                              f"{row['min']:,} - {row['max']:,}")  # fmt: skip
            else:
                table.add_row(name, f"p50 {row['p50_ms']} ms",
                              f"p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms")  # fmt: skip
        Console().print(table)
    if results.error is not None:
        fail(results.error)
