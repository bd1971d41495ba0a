"""Shell jobs' output is captured up to the worker's --shell-output-limit (per
stream): a command that prints more is killed, its whole process group, and its
job fails for good with kind OutputTooLarge; output is never cut short silently,
and the worker's memory stays bounded whatever the command prints.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from distqueue.cli.supervisor import worker_argv
from distqueue.client import Client
from distqueue.jobs import JobState
from distqueue.worker.executors import run_shell
from tests.procs import wait_until

LIMIT = 64 * 1024


def too_large(stream: str, limit: int) -> str:
    return (
        f"shell output too large: {stream} passed the limit of {limit} bytes"
        " (worker --shell-output-limit)"
    )


def no_kill(kill: Any) -> None:
    pass


# -- the runner itself --------------------------------------------------------------------


async def test_output_up_to_the_limit_is_kept_whole() -> None:
    out = await run_shell(f"head -c {LIMIT} /dev/zero | tr '\\0' a; echo -n e >&2", 30,
                          no_kill, LIMIT)  # fmt: skip
    assert out.error is None
    assert out.result == {"stdout": "a" * LIMIT, "stderr": "e", "exit_code": 0}


async def test_one_byte_past_the_limit_fails() -> None:
    for stream, redirect in (("stdout", ""), ("stderr", " >&2")):
        out = await run_shell(f"head -c {LIMIT + 1} /dev/zero{redirect}; sleep 30", 60,
                              no_kill, LIMIT)  # fmt: skip
        assert out.error == {
            "kind": "OutputTooLarge", "message": too_large(stream, LIMIT), "traceback": "",
            "retryable": False,
        }  # fmt: skip


async def test_the_command_is_killed_with_its_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    # the shell's pid is its process group's id (a session of its own)
    out = await run_shell(f"echo $$ > {pid_file}; yes | head -c 2G", 60, no_kill, 1 << 20)
    assert out.error is not None and out.error["kind"] == "OutputTooLarge"
    assert time.monotonic() - started < 30  # it did not read 2 GB
    group = int(pid_file.read_text())

    def gone() -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, 10, "the command's process group to be gone")


async def test_a_timeout_still_reports_the_stderr_so_far() -> None:
    out = await run_shell("echo before >&2; sleep 30", 0.5, no_kill, LIMIT)
    assert out.error is not None and out.error["kind"] == "timeout"
    assert out.error["traceback"] == "before\n"


def test_workers_pass_the_limit_on() -> None:
    kw = {"queues": "default", "concurrency": 1, "pool": "thread", "grace": 1.0,
          "server_addr": None, "token": None, "task_modules": (), "allow_shell": True,
          "no_builtins": False, "shell_output_limit": 12345}  # fmt: skip
    argv, _ = worker_argv(kw)
    i = argv.index("--shell-output-limit")
    assert argv[i + 1] == "12345"


# -- a real server and worker --------------------------------------------------------------


def test_a_worker_fails_a_job_that_prints_too_much(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker_proc(server.address, "--allow-shell", "--shell-output-limit", str(LIMIT))
    with Client(server.address) as client:
        big = client.submit("shell", f"head -c {LIMIT + 1} /dev/zero", check_type=False)
        job = client.wait(big, timeout=60)
        assert job.state is JobState.DEAD and job.attempts == 1  # permanent: not retried
        assert job.error is not None and job.error.kind == "OutputTooLarge"
        assert job.error.message == too_large("stdout", LIMIT)
        fits = client.submit("shell", f"head -c {LIMIT} /dev/zero | tr '\\0' b")
        assert client.result(fits, wait=60) == {"stdout": "b" * LIMIT, "stderr": "",
                                                "exit_code": 0}  # fmt: skip


def test_memory_stays_bounded_on_endless_output(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    w = worker_proc(server.address, "--allow-shell", "--shell-output-limit", str(1 << 20))
    w.wait_connected()
    with Client(server.address) as client:
        job_id = client.submit("shell", "yes | head -c 2G", check_type=False)
        job = client.wait(job_id, timeout=60)
        assert job.state is JobState.DEAD and job.error is not None
        assert job.error.kind == "OutputTooLarge"
        assert job.error.message == too_large("stdout", 1 << 20)
        # the worker goes on serving
        ok = client.submit("shell", "echo fine")
        assert client.result(ok, wait=30)["stdout"] == "fine\n"
    status = Path(f"/proc/{w.popen.pid}/status").read_text()
    peak_kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    assert peak_kb * 1024 < 150 * 1024 * 1024


def test_a_failure_whose_output_passes_the_servers_limit_is_cut_and_reported(
    server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    """A failed shell job's output travels in its FAIL; one past the server's
    --max-payload was refused, and resent, forever. Now its text is cut, saying so."""
    server = server_proc("--max-payload", str(1 << 20))
    w = worker_proc(server.address, "--allow-shell")
    w.wait_connected()
    with Client(server.address) as client:
        job_id = client.submit(
            "shell",
            "head -c 800000 /dev/zero | tr '\\0' o; head -c 800000 /dev/zero >&2; exit 3",
            retries=0,
        )
        job = client.wait(job_id, timeout=60)
        assert (job.state, job.attempts, job.failures) == (JobState.DEAD, 1, 1)
        assert job.error is not None
        assert (job.error.kind, job.error.message) == ("exit", "exit code 3")
        assert job.error.traceback.startswith("[")
        assert "characters cut: the error passed the server's --max-payload of 1048576 bytes]" in (
            job.error.traceback
        )
