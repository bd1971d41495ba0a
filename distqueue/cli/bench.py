"""``distqueue bench``: how much work one machine pushes through distqueue.

It starts a server (fresh data directory, durable settings as shipped) unless
given ``--server``, starts worker processes, and measures, each ``--repeat``
times (the table shows the median and the min-max):

- enqueue, one call at a time: one client, one SUBMIT, wait for the answer, again;
- enqueue, one job per call, ``--inflight`` calls in flight: one client, one job per
  SUBMIT, as a web application's many request handlers share one client;
- enqueue, bulk: SUBMIT of ``--batch`` specs per call;
- drain: N jobs already queued, released at once, run by the workers;
- end-to-end: submitting and running at the same time;
- round-trip latency: one job submitted to an idle system and waited for.

The jobs of the enqueue figures go to a queue no worker serves, so they do not
mix with the drain and end-to-end runs.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from distqueue.cli.common import emit_json, friendly_errors
from distqueue.client import AsyncClient

HOLD_QUEUE = "bench-hold"
FIGURES = {"single", "inflight", "bulk", "drain", "e2e", "latency"}
RUN_QUEUE = "bench"
LISTENING = re.compile(rb"listening on (\S+):(\d+)")
#: tasks that read the server's output, kept referenced until the process ends
_background: set[asyncio.Future[None]] = set()


@dataclass
class Figures:
    #: name -> samples (jobs/s, or ms for latency)
    samples: dict[str, list[float]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    #: (seconds since start, jobs finished) during the end-to-end runs
    timeline: list[tuple[float, int]] = field(default_factory=list)

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)


async def _start_server(data: Path, extra: list[str]) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "distqueue", "server", "--port", "0", "--data", str(data),
        "--no-console", *extra, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        if not line:
            raise click.ClickException("the bench server did not start")
        m = LISTENING.search(line)
        if m:
            _background.add(asyncio.ensure_future(_drain_pipe(proc.stderr)))
            return proc, f"{m.group(1).decode()}:{m.group(2).decode()}"


async def _drain_pipe(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def _start_workers(address: str, n: int, concurrency: int, token: str | None) -> list[Any]:
    env = dict(os.environ)
    if token:
        env["DISTQUEUE_TOKEN"] = token
    return [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "distqueue", "worker", "--server", address, "--queues",
            RUN_QUEUE, "--concurrency", str(concurrency), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(n)
    ]  # fmt: skip


def _spec(
    job_type: str, args: Any, payload: bytes | None, queue: str, **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": job_type, "queue": queue, **extra}
    if args is not None:
        spec["args"] = args
    if payload:
        spec["payload"] = payload
    return spec


async def _finished(client: AsyncClient) -> int:
    stats = await client.stats()
    counts = stats["queues"].get(RUN_QUEUE, {})
    return int(counts.get("succeeded", 0) + counts.get("dead", 0))


async def _wait_finished(client: AsyncClient, target: int, started: float,
                         timeline: list[tuple[float, int]] | None = None) -> float:  # fmt: skip
    """Poll until ``target`` bench jobs have finished; return when that happened."""
    while True:
        done = await _finished(client)
        now = time.perf_counter()
        if timeline is not None:
            timeline.append((now - started, done))
        if done >= target:
            return now
        await asyncio.sleep(0.005)


async def _run(opts: dict[str, Any], progress: Any) -> Figures:
    figures = Figures()
    n, batch = opts["jobs"], opts["batch"]
    job_type, args = opts["job_type"], None
    if opts["sleep"] is not None:
        job_type, args = "sleep", opts["sleep"]
    payload = os.urandom(opts["payload_size"]) if opts["payload_size"] else None
    tmp = None
    procs: list[Any] = []
    server_proc = None
    address = opts["server"]
    if address is None:
        tmp = tempfile.mkdtemp(prefix="distqueue-bench-")
        extra = ["--durability", opts["durability"]]
        server_proc, address = await _start_server(Path(tmp) / "data", extra)
        procs.append(server_proc)
    workers = await _start_workers(address, opts["workers"], opts["concurrency"], opts["token"])
    procs += workers
    finished_base = 0
    try:
        async with AsyncClient(address, token=opts["token"]) as client:
            # wait until every worker is connected
            while (await client.stats())["workers"]["connected"] < opts["workers"]:
                await asyncio.sleep(0.05)
            finished_base = await _finished(client)
            total_steps = opts["repeat"] * 4 + 1
            task = progress.add_task("benchmarking", total=total_steps)
            want = opts["figures"]
            bulk_rate = 50_000.0  # a guess, until measured, for the drain's release time
            for _ in range(opts["repeat"]):
                if "single" in want:  # enqueue, one call at a time
                    single = opts["single"]
                    t0 = time.perf_counter()
                    for _ in range(single):
                        await client.submit_many([_spec(job_type, args, payload, HOLD_QUEUE)])
                    figures.add("enqueue, one call at a time", single / (time.perf_counter() - t0))
                if "inflight" in want:  # one job per call, many calls at once
                    inflight = opts["inflight"]
                    per_caller = max(1, n // inflight)

                    async def caller(count: int) -> None:
                        for _ in range(count):
                            await client.submit_many([_spec(job_type, args, payload, HOLD_QUEUE)])

                    t0 = time.perf_counter()
                    await asyncio.gather(*(caller(per_caller) for _ in range(inflight)))
                    figures.add(
                        f"enqueue, one job per call, {inflight} in flight",
                        per_caller * inflight / (time.perf_counter() - t0),
                    )
                progress.advance(task)
                if "bulk" in want:  # enqueue, bulk
                    t0 = time.perf_counter()
                    for start in range(0, n, batch):
                        size = min(batch, n - start)
                        await client.submit_many(
                            [_spec(job_type, args, payload, HOLD_QUEUE)] * size
                        )
                    bulk_rate = n / (time.perf_counter() - t0)
                    figures.add("enqueue, bulk", bulk_rate)
                progress.advance(task)
                if "drain" in want:  # N jobs queued, released at once (one run_at)
                    release = time.time() + max(1.0, 3 * n / bulk_rate)
                    for start in range(0, n, batch):
                        size = min(batch, n - start)
                        await client.submit_many(
                            [_spec(job_type, args, payload, RUN_QUEUE, run_at=release)] * size
                        )
                    while time.time() < release:
                        await asyncio.sleep(0.001)
                    t0 = time.perf_counter()
                    finished_base += n
                    t1 = await _wait_finished(client, finished_base, t0)
                    figures.add("drain", n / (t1 - t0))
                progress.advance(task)
                if "e2e" in want:  # submit and run at once
                    t0 = time.perf_counter()
                    finished_base += n
                    waiter = asyncio.ensure_future(
                        _wait_finished(client, finished_base, t0, figures.timeline)
                    )
                    for start in range(0, n, batch):
                        size = min(batch, n - start)
                        await client.submit_many([_spec(job_type, args, payload, RUN_QUEUE)] * size)
                    t1 = await waiter
                    figures.add("end-to-end", n / (t1 - t0))
                progress.advance(task)
            if "latency" in want:  # round-trip latency on an idle system
                for _ in range(opts["latency_samples"]):
                    t0 = time.perf_counter()
                    spec = _spec(job_type, args, payload, RUN_QUEUE)
                    [job_id] = await client.submit_many([spec])
                    await client.wait(job_id, timeout=30)
                    figures.latencies_ms.append((time.perf_counter() - t0) * 1000)
            progress.advance(task)
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            await proc.wait()
        if server_proc is not None and server_proc.returncode is None:
            server_proc.send_signal(signal.SIGTERM)
            await server_proc.wait()
    return figures


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _summary(figures: Figures) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in figures.samples.items():
        out[name] = {
            "jobs_per_s": round(statistics.median(values)),
            "min": round(min(values)),
            "max": round(max(values)),
            "runs": len(values),
        }
    lat = figures.latencies_ms
    if lat:
        out["round-trip latency"] = {
            "p50_ms": round(_percentile(lat, 50), 3), "p95_ms": round(_percentile(lat, 95), 3),
            "p99_ms": round(_percentile(lat, 99), 3), "samples": len(lat),
        }  # fmt: skip
    return out


def _plot(figures: Figures, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException(
            "--plot needs matplotlib: pip install 'distqueue[plot]'"
        ) from None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    points = figures.timeline
    rates = [
        ((t0 + t1) / 2, (d1 - d0) / (t1 - t0))
        for (t0, d0), (t1, d1) in itertools.pairwise(points)
        if t1 > t0 and d1 >= d0
    ]
    if rates:
        ax1.plot([r[0] for r in rates], [r[1] for r in rates], lw=0.8)
    ax1.set(title="end-to-end throughput", xlabel="seconds into a run", ylabel="jobs/s")
    ax2.hist(figures.latencies_ms, bins=50)
    ax2.set(title="round-trip latency", xlabel="ms", ylabel="jobs")
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
    default="full",
    show_default=True,
    help="The durability of the server bench starts.",
)
@click.option("-n", "--jobs", default=20_000, show_default=True, help="Jobs per figure.")
@click.option("-w", "--workers", default=1, show_default=True, help="Worker processes.")
@click.option("-c", "--concurrency", default=64, show_default=True, help="Slots per worker.")
@click.option("--type", "job_type", default="noop", show_default=True, help="Job type.")
@click.option("--sleep", type=float, default=None, help="Run 'sleep' jobs of this many seconds.")
@click.option("--payload-size", type=int, default=0, show_default=True, help="Payload bytes.")
@click.option("--batch", default=1000, show_default=True, help="Specs per bulk SUBMIT.")
@click.option(
    "--single", default=2000, show_default=True, help="Jobs for the one-call-at-a-time figure."
)
@click.option(
    "--inflight",
    default=64,
    show_default=True,
    help="Calls in flight at once for the one-job-per-call figure.",
)
@click.option("--repeat", default=3, show_default=True, help="Runs of each figure.")
@click.option("--latency-samples", default=300, show_default=True)
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
    """Measure enqueue, drain and end-to-end rates and round-trip latency."""
    wanted = {f.strip() for f in opts["figures"].split(",") if f.strip()}
    unknown = wanted - FIGURES
    if unknown:
        raise click.BadParameter(
            f"unknown figure(s) {sorted(unknown)}; choose from {sorted(FIGURES)}"
        )
    opts["figures"] = wanted
    if opts["inflight"] < 1:
        raise click.BadParameter("--inflight must be at least 1")
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        figures = asyncio.run(_run(opts, progress))
    summary = _summary(figures)
    if plot is not None:
        _plot(figures, plot)
    if as_json:
        config = {k: sorted(v) if isinstance(v, set) else v for k, v in opts.items()}
        config.pop("token", None)
        emit_json({"config": config, "figures": summary})
        return
    table = Table(title=f"distqueue bench: {opts['jobs']} {opts['job_type']} jobs, "
                        f"{opts['workers']} worker(s) x {opts['concurrency']} slots")  # fmt: skip
    table.add_column("figure")
    table.add_column("median", justify="right")
    table.add_column("min - max", justify="right")
    for name, row in summary.items():
        if "jobs_per_s" in row:
            table.add_row(name, f"{row['jobs_per_s']:,} jobs/s", f"{row['min']:,} - {row['max']:,}")
        else:
            table.add_row(name, f"p50 {row['p50_ms']} ms",
                          f"p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms")  # fmt: skip
    Console().print(table)
