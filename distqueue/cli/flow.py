"""Workflow and flow-control commands: schedule, limit, pause, resume."""

from __future__ import annotations

import time
from typing import Any

import click

from distqueue import codec
from distqueue.cli.common import client_options, emit_json
from distqueue.cli.jobs import job_args
from distqueue.cli.types import Duration
from distqueue.client import Client
from distqueue.jobs import parse_priority

__all__ = ["COMMANDS"]


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@click.group()
def schedule() -> None:
    """Periodic jobs: a job submitted at each tick of a cron expression or interval.

    \b
      distqueue schedule add report "0 9 * * mon-fri" myapp.tasks.report --tz Europe/Paris
      distqueue schedule add ping "@every 30s" echo hello
      distqueue schedule list
      distqueue schedule pause report / resume report / remove report

    Each tick submits its job once however many servers run.
    """


@schedule.command(name="add")
@click.argument("name")
@click.argument("when", metavar="CRON")
@click.argument("job_type", metavar="TYPE")
@click.argument("text", nargs=-1)
@click.option("--args", "args_json", default=None, help="The job's args as JSON.")
@click.option("--tz", "timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option(
    "--catch-up",
    type=click.Choice(["once", "skip"]),
    default="once",
    show_default=True,
    help="A tick missed while nothing ran: submit it once on recovery, or skip it.",
)
@click.option("-q", "--queue", default=None, help="The job's queue.")
@click.option(
    "-p", "--priority", default=None, help="high, normal, low or 0-10 (up to 4294967295)."
)
@click.option("-r", "--retries", type=int, default=None, help="The job's retries.")
@click.option("-t", "--timeout", type=float, default=None, help="Seconds one attempt may run.")
@client_options
def schedule_add(
    name: str, when: str, job_type: str, text: tuple[str, ...], args_json: str | None,
    timezone: str, catch_up: str, queue: str | None, priority: str | None,
    retries: int | None, timeout: float | None, server: str | None, token: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Add (or change) schedule NAME: submit TYPE [TEXT...] at each tick of CRON.

    CRON is a cron expression (5 fields; 6 with seconds first), or "@every 30s"
    for an interval (s, m, h, d).
    """
    body: dict[str, Any] = {"timezone": timezone, "catch_up": catch_up}
    if when.strip().lower().startswith("@every"):
        body["every"] = Duration().convert(when.strip()[6:].strip(), None, None)
    else:
        body["cron"] = when
    job: dict[str, Any] = {"type": job_type, **job_args(text, args_json)}
    for key, value in (("queue", queue), ("retries", retries), ("timeout", timeout)):
        if value is not None:
            job[key] = value
    if priority is not None:
        job["priority"] = parse_priority(priority)
    body["job"] = job
    with Client(server, token=token) as client:
        added = codec.loads(client.call("SCHEDULE", "ADD", name, codec.dumps(body)), "schedule")
    if as_json:
        emit_json(added)
    else:
        click.echo(f"schedule {added['name']}: next tick {_when(added['next_at'])}")


@schedule.command(name="list")
@client_options
def schedule_list(server: str | None, token: str | None, as_json: bool) -> None:
    """Every schedule, its next tick, whether it is paused."""
    with Client(server, token=token) as client:
        rows = client.schedules()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no schedules")
    for s in rows:
        when = s["cron"] if s["cron"] is not None else f"@every {s['every']:g}s"
        state = "paused" if s["paused"] else f"next {_when(s['next_at'])}"
        job = s["job"]
        click.echo(f"{s['name']}\t{when} {s['timezone']}\t{job['type']}"
                   f" {codec.dumps(job.get('args')).decode()}\t{state}")  # fmt: skip


def _schedule_verb(verb: str, what: str) -> click.Command:
    @click.argument("name")
    @client_options
    def command(name: str, server: str | None, token: str | None, as_json: bool) -> None:
        with Client(server, token=token) as client:
            client.call("SCHEDULE", verb, name)
        emit_json({"name": name, "done": verb.lower()}) if as_json else click.echo(
            f"schedule {name} {what}"
        )

    command.__doc__ = f"{what.capitalize()} schedule NAME."
    return click.command(name=verb.lower())(command)


for _verb, _what in (("REMOVE", "removed"), ("PAUSE", "paused"), ("RESUME", "resumed")):
    schedule.add_command(_schedule_verb(_verb, _what))


@click.group()
def limit() -> None:
    """Concurrency, rate and depth limits of job types and queues (every server).

    \b
      distqueue limit set email.send --concurrency 5 --rate 100/m
      distqueue limit set --queue bulk --max-depth 100000
      distqueue limit list
      distqueue limit clear email.send
    """


def _scope(name: str | None, queue: str | None) -> tuple[str, str]:
    if (name is None) == (queue is None):
        raise click.UsageError("name a job TYPE, or a queue with --queue, one of them")
    return ("type", name) if name is not None else ("queue", queue)  # type: ignore[return-value]


@limit.command(name="set")
@click.argument("name", metavar="[TYPE]", required=False)
@click.option("-q", "--queue", default=None, help="Limit this queue instead of a type.")
@click.option("--concurrency", default=None, help="At most N running at once (none: no limit).")
@click.option("--rate", default=None, help="At most N starts per period: 100/m, 5/s (none).")
@click.option("--burst", default=None, help="Starts the rate allows at once (1).")
@click.option("--max-depth", default=None, help="Queues only: at most N unfinished jobs (none).")
@client_options
def limit_set(
    name: str | None, queue: str | None, concurrency: str | None, rate: str | None,
    burst: str | None, max_depth: str | None, server: str | None, token: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Set limits of a job TYPE (or --queue Q); the ones not given stay as they are."""
    scope, target = _scope(name, queue)
    changes = {k: v for k, v in (("concurrency", concurrency), ("rate", rate),
               ("burst", burst), ("max_depth", max_depth)) if v is not None}  # fmt: skip
    if not changes:
        raise click.UsageError("set at least one of --concurrency, --rate, --burst, --max-depth")
    args: list[Any] = ["LIMIT", "SET", scope, target]
    for key, value in changes.items():
        args += [key.upper(), value]
    with Client(server, token=token) as client:
        now = codec.loads(client.call(*args), "limit")
    emit_json(now) if as_json else click.echo(_limit_line(now))


def _limit_line(x: dict[str, Any]) -> str:
    parts = [f"{k}={x[k]}" for k in ("concurrency", "rate", "burst", "max_depth") if k in x]
    return f"{x['scope']} {x['name']}: {', '.join(parts) or 'no limit'}"


@limit.command(name="list")
@client_options
def limit_list(server: str | None, token: str | None, as_json: bool) -> None:
    """Every limit set, and the paused queues."""
    with Client(server, token=token) as client:
        rows, ends = client.limits(), client.pauses()
    paused = sorted(ends)
    if as_json:  # (pause_ends: each paused queue's end, null: until resumed)
        emit_json({"limits": rows, "paused": paused, "pause_ends": ends})
        return
    for x in rows:
        click.echo(_limit_line(x))
    for q in paused:
        end = ends[q]
        click.echo(f"queue {q}: paused" + ("" if end is None else f" until {_when(end)}"))
    if not rows and not paused:
        click.echo("no limits")


@limit.command(name="clear")
@click.argument("name", metavar="[TYPE]", required=False)
@click.option("-q", "--queue", default=None, help="Clear this queue's limits instead.")
@client_options
def limit_clear(
    name: str | None, queue: str | None, server: str | None, token: str | None, as_json: bool
) -> None:
    """Remove every limit of a job TYPE (or --queue Q)."""
    scope, target = _scope(name, queue)
    with Client(server, token=token) as client:
        client.call("LIMIT", "CLEAR", scope, target)
    emit_json({"scope": scope, "name": target}) if as_json else click.echo(
        f"{scope} {target}: no limit"
    )


@click.command()
@click.argument("queue")
@click.option(
    "--for",
    "length",
    type=Duration(min=0.001),
    default=None,
    metavar="DURATION",
    help="End the pause by itself after this long (30s, 10m, 2h); the store keeps the"
    " end, so it holds across server restarts.",
)
@client_options
def pause(
    queue: str, length: float | None, server: str | None, token: str | None, as_json: bool
) -> None:
    """Pause QUEUE: none of its jobs is handed out until resume (or --for has passed);
    running ones finish."""
    with Client(server, token=token) as client:
        client.pause(queue, length)
        until = client.pauses().get(queue) if length is not None else None
    if as_json:
        emit_json({"queue": queue, "paused": True, "until": until})
    elif until is not None:
        click.echo(f"queue {queue} paused until {_when(until)} ({length:g}s)")
    else:
        click.echo(f"queue {queue} paused")


@click.command()
@click.argument("queue")
@client_options
def resume(queue: str, server: str | None, token: str | None, as_json: bool) -> None:
    """Resume a paused QUEUE."""
    with Client(server, token=token) as client:
        client.resume(queue)
    emit_json({"queue": queue, "paused": False}) if as_json else click.echo(
        f"queue {queue} resumed"
    )


COMMANDS = [schedule, limit, pause, resume]
