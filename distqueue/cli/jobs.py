"""Client commands: submit, status, result, wait, cancel, retry, purge, list, stats."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from distqueue import codec
from distqueue.cli.common import client_options, emit_json, fail
from distqueue.client import Client
from distqueue.errors import InvalidJob
from distqueue.jobs import Job, JobState, parse_priority
from distqueue.protocol.messages import job_to_wire
from distqueue.server.server import format_stats


def _deadline(value: str) -> dict[str, float]:
    """Seconds from now (``60``) or a date and time (``2026-11-24T18:00``)."""
    try:
        return {"deadline_in": float(value)}
    except ValueError:
        pass
    try:
        return {"deadline": datetime.fromisoformat(value).timestamp()}
    except ValueError:
        raise InvalidJob(
            f"--deadline must be seconds from now or an ISO date-time, not {value!r}"
        ) from None


@click.command()
@click.argument("job_type", metavar="TYPE")
@click.argument("text", nargs=-1)
@click.option("-p", "--priority", default=None, help="high, normal, low or 0-10 (0 most urgent).")
@click.option("-r", "--retries", type=int, default=None, help="Retries after a failure (3).")
@click.option("-t", "--timeout", type=float, default=None, help="Seconds one attempt may run.")
@click.option("--deadline", default=None, help="Do not start after: seconds from now, or ISO time.")
@click.option("-d", "--delay", type=float, default=None, help="Seconds to wait before it runs.")
@click.option("-q", "--queue", default=None, help="The queue (default).")
@click.option(
    "--payload",
    "payload_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A file whose bytes travel with the job.",
)
@click.option("--args", "args_json", default=None, help="The job's args as JSON.")
@click.option("--unique-key", default=None, help="Idempotency key: one job per key.")
@click.option("--no-check-type", is_flag=True, help="Queue even if no worker serves the type.")
@client_options
def submit(
    job_type: str,
    text: tuple[str, ...],
    priority: str | None,
    retries: int | None,
    timeout: float | None,
    deadline: str | None,
    delay: float | None,
    queue: str | None,
    payload_file: Path | None,
    args_json: str | None,
    unique_key: str | None,
    no_check_type: bool,
    server: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Submit a job; print its id.

    \b
      distqueue submit wordcount hello world
      distqueue submit "capitalize hello"      (type and text in one string)
      id=$(distqueue submit echo hi) && distqueue result $id --wait 10
    """
    if not text and " " in job_type.strip():
        job_type, *rest = job_type.split()
        text = tuple(rest)
    spec: dict[str, Any] = {"type": job_type}
    if args_json is not None:
        if text:
            raise InvalidJob("give the job's text or --args, not both")
        spec["args"] = codec.loads(args_json, "--args")
    elif text:
        spec["args"] = " ".join(text)
    if priority is not None:
        spec["priority"] = parse_priority(priority)
    for key, value in (
        ("retries", retries),
        ("timeout", timeout),
        ("delay", delay),
        ("queue", queue),
        ("unique_key", unique_key),
    ):
        if value is not None:
            spec[key] = value
    if deadline is not None:
        spec.update(_deadline(deadline))
    if no_check_type:
        spec["check_type"] = False
    if payload_file is not None:
        spec["payload"] = payload_file.read_bytes()
    with Client(server, token=token) as client:
        [job_id] = client.submit_many([spec])
    if as_json:
        emit_json({"id": job_id})
    else:
        click.echo(job_id)


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _show(job: Job) -> None:
    click.echo(f"job {job.id}: {job.type} {codec.dumps(job.args).decode()}")
    click.echo(
        f"  state:    {job.state.value}"
        + ("  (cancel requested)" if job.cancel_requested and job.state is JobState.RUNNING else "")
    )
    click.echo(
        f"  queue:    {job.queue}   priority: {job.priority}   attempts: {job.attempts}"
        f" (failures {job.failures}, retries allowed {job.max_retries})"
    )
    if job.worker:
        click.echo(f"  worker:   {job.worker}")
    click.echo(
        f"  created:  {_ago(job.created_at)}   started: {_ago(job.started_at)}"
        f"   finished: {_ago(job.finished_at)}"
    )
    if job.run_at:
        click.echo(f"  runs at:  {_ago(job.run_at)}")
    if job.progress:
        click.echo(f"  progress: {job.progress.get('percent')}% {job.progress.get('message', '')}")
    if job.state is JobState.SUCCEEDED and job.result is not None:
        click.echo(f"  result:   {_text(job.result)}")
    if job.error is not None:
        click.echo(f"  error:    {job.error.kind}: {job.error.message}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else codec.dumps(value).decode()


@click.command()
@click.argument("job_id", type=int)
@client_options
def status(job_id: int, server: str | None, token: str | None, as_json: bool) -> None:
    """Show a job's state, attempts, times, result or error."""
    with Client(server, token=token) as client:
        job = client.status(job_id)
    if as_json:
        emit_json(job_to_wire(job))
    else:
        _show(job)


@click.command()
@click.argument("job_id", type=int)
@click.option("-w", "--wait", type=float, default=None, help="Wait up to SECONDS for it first.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the result to this file (file results).",
)
@client_options
def result(
    job_id: int,
    wait: float | None,
    output: Path | None,
    server: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Print a finished job's result (exit 1 if it is not finished or failed)."""
    with Client(server, token=token) as client:
        value = client.result(job_id, wait=wait)
    if output is not None:
        output.write_bytes(value if isinstance(value, bytes) else codec.dumps(value))
        return
    if isinstance(value, bytes):
        if sys.stdout.isatty():
            fail(f"job {job_id}'s result is {len(value)} bytes: write it with -o FILE")
        sys.stdout.buffer.write(value)
    elif as_json:
        emit_json(value)
    else:
        click.echo(_text(value))


@click.command()
@click.argument("job_id", type=int)
@click.option("--timeout", type=float, default=None, help="Give up after SECONDS (exit 2).")
@client_options
def wait(
    job_id: int, timeout: float | None, server: str | None, token: str | None, as_json: bool
) -> None:
    """Wait until a job finishes; exit 0 if it succeeded, 1 if not."""
    with Client(server, token=token) as client:
        job = client.wait(job_id, timeout)
    if as_json:
        emit_json(job_to_wire(job))
    else:
        _show(job)
    if job.state is not JobState.SUCCEEDED:
        sys.exit(1)


@click.command()
@click.argument("job_id", type=int)
@client_options
def cancel(job_id: int, server: str | None, token: str | None, as_json: bool) -> None:
    """Cancel a job (a running one is stopped by its worker)."""
    with Client(server, token=token) as client:
        state = client.cancel(job_id)
    emit_json({"id": job_id, "state": state}) if as_json else click.echo(state)


@click.command()
@click.argument("job_id", type=int)
@client_options
def retry(job_id: int, server: str | None, token: str | None, as_json: bool) -> None:
    """Queue a dead or cancelled job again."""
    with Client(server, token=token) as client:
        client.retry(job_id)
    emit_json({"id": job_id, "state": "queued"}) if as_json else click.echo("queued")


@click.command()
@click.argument("job_id", type=int)
@client_options
def purge(job_id: int, server: str | None, token: str | None, as_json: bool) -> None:
    """Delete a finished job now (e.g. a dead letter)."""
    with Client(server, token=token) as client:
        client.purge(job_id)
    emit_json({"id": job_id, "purged": True}) if as_json else click.echo("purged")


@click.command(name="list")
@click.option("-s", "--state", type=click.Choice([s.value for s in JobState]), default=None)
@click.option("-q", "--queue", default=None)
@click.option("--type", "job_type", default=None)
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--before", type=int, default=None, help="Only ids below this (paging).")
@client_options
def list_(
    state: str | None,
    queue: str | None,
    job_type: str | None,
    limit: int,
    before: int | None,
    server: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    with Client(server, token=token) as client:
        jobs = client.list(state=state, queue=queue, type=job_type, limit=limit, before=before)
    if as_json:
        emit_json([job_to_wire(j) for j in jobs])
        return
    if not jobs:
        click.echo("no jobs")
        return
    click.echo(
        f"{'ID':>8}  {'STATE':<10} {'TYPE':<16} {'QUEUE':<10} {'PRI':>3} {'TRIES':>5}  CREATED"
    )
    for j in jobs:
        click.echo(
            f"{j.id:>8}  {j.state.value:<10} {j.type[:16]:<16} {j.queue[:10]:<10}"
            f" {j.priority:>3} {j.attempts:>5}  {_ago(j.created_at)}"
        )


@click.command()
@client_options
def stats(server: str | None, token: str | None, as_json: bool) -> None:
    """Jobs processed, success rate, workers, queue depth by priority."""
    with Client(server, token=token) as client:
        snapshot = client.stats()
    emit_json(snapshot) if as_json else click.echo(format_stats(snapshot))


COMMANDS = [submit, status, result, wait, cancel, retry, purge, list_, stats]
