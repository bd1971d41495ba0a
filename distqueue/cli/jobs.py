"""Client commands: submit, status, result, wait, cancel, retry, purge, list, stats."""

from __future__ import annotations

import base64
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from distqueue import codec, defaults
from distqueue.cli.common import client_options, emit_json, fail, progress_bar, stderr_is_tty
from distqueue.client import Client
from distqueue.errors import DistQueueError, InvalidJob, Timeout
from distqueue.jobs import Job, JobState, parse_priority
from distqueue.names import BUILTIN_TYPES
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
@click.option(
    "-p",
    "--priority",
    default=None,
    help=f"high, normal, low or 0-10 (up to 4294967295), 0 most urgent ({defaults.PRIORITY}).",
)
@click.option(
    "-r",
    "--retries",
    type=int,
    default=None,
    help=f"Retries after a failure ({defaults.MAX_RETRIES}).",
)
@click.option("-t", "--timeout", type=float, default=None, help="Seconds one attempt may run.")
@click.option("--deadline", default=None, help="Do not start after: seconds from now, or ISO time.")
@click.option("-d", "--delay", type=float, default=None, help="Seconds to wait before it runs.")
@click.option("-q", "--queue", default=None, help=f"The queue ({defaults.QUEUE}).")
@click.option(
    "--payload",
    "payload_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A file whose bytes travel with the job.",
)
@click.option("--args", "args_json", default=None, help="The job's args as JSON.")
@click.option("--unique-key", default=None, help="Idempotency key: one job per key.")
@click.option(
    "--no-check-type",
    is_flag=True,
    help="Queue it even if its type looks like a typo of a known one.",
)
@click.option(
    "--after",
    default=None,
    metavar="ID[,ID...]",
    help="Wait for these jobs: run once they have all succeeded.",
)
@click.option(
    "--on-failure",
    type=click.Choice(["cancel", "run"]),
    default=None,
    help="With --after, when one of them fails for good: cancel this job (default) or run it.",
)
@click.option(
    "--pass-results",
    is_flag=True,
    help="With --after, give the task their results first (one, or a list).",
)
@click.option(
    "-n",
    "--count",
    type=click.IntRange(1, 10_000_000),
    default=1,
    help="Submit this many copies (in calls of 1000); print their ids, one a line.",
)
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
    after: str | None,
    on_failure: str | None,
    pass_results: bool,
    count: int,
    server: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Submit a job; print its id.

    \b
      distqueue submit wordcount hello world
      distqueue submit "capitalize hello"      (type and text in one string)
      id=$(distqueue submit echo hi) && distqueue result $id --wait 10
      distqueue submit sleep 0.1 --count 5000  (5000 jobs: their ids, one a line)

    A type no worker serves yet is queued with a warning (a task's first jobs,
    before its workers start); one that looks like a typo of a known type is
    refused (--no-check-type queues it anyway).
    """
    if not text and (one := re.match(r"\s*(\S+)\s+(.*)\Z", job_type, re.DOTALL)):
        job_type, text = one[1], (one[2],) if one[2] else ()  # the text after it, verbatim
    if count > 1 and unique_key is not None:
        raise click.UsageError("--unique-key makes one job: not with --count")
    spec: dict[str, Any] = {"type": job_type, **job_args(text, args_json)}
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
    if after is not None:
        try:
            spec["after"] = [int(i) for i in after.split(",") if i.strip()]
        except ValueError:
            raise click.BadParameter(f"job ids, comma-separated, not {after!r}",
                                     param_hint="--after") from None  # fmt: skip
    elif on_failure is not None or pass_results:
        raise click.UsageError("--on-failure and --pass-results go with --after")
    if on_failure is not None:
        spec["on_failure"] = on_failure
    if pass_results:
        spec["pass_results"] = True
    if payload_file is not None:
        spec["payload"] = payload_file.read_bytes()
    with Client(server, token=token) as client:
        ids = _submit_copies(client, spec, count)
        _warn_unserved(client, job_type, queue, no_check_type)
    if count == 1 and as_json:
        emit_json({"id": ids[0]})
    elif as_json:
        emit_json(ids)
    else:
        click.echo("\n".join(map(str, ids)))


def job_args(text: tuple[str, ...], args_json: str | None) -> dict[str, Any]:
    """A job's ``args`` from the command line: its text words, or --args as JSON."""
    if args_json is not None:
        if text:
            raise InvalidJob("give the job's text or --args, not both")
        return {"args": codec.loads(args_json, "--args")}
    return {"args": " ".join(text)} if text else {}


#: the most jobs one SUBMIT of ``submit --count`` carries
BULK = 1000


def _submit_copies(client: Client, spec: dict[str, Any], count: int) -> list[int]:
    """Submit ``count`` copies of ``spec``, BULK at a time (each call all or none);
    a progress bar on stderr when it is a terminal."""
    ids: list[int] = []
    with progress_bar(count if count > 1 else 0, "submitting") as advance:
        while len(ids) < count:
            n = min(BULK, count - len(ids))
            ids += client.submit_many([spec] * n)
            advance(n)
    return ids


def _warn_unserved(client: Client, job_type: str, queue: str | None, no_check: bool) -> None:
    """A warning line on stderr when no worker serves the job's type or queue: the job
    waits until one does (one STATS call, only for such a type or a queue given)."""
    check_type = not no_check and job_type not in BUILTIN_TYPES
    check_queue = queue is not None and queue != defaults.QUEUE
    if not check_type and not check_queue:
        return
    try:
        snapshot = client.stats()
    except DistQueueError:
        return  # the job is in; the warning is a courtesy
    types = snapshot.get("types")
    if check_type and isinstance(types, list) and job_type not in types:
        _warn(f"no worker serves {job_type!r} yet: it waits until one does")
    served = snapshot.get("queues_served")
    if check_queue and isinstance(served, list) and queue not in served:
        _warn(
            f"no worker serves queue {queue!r} (served: {', '.join(served) or 'none'}):"
            " the job waits until one does"
        )


def _warn(message: str) -> None:
    click.echo(f"distqueue: warning: {message}", err=True)


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
    help="Write the result to this file (file results: its bytes; else its JSON).",
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
    """Print a finished job's result.

    Exit 0 if the job succeeded, 1 if it ended dead or cancelled, 3 if it has not
    finished (nor within --wait). A file (bytes) result goes to -o FILE, or raw to
    a stdout that is not a terminal; with --json it is an object:
    {"kind": "bytes", "size": N, "base64": "..."}.
    """
    with Client(server, token=token) as client:
        if wait is not None:
            _wait_for(client, job_id, wait)
        value = client.result(job_id)
    if output is not None:
        output.write_bytes(value if isinstance(value, bytes) else codec.dumps(value))
        return
    if isinstance(value, bytes):
        if as_json:
            emit_json(
                {"kind": "bytes", "size": len(value), "base64": base64.b64encode(value).decode()}
            )
            return
        if sys.stdout.isatty():
            fail(f"job {job_id}'s result is {len(value)} bytes: write it with -o FILE")
        sys.stdout.buffer.write(value)
    elif as_json:
        emit_json(value)
    else:
        click.echo(_text(value))


def _wait_for(client: Client, job_id: int, timeout: float | None) -> Job:
    """``client.wait``; with a spinner showing the job's state on stderr when it is a
    terminal (then it waits in short steps, reading the state between them)."""
    if not stderr_is_tty():
        return client.wait(job_id, timeout)
    from rich.console import Console
    from rich.markup import escape

    deadline = None if timeout is None else time.monotonic() + timeout
    job = client.status(job_id)
    with Console(stderr=True).status(escape(_state_line(job))) as spinner:
        while True:
            step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            try:
                return client.wait(job_id, step)
            except Timeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(
                        f"job {job_id} is still {job.state.value} after {timeout}s"
                    ) from None
            job = client.status(job_id)
            spinner.update(escape(_state_line(job)))


def _state_line(job: Job) -> str:
    line = f"job {job.id} ({job.type}): {job.state.value}"
    if job.attempts > 1:
        line += f", attempt {job.attempts}"
    if job.progress:
        line += f", {job.progress.get('percent')}% {job.progress.get('message', '')}"
    return line.rstrip()


@click.command()
@click.argument("job_id", type=int)
@click.option("--timeout", type=float, default=None, help="Give up after SECONDS (exit 3).")
@client_options
def wait(
    job_id: int, timeout: float | None, server: str | None, token: str | None, as_json: bool
) -> None:
    """Wait until a job finishes and show it.

    Exit 0 if it succeeded, 1 if it ended dead or cancelled, 3 if it is still not
    finished after --timeout.
    """
    with Client(server, token=token) as client:
        job = _wait_for(client, job_id, timeout)
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
    """List jobs, newest first.

    A table on a terminal; piped, one job a line, tab-separated: id, state, type,
    queue, priority, attempts, created (local time), no header.
    """
    with Client(server, token=token) as client:
        jobs = client.list(state=state, queue=queue, type=job_type, limit=limit, before=before)
    if as_json:
        emit_json([job_to_wire(j) for j in jobs])
        return
    rows = [
        [str(j.id), j.state.value, j.type, j.queue, str(j.priority), str(j.attempts),
         _ago(j.created_at)]
        for j in jobs
    ]  # fmt: skip
    if not sys.stdout.isatty():
        for row in rows:
            click.echo("\t".join(row))
        return
    if not rows:
        click.echo("no jobs")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("ID", "STATE", "TYPE", "QUEUE", "PRI", "TRIES", "CREATED"):
        table.add_column(name, justify="right" if name in ("ID", "PRI", "TRIES") else "left")
    for row in rows:  # Text: a type or queue is never read as markup
        table.add_row(*map(Text, row), style=_STATE_STYLE.get(row[1]))
    Console(highlight=False).print(table)


#: how ``list`` colours a job's row on a terminal, by state
_STATE_STYLE = {"dead": "red", "cancelled": "dim", "running": "cyan", "retrying": "yellow"}


@click.command()
@client_options
def stats(server: str | None, token: str | None, as_json: bool) -> None:
    """Jobs processed, success rate, workers, queue depth by priority."""
    with Client(server, token=token) as client:
        snapshot = client.stats()
    emit_json(snapshot) if as_json else click.echo(format_stats(snapshot))


COMMANDS = [submit, status, result, wait, cancel, retry, purge, list_, stats]
