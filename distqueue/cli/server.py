"""``distqueue server`` and ``distqueue worker``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, TextIO, cast

import click

from distqueue import defaults, logs
from distqueue.cli.common import (
    TOKEN_HELP,
    friendly_errors,
    log_options,
    resolve_token,
    tls_options,
    token_file_option,
)
from distqueue.cli.types import DURATION, Duration, Size
from distqueue.config import DEFAULT_HTTP, SERVER_ENV, ServerConfig, server_addresses
from distqueue.errors import InvalidJob
from distqueue.limits import limit_from_text
from distqueue.policy import Retention, RetryPolicy
from distqueue.server.server import Server
from distqueue.store.base import ALL_QUEUES, Limit
from distqueue.worker.child import die_with_parent
from distqueue.worker.executors import SHELL_OUTPUT_LIMIT
from distqueue.worker.worker import Worker, WorkerOptions

#: the logger a worker's status lines come from in --log-format json
LOGGER = "distqueue.worker"


def _run(main: Any) -> None:
    """asyncio.run, on uvloop when it is installed."""
    run: Any = asyncio.run
    try:
        import uvloop
    except ImportError:  # the fast extra is not installed: asyncio's own loop
        pass
    else:
        run = uvloop.run
    run(main)  # outside the except: an error of main's is not "during" the ImportError


def _policy_options(fn: Any) -> Any:
    """What the server decides about jobs: retries, poison, retention, limits."""
    d = defaults
    options = [
        click.option("--retry-base", type=DURATION, default=d.RETRY_BASE, show_default=True,
                     help="Wait before a failed job's first retry (doubling after each"
                     " further failure, by --retry-factor)."),
        click.option("--retry-factor", type=click.FloatRange(min=1.0), default=d.RETRY_FACTOR,
                     show_default=True, help="Growth of the retry wait per failure."),
        click.option("--retry-cap", type=DURATION, default=d.RETRY_CAP, show_default=True,
                     help="The longest retry wait."),
        click.option("--retry-jitter", type=click.FloatRange(0.0, 1.0), default=d.RETRY_JITTER,
                     show_default=True,
                     help="Up to this fraction of each retry wait is taken off at random."),
        click.option("--poison-limit", type=click.IntRange(min=0), default=d.POISON_LIMIT,
                     show_default=True, help="A job whose worker vanished more than this"
                     " many times is dead (kind poison)."),
        click.option("--retain-succeeded", type=DURATION, default=d.RETAIN_SUCCEEDED,
                     show_default=True, help="How long succeeded jobs are kept."),
        click.option("--retain-failed", type=DURATION, default=d.RETAIN_FAILED,
                     show_default=True, help="How long dead and cancelled jobs are kept."),
        click.option("--max-fetch-bytes", type=Size(min=1), default=d.MAX_FETCH_BYTES,
                     show_default=True, help="The most bytes of jobs one FETCH answer"
                     " carries (a larger job goes alone)."),
        click.option("--type-memory", type=DURATION, default=d.TYPE_MEMORY, show_default=True,
                     help="How long a job type is accepted after its last worker left."),
        click.option("--auth-timeout", type=Duration(min=0.1), default=d.AUTH_TIMEOUT,
                     show_default=True, help="Time a connection has to authenticate."),
        click.option("--frame-timeout", type=Duration(min=0.1), default=d.FRAME_TIMEOUT,
                     show_default=True, help="Time a half-sent request may stall."),
        click.option("--output-soft", type=Size(min=1024), default=d.OUTPUT_SOFT,
                     show_default=True, help="A connection whose unread replies stay above"
                     " this for --output-soft-seconds is dropped."),
        click.option("--output-soft-seconds", type=DURATION, default=d.OUTPUT_SOFT_SECONDS,
                     show_default=True),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _default_port() -> int:
    """The port of DISTQUEUE_SERVER's first address (what its clients are told to use),
    else 7700."""
    env = os.environ.get(SERVER_ENV)
    if env:
        try:
            return int(server_addresses(env)[0][1])
        except (ValueError, IndexError):
            pass
    return defaults.PORT


def _limits(texts: tuple[str, ...], max_depth: int | None) -> tuple[Limit, ...]:
    """--limit and --max-depth as the store's Limit records (a bad one: exit 2)."""
    try:
        out = [limit_from_text(t) for t in texts]
    except InvalidJob as exc:
        raise click.BadParameter(str(exc), param_hint="--limit") from None
    if max_depth is not None:
        out.append(Limit(scope="queue", name=ALL_QUEUES, max_depth=max_depth))
    return tuple(out)


@click.command()
@click.option("--host", default=defaults.HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None,
    help="0 = any free port [default: the port of DISTQUEUE_SERVER, else 7700].",
)  # fmt: skip
@click.option(
    "--data",
    default=defaults.DATA,
    show_default=True,
    help="Data directory of the embedded store.",
)
@click.option(
    "--token",
    envvar="DISTQUEUE_TOKEN",
    default=None,
    help="Require this token from every connection. Prefer the environment"
    " (DISTQUEUE_TOKEN) or --token-file: a command line is visible to every user (ps).",
)
@token_file_option
@click.option(
    "--insecure",
    is_flag=True,
    help="Listen on an address other machines reach (--host) without a token: anyone"
    " who reaches the port can submit and run jobs.",
)
@click.option(
    "--max-output",
    type=Size(min=1024 * 1024),
    default=defaults.MAX_OUTPUT,
    show_default=True,
    help="Drop a connection whose unread replies pass this many bytes.",
)
@click.option(
    "--store",
    "store_url",
    envvar="DISTQUEUE_SERVER_STORE",
    default=None,
    metavar="URL",
    help="Where jobs live: a directory (the embedded store, as --data) or a URL,"
    " redis://HOST:PORT/DB or postgresql://USER@HOST:PORT/DB (several servers may share"
    " it).",
)
@click.option(
    "--no-migrate",
    "no_migrate",
    is_flag=True,
    default=False,
    help="A PostgreSQL store (postgresql://...): do not apply pending schema migrations at"
    " start (run distqueue migrate); refuse to start when the schema is not up to date.",
)
@click.option(
    "--durability",
    type=click.Choice(["full", "normal"]),
    default=defaults.DURABILITY,
    show_default=True,
    help="full: fsync every commit (survives power loss); normal: survives the server"
    " being killed, not the machine losing power, and is faster.",
)
@click.option(
    "--lease",
    type=Duration(min=0.5),
    default=defaults.LEASE,
    show_default=True,
    help="How long a worker holds a job between heartbeats (it beats at a third of it).",
)
@click.option(
    "--max-payload",
    type=Size(min=1024),
    default=defaults.MAX_PAYLOAD,
    show_default=True,
    help="Largest argument of a request (a payload, a spec, a result).",
)
@click.option(
    "--poll",
    type=Duration(min=0.01),
    default=defaults.POLL,
    show_default=True,
    help="Time between a blocked FETCH's or WAIT's own looks at the store"
    " (on a shared Redis, other servers' events usually wake them first).",
)
@_policy_options
@click.option(
    "--tls-cert",
    default=None,
    metavar="FILE",
    help="Speak TLS only (1.2 or newer), with this certificate (chain), a PEM file;"
    " needs --tls-key.",
)
@click.option("--tls-key", default=None, metavar="FILE", help="The --tls-cert's private key.")
@click.option(
    "--tls-ca",
    default=None,
    metavar="FILE",
    help="Require a client certificate signed by this CA (a PEM file) from every connection.",
)
@click.option(
    "--http",
    envvar="DISTQUEUE_HTTP",
    default=None,
    metavar="HOST:PORT|off",
    help=f"The admin port: dashboard, /metrics, /health (needs distqueue[web])"
    f" [default: {DEFAULT_HTTP}, skipped with a warning when taken]; off for none.",
)
@click.option(
    "--beanstalk",
    envvar="DISTQUEUE_BEANSTALK",
    default=None,
    metavar="HOST:PORT",
    help="Also speak beanstalkd's protocol on this address (e.g. 127.0.0.1:11300):"
    " tubes are queues, jobs of type beanstalk (docs/beanstalk.md). Off by default.",
)
@click.option(
    "--stuck-after",
    type=Duration(min=1.0),
    default=defaults.STUCK_AFTER,
    show_default=True,
    help="/health reports the queue stuck when jobs are queued, workers idle and"
    " nothing moved for this long.",
)
@click.option(
    "--long-transaction",
    type=Duration(min=1.0),
    default=defaults.LONG_TRANSACTION,
    show_default=True,
    help="PostgreSQL store: /health warns of a transaction open this long on the"
    " database (it holds back vacuum, and queue tables bloat).",
)
@click.option(
    "--limit",
    "limits",
    multiple=True,
    metavar="SCOPE:NAME:FIELD=VALUE,...",
    help="Set a limit at start (repeatable): type:email.send:concurrency=5,rate=100/m or"
    " queue:bulk:max_depth=100000; `distqueue limit` changes them at run time.",
)
@click.option(
    "--max-depth",
    type=click.IntRange(1, None),
    default=None,
    help="At most this many unfinished jobs in all queues together; a SUBMIT beyond it"
    " is refused (FULL), to be tried again.",
)
@click.option(
    "--console/--no-console",
    default=None,
    help="Read 'stats' and 'quit' from stdin (default: when it is a terminal).",
)
@log_options
@friendly_errors
@resolve_token
def server(
    host: str,
    port: int | None,
    data: str,
    token: str | None,
    insecure: bool,
    max_output: int,
    store_url: str | None,
    no_migrate: bool,
    durability: str,
    lease: float,
    max_payload: int,
    poll: float,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    http: str | None,
    beanstalk: str | None,
    stuck_after: float,
    long_transaction: float,
    limits: tuple[str, ...],
    max_depth: int | None,
    console: bool | None,
    **policy: Any,
) -> None:
    """Run the job server (stops on quit, SIGTERM or Ctrl-C).

    Every option may also come from the environment (DISTQUEUE_SERVER_<OPTION>, e.g.
    DISTQUEUE_SERVER_LEASE=60) or a config file ([server] in distqueue.toml):
    `distqueue config server` shows what is in effect and where it came from.
    """
    if http is not None and http.strip().lower() not in ("off", "none", ""):
        _check_http(http)
    if beanstalk is not None:
        _check_http(beanstalk, "--beanstalk")
    store = store_url or data
    if no_migrate and store.partition("://")[0] in ("postgresql", "postgres"):
        store += ("&" if "?" in store else "?") + "migrate=off"  # (the store reads it)
    config = ServerConfig(
        host=host,
        port=_default_port() if port is None else port,
        data=store,
        token=token,
        insecure=insecure,
        max_output=max(max_output, max_payload + 2 * 1024 * 1024),
        output_soft=min(policy["output_soft"], max_output),
        output_soft_seconds=policy["output_soft_seconds"],
        lease=lease,
        max_payload=max_payload,
        durability=durability,
        poll=poll,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        http=_http_address(http),
        http_given=http is not None,
        beanstalk=None if beanstalk is None else beanstalk.strip(),
        stuck_after=stuck_after,
        long_transaction=long_transaction,
        retry=RetryPolicy(base=policy["retry_base"], factor=policy["retry_factor"],
                          cap=policy["retry_cap"], jitter=policy["retry_jitter"]),
        poison_limit=policy["poison_limit"],
        retention=Retention(succeeded=policy["retain_succeeded"],
                            failed=policy["retain_failed"]),
        max_fetch_bytes=policy["max_fetch_bytes"],
        type_memory=policy["type_memory"],
        auth_timeout=policy["auth_timeout"],
        frame_timeout=policy["frame_timeout"],
        limits=_limits(limits, max_depth),
    )  # fmt: skip
    if console is None:
        console = sys.stdin.isatty()
    srv = Server(config)
    out = sys.stderr
    if logs.json_enabled():  # its status lines (listening, stopping, the console's) too
        out = cast(TextIO, logs.AnnounceStream("distqueue.server"))
    _run(srv.serve(console=sys.stdin if console else None, out=out))
    if srv.failed:  # it stopped because something broke, not because it was asked to
        sys.exit(1)


def _http_address(http: str | None) -> str | None:
    if http is None:
        return DEFAULT_HTTP
    return None if http.strip().lower() in ("off", "none", "") else http.strip()


def _check_http(http: str, option: str = "--http") -> None:
    _, sep, port = http.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        example = "127.0.0.1:7701) or off" if option == "--http" else "127.0.0.1:11300)"
        raise click.BadParameter(f"{http!r}: expected HOST:PORT (e.g. {example}", param_hint=option)


def worker_options(fn: Any) -> Any:
    """The options of ``distqueue worker``, shared with ``distqueue workers``."""
    decorators = [
        click.option(
            "--server",
            "--store",
            "server_addr",
            envvar="DISTQUEUE_SERVER",
            default=None,
            metavar="[tls://]HOST:PORT[,...]|redis://...",
            help="Server(s) (env DISTQUEUE_SERVER), tls://HOST:PORT for TLS; or --store"
            " redis://HOST:PORT/DB (rediss:// for TLS) to work on that store directly,"
            " without a server.",
        ),
        click.option("--token", envvar="DISTQUEUE_TOKEN", default=None, help=TOKEN_HELP),
        token_file_option,
        click.option(
            "-q",
            "--queues",
            default=defaults.QUEUE,
            show_default=True,
            help="Comma-separated queues to serve, or * for all.",
        ),
        click.option(
            "-c",
            "--concurrency",
            type=click.IntRange(1, 10_000),
            default=None,
            help=f"Jobs run at once [default: {defaults.CONCURRENCY} on this machine, 32 a"
            f" core, with the thread pool; {defaults.PROCESSES}, a process a core, with"
            " --pool process].",
        ),
        click.option(
            "--pool",
            type=click.Choice(["thread", "process"]),
            default=defaults.POOL,
            show_default=True,
            help="Where sync tasks run: process when they must be killable.",
        ),
        click.option(
            "--tasks",
            "task_modules",
            envvar="DISTQUEUE_WORKER_TASKS",
            multiple=True,
            metavar="MODULE",
            help="A module (myapp.tasks), package (myapp) or file (myapp/tasks.py) whose"
            " @distqueue.task functions to serve.",
        ),
        click.option("--allow-shell", is_flag=True, help="Serve shell jobs (any command!)."),
        click.option(
            "--shell-output-limit",
            type=Size(min=1),
            default=SHELL_OUTPUT_LIMIT,
            show_default=True,
            help="Bytes of a shell job's stdout, and of its stderr, kept; a command that"
            " prints more is killed and its job fails (OutputTooLarge).",
        ),
        click.option(
            "--grace",
            type=DURATION,
            default=defaults.GRACE,
            show_default=True,
            help="Time running jobs get to finish on SIGTERM.",
        ),
        click.option("--no-builtins", is_flag=True, help="Do not serve the built-in types."),
        click.option(
            "--lease",
            type=Duration(min=0.5),
            default=None,
            help="Direct mode (--store redis://...): seconds a job is leased; a worker"
            " that dies loses its jobs after it [default: 30].",
        ),
        *tls_options(),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return resolve_token(fn)


def make_options(
    server_addr: str | None,
    token: str | None,
    queues: str,
    concurrency: int | None,
    pool: str,
    task_modules: tuple[str, ...],
    allow_shell: bool,
    grace: float,
    no_builtins: bool,
    shell_output_limit: int = SHELL_OUTPUT_LIMIT,
    lease: float | None = None,
    worker_id: str | None = None,
    tls: bool = False,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> WorkerOptions:
    return WorkerOptions(
        server=server_addr,
        token=token,
        concurrency=concurrency
        or (defaults.PROCESSES if pool == "process" else defaults.CONCURRENCY),
        id=worker_id,
        pool=pool,
        queues=None if queues.strip() == "*" else [q for q in queues.split(",") if q],
        tasks=[m for spec in task_modules for m in spec.split(",") if m],
        allow_shell=allow_shell,
        shell_output_limit=shell_output_limit,
        grace=grace,
        builtins=not no_builtins,
        lease=lease,
        tls=tls,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


@click.command()
@worker_options
@click.option("--id", "worker_id", default=None, help="Worker id (default host-pid-random).")
@click.option(
    "--instances",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Independent workers in this one process (each its own id and slots).",
)
@click.option(
    "--parent",
    "parent_pid",
    type=int,
    default=None,
    hidden=True,
    help="Run under `distqueue workers` (this pid): stop on its SIGTERMs only, ignore"
    " SIGINT, and stop when it is gone.",
)
@click.option(
    "--health-file",
    envvar="DISTQUEUE_HEALTH_FILE",
    default=None,
    metavar="PATH",
    help="Rewrite PATH every 5 s while running (pid, connected, jobs): what --check reads.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Do not run a worker: probe the one writing --health-file; exit 0 if it is"
    " alive and its event loop turns, 1 otherwise (a liveness probe).",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=1.0),
    default=None,
    help="With --check: the oldest health file that passes, in seconds [default: 15].",
)
@log_options
@friendly_errors
def worker(
    worker_id: str | None,
    instances: int,
    parent_pid: int | None,
    health_file: str | None,
    check: bool,
    max_age: float | None,
    **kw: Any,
) -> None:
    """Run a worker: fetch jobs, run them, report back.

    SIGTERM (or Ctrl-C) stops it cleanly: no new jobs, running ones get --grace
    seconds, the rest go back to the queue. A second signal stops it at once.
    """
    if check:
        from distqueue.worker.health import check_health

        if health_file is None:
            raise click.UsageError("--check reads the worker's --health-file: give it")
        healthy, message = check_health(health_file, max_age)
        click.echo(message, err=not healthy)
        sys.exit(0 if healthy else 1)
    if parent_pid is not None:  # its supervisor passes every stop on: one stop, one signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if worker_id is not None and instances > 1:
        raise click.UsageError("--id names one worker: not with --instances")
    ws = [Worker(make_options(worker_id=worker_id, **kw)) for _ in range(instances)]

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop_all() -> None:
            """First call: a graceful stop; later calls: stop at once."""
            for w in ws:
                w.stop()

        async def watch_parent(pid: int) -> None:
            while os.getppid() == pid:
                await asyncio.sleep(1.0)
            stop_all()

        # under a supervisor, SIGINT stays ignored: it passes a Ctrl-C on as SIGTERM
        sigs = [signal.SIGTERM] if parent_pid is not None else [signal.SIGTERM, signal.SIGINT]
        for sig in sigs:
            loop.add_signal_handler(sig, stop_all)
        watcher = None
        if parent_pid is not None:
            # its supervisor gone, even kill -9'd: a graceful stop, as if it had asked
            if not die_with_parent(signal.SIGTERM):  # not Linux: look every second
                watcher = asyncio.create_task(watch_parent(parent_pid), name="parent")
            elif os.getppid() != parent_pid:  # it went before the kernel was told
                stop_all()
        for w in ws:
            logs.announce(f"distqueue worker {w.id} serving {', '.join(w.types)}", LOGGER)
        health = None
        if health_file is not None:
            from distqueue.worker.health import keep_health

            health = asyncio.create_task(keep_health(health_file, ws), name="health")
        await asyncio.gather(*(w.run() for w in ws))
        if watcher is not None:
            watcher.cancel()
        if health is not None:
            health.cancel()
            await asyncio.gather(health, return_exceptions=True)
        for w in ws:
            logs.announce(f"distqueue worker {w.id} stopped after {w.processed} jobs", LOGGER)

    _run(main())
    if any(w.stuck for w in ws):  # threads that would not stop: their jobs are back already
        os._exit(0)
