"""Logs (issue #11): --log-level and --log-format on the long-running commands, the
worker's per-job events, and the JSON lines' fields; real server and worker processes."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from distqueue.cli.supervisor import worker_argv
from distqueue.client import Client
from distqueue.jobs import JobState
from distqueue.logs import JSONFormatter, TextFormatter
from tests.procs import CLI, Proc, wait_until

TASKS = """
import distqueue


@distqueue.task
def boom(x):
    raise ValueError(f"bad value {x}\\nsecond line of the message")


@distqueue.task
def fine(x):
    return x
"""
BOOM, FINE = "logtasks.boom", "logtasks.fine"
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def tasks_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH for worker processes that serve the ``logtasks`` module."""
    (tmp_path / "logtasks.py").write_text(TASKS)
    path = [str(tmp_path), os.getcwd(), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    """Start Procs; all stopped at teardown."""
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str]) -> Proc:
        proc = Proc([*CLI, *args], env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def json_lines(proc: Proc) -> list[dict[str, Any]]:
    """Every line of its output, each of which must be one JSON object."""
    parsed = []
    for line in proc.lines:
        value = orjson.loads(line)  # raises: a line that is not JSON
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


def stopped(proc: Proc) -> Proc:
    """SIGTERM, a clean exit, all its output read."""
    assert proc.stop() == 0, proc.output
    return proc


def test_a_failing_task_is_one_json_warning(server_proc, procs, tasks_env) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--log-format", "json")
    worker = procs("worker", "--server", server.address, "--tasks", "logtasks",
                   "--log-format", "json", env=tasks_env)  # fmt: skip
    worker.wait_for("connected to")
    with Client(server.address) as client:
        job_id = client.submit(BOOM, 3, retries=0)
        assert client.wait(job_id, timeout=60).state is JobState.DEAD
    worker.wait_for(rf'"job":{job_id},')
    lines = json_lines(stopped(worker))
    about = [line for line in lines if line.get("job") == job_id]
    assert len(about) == 1, lines
    (line,) = about
    assert line["level"] == "warning"
    assert line["logger"] == "distqueue.worker"
    assert TS.fullmatch(line["ts"])
    assert line["type"] == BOOM
    assert line["attempt"] == 1
    assert line["error"] == "ValueError: bad value 3"
    assert line["state"] == "dead"
    assert isinstance(line["duration"], float) and line["duration"] >= 0
    assert (
        line["msg"]
        == f"job {job_id} ({BOOM}) failed (attempt 1), now dead: ValueError: bad value 3"
    )
    assert "exc" not in line  # the traceback is the job's (distqueue status), not the log's
    # no DEBUG at the default level; the status lines are JSON records too
    assert [x for x in lines if x["level"] == "debug"] == []
    assert len([x for x in lines if " serving " in x["msg"]]) == 1
    # the server's lines (listening, stopping, its own events) parse as well
    json_lines(stopped(server))


def test_debug_logs_started_and_succeeded_with_a_duration(server_proc, procs, tasks_env) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker = procs("worker", "--server", server.address, "--tasks", "logtasks",
                   "--log-format", "json", "--log-level", "debug", env=tasks_env)  # fmt: skip
    worker.wait_for("connected to")
    with Client(server.address) as client:
        job_id = client.submit(FINE, 7)
        assert client.result(job_id, wait=60) == 7
    worker.wait_for(rf"job {job_id} \({re.escape(FINE)}\) succeeded")
    lines = json_lines(stopped(worker))
    about = [line for line in lines if line.get("job") == job_id]
    assert [line["msg"].split(")", 1)[1].split()[0] for line in about] == [
        "started,",
        "succeeded",
    ], about
    started, succeeded = about
    assert started["level"] == succeeded["level"] == "debug"
    assert started["type"] == succeeded["type"] == FINE
    assert started["attempt"] == succeeded["attempt"] == 1
    assert "duration" not in started
    assert isinstance(succeeded["duration"], float) and succeeded["duration"] >= 0
    assert "error" not in succeeded and "state" not in succeeded


def test_text_format_prints_one_warning_for_a_failing_task(server_proc, procs, tasks_env) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker = procs("worker", "--server", server.address, "--tasks", "logtasks", env=tasks_env)
    worker.wait_for("connected to")
    with Client(server.address) as client:
        job_id = client.submit(BOOM, 5, retries=0)
        assert client.wait(job_id, timeout=60).state is JobState.DEAD
    worker.wait_for(rf"job {job_id} ")
    output = stopped(worker).output
    lines = output.splitlines()
    warnings = [line for line in lines if " WARNING " in line]
    assert len(warnings) == 1, lines
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} distqueue\.worker WARNING "
        rf"job {job_id} \({re.escape(BOOM)}\) failed \(attempt 1\), now dead:"
        r" ValueError: bad value 5",
        warnings[0],
    ), warnings[0]
    assert [line for line in lines if f"job {job_id} " in line] == warnings
    assert "second line" not in output
    # INFO lines read as before: no level name
    (connected,) = [line for line in lines if "connected to" in line]
    assert " INFO " not in connected


def test_workers_pass_the_log_options_on(server_proc, procs, tasks_env) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    sup = procs("workers", "2", "--server", server.address, "--tasks", "logtasks",
                "--log-format", "json", env=tasks_env)  # fmt: skip
    with Client(server.address) as client:
        wait_until(lambda: client.stats()["workers"]["connected"] == 2, 60, "2 workers")
        job_id = client.submit(BOOM, 9, retries=0)
        assert client.wait(job_id, timeout=60).state is JobState.DEAD
    sup.wait_for(rf'"job":{job_id},')
    lines = json_lines(stopped(sup))
    connected = [x for x in lines if x["logger"] == "distqueue.worker" and "worker" in x]
    assert len(connected) == 2, lines
    assert len({x["worker"] for x in connected}) == 2
    failures = [x for x in lines if x.get("job") == job_id]
    assert len(failures) == 1, lines
    assert failures[0]["error"] == "ValueError: bad value 9"
    assert failures[0]["state"] == "dead"
    assert {x["logger"] for x in lines if x["msg"].startswith("distqueue workers:")} == {
        "distqueue.workers"
    }


def test_worker_argv_carries_the_log_options() -> None:
    kw = {"queues": "default", "concurrency": 1, "pool": "thread", "grace": 1.0,
          "server_addr": None, "token": None, "task_modules": (), "allow_shell": False,
          "no_builtins": False, "log_level": "debug", "log_format": "json"}  # fmt: skip
    argv, _ = worker_argv(kw)
    assert argv[argv.index("--log-level") + 1] == "debug"
    assert argv[argv.index("--log-format") + 1] == "json"


# -- the formatters, in process -----------------------------------------------------------


def _record(level: int, msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    exc_info = None
    if extra.pop("with_exc", False):
        try:
            raise RuntimeError("kaput")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("distqueue.worker", level, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_only_the_whitelisted_fields() -> None:
    record = _record(logging.ERROR, "job %s\nbroke", 4, job=4, type="t", secret="x",
                     retry_in=1.5, with_exc=True)  # fmt: skip
    text = JSONFormatter().format(record)
    assert "\n" not in text
    line = orjson.loads(text)
    assert set(line) == {"ts", "level", "logger", "msg", "exc", "job", "type", "retry_in"}
    assert line["level"] == "error" and line["msg"] == "job 4\nbroke"
    assert line["exc"].startswith("Traceback") and "RuntimeError: kaput" in line["exc"]
    assert (line["job"], line["type"], line["retry_in"]) == (4, "t", 1.5)
    assert TS.fullmatch(line["ts"])


def test_text_lines_name_the_level_from_warning_up() -> None:
    formatter = TextFormatter()
    assert formatter.format(_record(logging.INFO, "hello")).endswith(" distqueue.worker hello")
    assert formatter.format(_record(logging.WARNING, "uh")).endswith(" distqueue.worker WARNING uh")


def test_setup_logging_replaces_its_handler(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from distqueue import logs

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        logs.setup_logging("debug", "json")
        logs.setup_logging("warning", "text")
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1 and isinstance(added[0].formatter, TextFormatter)
        assert root.level == logging.WARNING
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        logs.announce("status 100%")
        assert stream.getvalue() == "status 100%\n"
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
        logs._handler, logs._format = None, "text"
        logging.captureWarnings(False)
