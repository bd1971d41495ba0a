"""Signals as a person sends them: Ctrl-C at a terminal reaches the whole foreground
process group, not just the process that was started.

Every process here is started in a session (so a process group) of its own, and
Ctrl-C is ``os.killpg(pgid, SIGINT)``, exactly what the terminal does. No test
asserts on elapsed time: waits are bounded and generous, outcomes are exact.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import subprocess
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from distqueue.client import Client
from distqueue.jobs import JobState
from tests.procs import CLI, LISTENING, Proc, wait_until

TASKS = ["--tasks", "tests.sample_tasks"]
T = "tests.sample_tasks."


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def worker_pids(client: Client) -> list[int]:
    """The pids of the connected workers (their names are HOST:PID)."""
    return [int(w["name"].rsplit(":", 1)[1]) for w in client.stats()["workers"]["list"]]


@contextlib.contextmanager
def killed_at_exit(pids: list[int]) -> Iterator[list[int]]:
    """Processes a failing test could leave behind: SIGKILLed at the end."""
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- the server ---------------------------------------------------------------------------


class TerminalServer:
    """``distqueue server --console`` with a pseudo-terminal on stdin that nobody types
    into, in a session of its own; output collected in the background."""

    def __init__(self, data: Path) -> None:
        self.master, self.slave = pty.openpty()
        self.modes = termios.tcgetattr(self.slave)
        self.popen = subprocess.Popen(
            [*CLI, "server", "--port", "0", "--data", str(data), "--console"],
            stdin=self.slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float) -> int:
        """Wait for it to exit by itself (and for the last of its output)."""
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self._reader.join(5)
        assert self.popen.stdout is not None
        self.popen.stdout.close()
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_server_with_console_on_a_terminal_stops_at_once(tmp_path: Path, sig: int) -> None:
    # Given a server whose console is a terminal nobody types into
    server = TerminalServer(tmp_path / "d")
    try:
        wait_until(lambda: any(LISTENING.search(line) for line in server.lines), 30, "listen")
        wait_until(lambda: any("type 'stats'" in line for line in server.lines), 30, "console")
        # When a person presses Ctrl-C (or the process group gets SIGTERM)
        os.killpg(server.popen.pid, sig)
        # Then it stops cleanly, without waiting for a line
        assert server.wait(15) == 0, server.output
        assert f"distqueue server stopping: signal {signal.Signals(sig).name}" in server.output
        # and the terminal is left as it was: same modes, still blocking
        assert termios.tcgetattr(server.slave) == server.modes
        assert not fcntl.fcntl(server.slave, fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        server.close()


def test_server_console_still_reads_a_terminal(tmp_path: Path) -> None:
    # Given a server with a console on a terminal
    server = TerminalServer(tmp_path / "d")
    try:
        wait_until(lambda: any("type 'stats'" in line for line in server.lines), 30, "console")
        # When a person types stats, then quit
        os.write(server.master, b"stats\n")
        wait_until(lambda: any("jobs processed: 0" in line for line in server.lines), 30, "stats")
        os.write(server.master, b"quit\n")
        # Then it answers and stops cleanly
        assert server.wait(15) == 0, server.output
        assert "distqueue server stopping: quit on the console" in server.output
    finally:
        server.close()


def test_server_console_from_a_file(tmp_path: Path) -> None:
    # Given a server whose stdin is a file of commands (no terminal, no pipe)
    commands = tmp_path / "commands"
    commands.write_text("stats\nquit\n")
    with commands.open("rb") as stdin:
        out = subprocess.run(
            [*CLI, "server", "--port", "0", "--data", str(tmp_path / "d"), "--console"],
            stdin=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    # Then it reads them all and stops
    assert out.returncode == 0, out.stderr
    assert "jobs processed: 0" in out.stderr
    assert "stopping: quit on the console" in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_server_stops_once_on_a_group_signal(server_proc, sig: int) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    server.killpg(sig)
    assert server.wait(15) == 0
    assert server.output.count("distqueue server stopping:") == 1


# -- distqueue worker ----------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_worker_ctrl_c_lets_the_running_job_finish(server_proc, worker_proc, pool: str) -> None:  # type: ignore[no-untyped-def]
    # Given a worker running a job (in a pool child with --pool process)
    server = server_proc()
    w = worker_proc(server.address, *TASKS, "--pool", pool, "-c", "1", "--grace", "30")
    w.wait_connected()
    with Client(server.address) as client:
        job_id = client.submit("progressive", 10, 0.3)  # 3 s, reporting progress
        wait_until(lambda: client.status(job_id).progress, 30, "the job to be under way")
        # When a person presses Ctrl-C once
        w.killpg(signal.SIGINT)
        # Then the job finishes and succeeds, on its first attempt, and the worker exits 0
        assert w.wait(30) == 0, w.output
        job = client.status(job_id)
        assert job.state is JobState.SUCCEEDED, (job, w.output)
        assert (job.attempts, job.failures, job.lost) == (1, 0, 0)
        assert job.result == "done"


def test_worker_second_ctrl_c_stops_at_once(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    w = worker_proc(server.address, *TASKS, "--grace", "60")
    w.wait_connected()
    with Client(server.address) as client:
        job_id = client.submit(T + "sleep_async", 60)
        wait_until(lambda: client.status(job_id).state is JobState.RUNNING, 30, "it to run")
        w.killpg(signal.SIGINT)
        w.wait_for(r"stopping: 1 jobs running")
        w.killpg(signal.SIGINT)
        assert w.wait(30) == 0, w.output
        job = client.status(job_id)
        assert job.state is JobState.QUEUED, job  # given back
        assert (job.attempts, job.failures, job.lost) == (1, 0, 0)


def test_pool_children_do_not_outlive_a_killed_worker(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    w = worker_proc(server.address, *TASKS, "--pool", "process", "-c", "1")
    w.wait_connected()
    with Client(server.address) as client:
        child = client.result(client.submit(T + "whoami"), wait=30)  # the one pool child
        with killed_at_exit([child]):
            job_id = client.submit(T + "hang")
            wait_until(lambda: client.status(job_id).state is JobState.RUNNING, 30, "it to run")
            w.kill()
            wait_until(lambda: gone(child), 30, "the pool child to go with its worker")


# -- distqueue workers N --------------------------------------------------------------------


def start_workers(address: str, *extra: str, n: int = 2) -> Proc:
    return Proc([*CLI, "workers", str(n), "--server", address, *TASKS, *extra])


def test_workers_ctrl_c_lets_running_jobs_finish_once(server_proc) -> None:  # type: ignore[no-untyped-def]
    # Given a supervisor with two workers, running four jobs of about 2 s
    server = server_proc()
    sup = start_workers(server.address, "--grace", "20")
    try:
        with Client(server.address) as client:
            wait_until(lambda: client.stats()["workers"]["connected"] == 2, 60, "2 workers")
            ids = client.submit_many([{"type": T + "sleep_sync", "args": [2]} for _ in range(4)])
            wait_until(
                lambda: all(client.status(i).state is JobState.RUNNING for i in ids), 30, "4 run"
            )
            # When a person presses Ctrl-C once (SIGINT to the whole group)
            sup.killpg(signal.SIGINT)
            # Then everything stops cleanly, and every job ran exactly once, to success
            assert sup.wait(60) == 0, sup.output
            jobs = [client.status(i) for i in ids]
            for job in jobs:
                assert job.state is JobState.SUCCEEDED, (job, sup.output)
                assert (job.attempts, job.failures, job.lost) == (1, 0, 0), job
            assert client.stats()["workers"]["connected"] == 0
    finally:
        sup.stop()


def test_workers_sigterm_lets_running_jobs_finish_once(server_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    sup = start_workers(server.address, "--grace", "20")
    try:
        with Client(server.address) as client:
            wait_until(lambda: client.stats()["workers"]["connected"] == 2, 60, "2 workers")
            ids = client.submit_many([{"type": T + "sleep_sync", "args": [2]} for _ in range(4)])
            wait_until(
                lambda: all(client.status(i).state is JobState.RUNNING for i in ids), 30, "4 run"
            )
            sup.signal(signal.SIGTERM)  # to the supervisor alone, as a service manager does
            assert sup.wait(60) == 0, sup.output
            for job in (client.status(i) for i in ids):
                assert job.state is JobState.SUCCEEDED, (job, sup.output)
                assert (job.attempts, job.failures, job.lost) == (1, 0, 0), job
    finally:
        sup.stop()


def test_workers_second_ctrl_c_stops_at_once(server_proc) -> None:  # type: ignore[no-untyped-def]
    # Given a supervisor whose workers run jobs far longer than anyone wants to wait
    server = server_proc()
    sup = start_workers(server.address, "--grace", "60")
    try:
        with Client(server.address) as client:
            wait_until(lambda: client.stats()["workers"]["connected"] == 2, 60, "2 workers")
            ids = client.submit_many([{"type": T + "sleep_async", "args": [60]} for _ in range(4)])
            wait_until(
                lambda: all(client.status(i).state is JobState.RUNNING for i in ids), 30, "4 run"
            )
            # When a person presses Ctrl-C, and again once the stop is under way
            sup.killpg(signal.SIGINT)
            sup.wait_for(r"stopping: \d+ jobs running")
            sup.killpg(signal.SIGINT)
            # Then it stops now: the running jobs are given back, not lost, not failed
            assert sup.wait(30) == 0, sup.output
            for job in (client.status(i) for i in ids):
                assert job.state is JobState.QUEUED, (job, sup.output)
                assert (job.attempts, job.failures, job.lost) == (1, 0, 0), job
    finally:
        sup.stop()


def test_workers_do_not_outlive_a_killed_supervisor(server_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    sup = start_workers(server.address)
    with Client(server.address) as client:
        wait_until(lambda: client.stats()["workers"]["connected"] == 2, 60, "2 workers")
        with killed_at_exit(worker_pids(client)) as pids:
            sup.kill()  # kill -9: it cannot pass anything on
            wait_until(lambda: all(gone(p) for p in pids), 30, "the workers to stop")
            wait_until(lambda: client.stats()["workers"]["connected"] == 0, 30, "none left")
