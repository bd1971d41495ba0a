"""``distqueue workers N``: N worker processes on this machine, kept running.

A stop is the supervisor's to pass on: each worker runs in a session of its own,
so a Ctrl-C at the terminal (SIGINT to the foreground process group) reaches the
supervisor alone, which sends every worker one SIGTERM per signal it gets: the
first a graceful stop, the second a stop at once. The workers (``--parent``)
ignore SIGINT and stop when the supervisor is gone, even kill -9'd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import Any

import click

from distqueue import logs
from distqueue.cli.common import friendly_errors, log_options_passed_on
from distqueue.cli.server import _run, worker_options
from distqueue.client.direct import is_store_url
from distqueue.config import redact_url

#: restart backoff for a worker that keeps dying: first wait, longest wait (seconds)
RESTART_MIN, RESTART_MAX = 0.5, 30.0
#: a worker that lived this long is healthy again: its backoff starts over
HEALTHY_AFTER = 10.0


def worker_argv(kw: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The ``distqueue worker`` command line (and environment) for these options."""
    argv = [sys.executable, "-m", "distqueue", "worker", "--queues", kw["queues"],
            "--pool", kw["pool"], "--grace", str(kw["grace"]),
            "--parent", str(os.getpid())]  # fmt: skip
    if kw["concurrency"] is not None:  # else each worker's own default, from its machine
        argv += ["--concurrency", str(kw["concurrency"])]
    env = dict(os.environ)
    if kw["server_addr"]:
        if redact_url(kw["server_addr"]) != kw["server_addr"]:  # a password in it:
            env["DISTQUEUE_SERVER"] = kw["server_addr"]  # not where ps shows it
        else:
            argv += ["--server", kw["server_addr"]]
    if kw["token"]:
        env["DISTQUEUE_TOKEN"] = kw["token"]  # not on the command line, where ps shows it
    for module in kw["task_modules"]:
        argv += ["--tasks", module]
    if kw["allow_shell"]:
        argv.append("--allow-shell")
    if kw.get("shell_output_limit") is not None:
        argv += ["--shell-output-limit", str(kw["shell_output_limit"])]
    if kw["no_builtins"]:
        argv.append("--no-builtins")
    if kw.get("lease") is not None:
        argv += ["--lease", str(kw["lease"])]
    if kw.get("tls"):
        argv.append("--tls")
    for name in ("tls_ca", "tls_cert", "tls_key"):  # file names: nothing secret
        if kw.get(name):
            argv += ["--" + name.replace("_", "-"), str(kw[name])]
    for name in ("log_level", "log_format"):  # the workers log as the supervisor does
        if kw.get(name):
            argv += ["--" + name.replace("_", "-"), str(kw[name])]
    return argv, env


def _say(text: str) -> None:
    """A status line of the supervisor's (a JSON record in --log-format json)."""
    logs.announce(text, "distqueue.workers")


class Supervisor:
    def __init__(self, n: int, argv: list[str], env: dict[str, str], per_process: int = 1) -> None:
        #: worker processes, and the workers each runs (the last may run fewer)
        self.n = -(-n // per_process)
        self.sizes = [min(per_process, n - i * per_process) for i in range(self.n)]
        self.argv = argv
        self.env = env
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()
        #: stop signals passed on so far (a worker started meanwhile gets as many)
        self.signals = 0
        self.restarts = 0
        #: a worker exited with a usage error (2): the exit code of the whole lot
        self.failed = 0

    def stop(self) -> None:
        """First call: SIGTERM every worker (graceful); later calls: again (hurry)."""
        if self.stopping.is_set():
            _say("distqueue workers: stopping at once")
        else:
            _say("distqueue workers: stopping; running jobs get their --grace"
                 " (Ctrl-C again to stop at once)")  # fmt: skip
        self.stopping.set()
        self.signals += 1
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def run(self) -> None:
        await asyncio.gather(*(self._keep(slot) for slot in range(self.n)))

    async def _keep(self, slot: int) -> None:
        delay = RESTART_MIN
        while not self.stopping.is_set():
            started = time.monotonic()
            argv = [*self.argv, "--instances", str(self.sizes[slot])]
            proc = await asyncio.create_subprocess_exec(
                *argv, env=self.env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
            )
            self.procs[slot] = proc
            for _ in range(self.signals):  # a stop that came while it was being started
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            if self.stopping.is_set():
                return
            if code == 2:  # a usage error (bad --tasks, a missing extra): it would recur
                _say(f"distqueue workers: worker {slot} (pid {proc.pid}) exited with 2, a"
                     " usage error that a restart would repeat; stopping them all")  # fmt: skip
                self.failed = 2
                self.stop()
                return
            if time.monotonic() - started > HEALTHY_AFTER:
                delay = RESTART_MIN
            _say(f"distqueue workers: worker {slot} (pid {proc.pid}) exited with {code};"
                 f" restarting in {delay:g}s")  # fmt: skip
            self.restarts += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stopping.wait()
            delay = min(RESTART_MAX, delay * 2)


@click.command()
@click.argument("n", type=click.IntRange(1, 100_000))
@worker_options
@click.option(
    "--per-process",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Workers per process: 1,000 workers as 20 processes of 50, say.",
)
@log_options_passed_on
@friendly_errors
def workers(n: int, per_process: int, **kw: Any) -> None:
    """Start N worker processes and keep them running (one that dies is restarted).

    Ctrl-C or SIGTERM stops them all cleanly; a second one stops them at once.
    """
    if kw.get("lease") is not None and not is_store_url(kw["server_addr"]):
        raise click.UsageError("--lease is for direct mode (--store redis://...)")
    argv, env = worker_argv(kw)
    sup = Supervisor(n, argv, env, per_process)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sup.stop)
        _say(f"distqueue workers: starting {n} workers in {sup.n} processes")
        await sup.run()
        _say(f"distqueue workers: all {n} stopped ({sup.restarts} restarts)")

    _run(main())
    if sup.failed:
        sys.exit(sup.failed)
