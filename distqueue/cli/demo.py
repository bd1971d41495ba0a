"""``distqueue demo``: a server, worker processes and a client, on this machine.

Starts a server on a free port with a fresh data directory, starts worker
processes exactly as ``distqueue worker`` would run on other machines, submits a
mix of built-in jobs at three priorities (plus one with invalid arguments, which
fails at once and for good), waits for every result, and prints what happened.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from distqueue.cli.common import progress_bar, quiet_log_options
from distqueue.client import AsyncClient
from distqueue.config import DEFAULT_HTTP, ServerConfig
from distqueue.errors import UnknownType
from distqueue.jobs import Job
from distqueue.server.server import Server, format_stats
from distqueue.web import web_available

TEXTS = ["hello world", "the quick brown fox", "distqueue never loses a job", "a b c d e"]
TYPES = ["echo", "wordcount", "charcount", "capitalize"]


async def _demo(data: Path, n: int, workers: int) -> None:
    server = Server(ServerConfig(port=0, data=str(data), http=DEFAULT_HTTP, http_given=False))
    await server.start()
    address = f"127.0.0.1:{server.port}"
    click.echo(f"server listening on {address}, data in {data}")
    if server.admin is not None:
        click.echo(f"dashboard and /metrics on http://127.0.0.1:{server.admin.port}/")
    elif not web_available():
        click.echo(f"dashboard: pip install 'distqueue[web]' to see it at http://{DEFAULT_HTTP}/")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "distqueue",
            "worker",
            "--server",
            address,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    click.echo(f"started {workers} worker processes")
    try:
        async with AsyncClient(address) as client:
            # every worker connected before the jobs go in: each gets its share
            deadline = time.monotonic() + 30
            while len(server.service.workers) < workers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            rng = random.Random(0)
            specs: list[dict[str, Any]] = [
                {
                    "type": rng.choice(TYPES),
                    "args": rng.choice(TEXTS),
                    "priority": rng.choice(["high", "normal", "low"]),
                }
                for _ in range(n)
            ]
            specs.append({"type": "wordcount", "args": {"not": "text"}})  # fails for good
            started = time.perf_counter()
            ids = await client.submit_many(specs)
            click.echo(f"submitted {len(ids)} jobs (ids {ids[0]}..{ids[-1]}) in one call")
            try:
                await client.submit("wordcont", "a typo")
            except UnknownType as exc:
                click.echo(f"a typo is refused at once: {exc}")
            with progress_bar(len(ids), "jobs finished", transient=False) as advance:

                async def finished(job_id: int) -> Job:
                    job = await client.wait(job_id, timeout=120)
                    advance(1)
                    return job

                jobs = await asyncio.gather(*(finished(i) for i in ids))
            elapsed = time.perf_counter() - started
            for job in jobs[:4]:
                result = await client.result(job.id)
                click.echo(f"  job {job.id}: {job.type} {job.args!r} -> {result!r}")
            for job in jobs:
                if job.error is not None:
                    click.echo(
                        f"  job {job.id}: {job.type} {job.args!r} is {job.state.value}"
                        f" after {job.attempts} attempt(s): {job.error.message}"
                    )
            click.echo(f"all {len(ids)} jobs finished in {elapsed:.2f}s")
            click.echo(format_stats(await client.stats()))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(proc.wait() for proc in procs))
        await server.shutdown()


@click.command()
@click.option("-n", "--jobs", "n", default=1000, show_default=True, help="Jobs to submit.")
@click.option("-w", "--workers", default=2, show_default=True, help="Worker processes.")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory (default: a new temporary one).",
)
@quiet_log_options
def demo(n: int, workers: int, data: Path | None) -> None:
    """Start a server and workers on this machine, run jobs through them.

    Its server runs in this process and logs here (--log-level, default warning);
    the worker processes' output is not shown.
    """
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="distqueue-demo-"))
    asyncio.run(_demo(data, n, workers))
