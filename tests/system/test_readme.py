"""Every command block of README.md, run as written against real servers and workers.

Each ```sh line is run by bash (the long-running ones, servers and workers, as
processes of their own, the rest as one script that stops at its first failure) and
each ```python block by python, in a temporary directory with the files they name.
Where a line cannot run here as written, the test says which part is replaced by
what and why, next to the replacement; ``test_every_block_of_the_readme_is_run``
fails when the README gains a block no test runs.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from distqueue.client import Client
from tests.procs import Proc, cli, wait_until
from tests.system.test_tls import make_ca, make_cert

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: the README's commands (`distqueue`, `python`) are the ones of this test's environment
PATH = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

#: the README's blocks, (the heading they are under, their language), in order: each is
#: run by the test named next to it
RUN = [
    ("# distqueue", "sh"),  # test_the_two_set_up_commands
    ("## By hand, in three terminals", "sh"),  # test_three_terminal_walkthrough
    ("### Running on several machines", "sh"),  # test_running_on_several_machines
    ("### Dashboard, metrics, health", "sh"),  # test_dashboard_metrics_health
    ("## Workers and tasks", "python"),  # test_workers_and_tasks (its tasks module)
    ("## Workers and tasks", "sh"),  # test_workers_and_tasks
    ("## Workflows and limits", "sh"),  # test_workflows_and_limits
    ("## Workflows and limits", "python"),  # test_workflows_and_limits
    ("## From Python", "python"),  # test_from_python
]


def _blocks() -> list[tuple[str, str, str]]:
    """Every fenced block of the README: (the heading it is under, its language, its text)."""
    blocks: list[tuple[str, str, str]] = []
    language: str | None
    body: list[str]
    heading, language, body = "", None, []  # language: of the block we are in, if any
    for line in README.read_text().splitlines(keepends=True):
        if language is None:
            if line.startswith("```"):
                language, body = line[3:].strip(), []
            elif line.startswith("#"):
                heading = line.strip()
        elif line.startswith("```"):
            blocks.append((heading, language, "".join(body)))
            language = None
        else:
            body.append(line)
    return blocks


def _block(heading: str, language: str = "sh") -> str:
    (text,) = [text for h, lang, text in _blocks() if (h, lang) == (heading, language)]
    return text


def _commands(heading: str) -> list[str]:
    """The command lines of the section's sh block, without their comments."""
    lines = []
    for line in _block(heading).splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _inline(prefix: str) -> str:
    """The README's `code` span that starts with ``prefix``."""
    m = re.search(rf"`({re.escape(prefix)}[^`]*)`", README.read_text())
    assert m is not None, prefix
    return m.group(1)


def _bash(lines: list[str], env: dict[str, str] | None = None) -> str:
    """Run ``lines`` as one bash script that stops at the first failure, each line after
    a ``>>> LINE`` marker; return what it printed (both streams, in order)."""
    script = ["set -euo pipefail"]
    for line in lines:
        script += [f"echo {shlex.quote('>>> ' + line)}", line]
    out = subprocess.run(["bash", "-c", "\n".join(script)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=60,
                         env={**os.environ, **PATH, **(env or {})})  # fmt: skip
    assert out.returncode == 0, out.stdout
    return out.stdout


def _printed(output: str, line: str) -> list[str]:
    """What ``line`` printed in a _bash script's output."""
    after = output.split(f">>> {line}\n", 1)[1].splitlines()
    return list(itertools.takewhile(lambda printed: not printed.startswith(">>> "), after))


@pytest.fixture
def start() -> Iterator[Callable[..., Proc]]:
    """Start a long-running README line in bash, as written; all stopped at teardown.
    bash execs the command, so the process is the command itself (the test's SIGTERM
    reaches it alone). ``before``: lines the same shell runs first."""
    started: list[Proc] = []

    def run(line: str, env: dict[str, str] | None = None, before: str = "") -> Proc:
        m = re.fullmatch(r"((?:\w+=\S*\s+)*)(.*)", line)  # VAR=value ... command
        assert m is not None
        assignments, command = m.groups()
        proc = Proc(["bash", "-c", f"{before}{assignments}exec {command}"],
                    env={**PATH, **(env or {})})  # fmt: skip
        started.append(proc)
        return proc

    yield run
    for proc in reversed(started):
        proc.stop()


def _tasks_module(directory: Path) -> None:
    """The README's tasks module, written where its first line says, in ``directory``."""
    code = _block("## Workers and tasks", "python")
    first = code.splitlines()[0]
    assert first == "# myapp/tasks.py"
    path = directory / first.removeprefix("# ")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(code)  # no myapp/__init__.py: the README shows none (a namespace package)


def test_every_block_of_the_readme_is_run() -> None:
    assert [(heading, language) for heading, language, _ in _blocks()] == RUN


def test_the_two_set_up_commands(tmp_path: Path) -> None:
    """The first block: command 1 makes a venv, installs and runs the demo (the demo
    is run here, in this test's environment: installing is .ci/smoke's part); command
    2 is what .ci/run runs, word for word."""
    commands = [line for line in _block("# distqueue").splitlines() if line and line[0] != "#"]
    assert commands == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && distqueue demo",
        "pip install -e '.[test]' && pytest",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv .venv" in ci and ". .venv/bin/activate" in ci
    assert commands[1] in ci.replace("pip install --quiet ", "pip install ")
    out = subprocess.run([sys.executable, "-m", "distqueue", "demo", "--data",
                          str(tmp_path / "data")], capture_output=True, text=True,
                         timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "all 1001 jobs finished" in out.stdout


def test_three_terminal_walkthrough(tmp_path: Path, monkeypatch, start) -> None:  # type: ignore[no-untyped-def]
    lines = _commands("## By hand, in three terminals")
    # terminal 1 and 2 as written, the server's ports moved by the environment (7700
    # and 7701 may be taken here): DISTQUEUE_SERVER_PORT=0, a free one, and
    # DISTQUEUE_HTTP=off; DISTQUEUE_SERVER points the worker and terminal 3 at it
    assert lines[0] == "distqueue server" and lines[1] == "distqueue worker"
    monkeypatch.chdir(tmp_path)
    server = start(lines[0], {"DISTQUEUE_SERVER_PORT": "0", "DISTQUEUE_HTTP": "off"})
    listening = r"^distqueue server listening on (127\.0\.0\.1:\d+) \(store: \./distqueue-data\)$"
    address = server.wait_for(listening)[1]  # the block's first comment: data in ./distqueue-data
    start(lines[1], {"DISTQUEUE_SERVER": address}).wait_for(f"connected to {address}$")
    # ID stands for any id: cancel the delayed job the block submitted just before
    pick = (
        "$(distqueue list --state scheduled -n 1 --json"
        " | python3 -c 'import json,sys; print(json.load(sys.stdin)[0][\"id\"])')"
    )
    script = [line.replace(" ID", f" {pick}") for line in lines[2:]]
    out = _bash(script, env={"DISTQUEUE_SERVER": address})
    # what the README says each prints
    assert _printed(out, "distqueue result $id --wait 10") == ["2"]
    assert _printed(out, f"distqueue cancel {pick}") == ["cancelled"]
    assert "jobs processed:" in out


def test_running_on_several_machines(tmp_path: Path, monkeypatch, start) -> None:  # type: ignore[no-untyped-def]
    export, server_line, worker_line = _commands("### Running on several machines")
    monkeypatch.chdir(tmp_path)
    # the files the lines name, here: a throwaway CA (ca.pem) and a certificate for
    # queue.example.com it signs (server.pem, server-key.pem), made as test_tls makes its own
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "server", "ca", "DNS:queue.example.com")
    # The server's terminal runs line 1 and line 2 as written (and prints the token,
    # for the worker's terminal). Not replaced but moved by the environment, as
    # docs/configuration.md says any option can be: its port (DISTQUEUE_SERVER_PORT=0, a
    # free one: 7700 may be taken here) and its admin port (DISTQUEUE_HTTP=off: 7701 too).
    ports = {"DISTQUEUE_SERVER_PORT": "0", "DISTQUEUE_HTTP": "off"}
    server = start(server_line, ports, before=f'{export}\necho "token $DISTQUEUE_TOKEN"\n')
    token = server.wait_for(r"^token (\S+)$").group(1)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)  # secrets.token_urlsafe(32)
    port = int(server.wait_for(r"distqueue server listening on 0\.0\.0\.0:(\d+) \(TLS\)")[1])
    # Line 3 with the token in place of its "..." (the README's placeholder for it).
    # queue.example.com:7700 is mapped to the server, 127.0.0.1 and its free port, as an
    # /etc/hosts line and a port forward would: by a sitecustomize.py on PYTHONPATH (SHIM,
    # below) that redirects the TCP connect alone, so the worker still sends SNI for and
    # checks the certificate of queue.example.com. (Not /etc/hosts itself: that is the
    # machine's; and the name cannot be resolved in the process instead, as uvloop,
    # which the workers run on when installed, resolves names in libuv, not Python.)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    mapped = {"PYTHONPATH": str(shim), "DQ_README_PORT": str(port)}
    worker_line = worker_line.replace("DISTQUEUE_TOKEN=...", f"DISTQUEUE_TOKEN={token}")
    worker = start(worker_line, mapped)
    worker_id = worker.wait_for(r"distqueue worker (\S+) serving")[1]
    worker.wait_for(rf"worker {worker_id} connected to queue\.example\.com:7700$")
    # Then a job runs on it: submitted over TLS to queue.example.com, with the token
    tls = ["--server", "tls://queue.example.com:7700", "--tls-ca", "ca.pem"]
    env = {**mapped, "DISTQUEUE_TOKEN": token}
    out = cli("submit", *tls, "wordcount", "hello world", env=env)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    out = cli("result", *tls, job_id, "--wait", "10", env=env)
    assert (out.returncode, out.stdout) == (0, "2\n"), out.stderr
    out = cli("status", *tls, job_id, "--json", env=env)
    assert json.loads(out.stdout)["worker"] == worker_id
    # And, as the README says, without a token the server refuses the non-loopback --host
    monkeypatch.delenv("DISTQUEUE_TOKEN", raising=False)
    refused = subprocess.run(["bash", "-c", server_line], capture_output=True, text=True,
                             timeout=30, env={**os.environ, **PATH, **ports})  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.startswith("distqueue: refusing to listen on 0.0.0.0 without a token")


#: the test's "/etc/hosts" for queue.example.com:7700 (see test_running_on_several_machines)
SHIM = """\
import asyncio
import os
import socket

_NAME = ("queue.example.com", 7700)
_TO = ("127.0.0.1", int(os.environ["DQ_README_PORT"]))
_open_connection, _create_connection = asyncio.open_connection, socket.create_connection


async def open_connection(host=None, port=None, **kwargs):
    host, port = _TO if (host, port) == _NAME else (host, port)
    return await _open_connection(host, port, **kwargs)


def create_connection(address, *args, **kwargs):
    return _create_connection(_TO if tuple(address) == _NAME else address, *args, **kwargs)


asyncio.open_connection, socket.create_connection = open_connection, create_connection
"""


def test_dashboard_metrics_health(tmp_path: Path, monkeypatch, start) -> None:  # type: ignore[no-untyped-def]
    install, server_line = _commands("### Dashboard, metrics, health")
    # line 1 is not run: this test's environment has the web extra already (pip install
    # -e '.[test]' installs it); what it installs is importable
    assert install == "pip install -e '.[web]'"
    for module in ("aiohttp", "jinja2", "prometheus_client"):
        assert importlib.util.find_spec(module) is not None, module
    # line 2 as written, its ports moved by the environment (7700 and 7701 may be taken
    # here): DISTQUEUE_SERVER_PORT=0 and DISTQUEUE_HTTP=127.0.0.1:0, free ones
    monkeypatch.chdir(tmp_path)
    server = start(server_line, {"DISTQUEUE_SERVER_PORT": "0", "DISTQUEUE_HTTP": "127.0.0.1:0"})
    listening = r"^distqueue server listening on 127\.0\.0\.1:\d+ \(store: \./distqueue-data\)$"
    server.wait_for(listening)
    admin = r"^distqueue admin on (http://127\.0\.0\.1:\d+/) \(dashboard, /metrics, /health\)$"
    url = server.wait_for(admin)[1]

    def get(path: str) -> tuple[int, str]:
        with urllib.request.urlopen(url + path, timeout=10) as response:
            return response.status, response.read().decode()

    status, page = get("")
    assert status == 200 and "<title>Overview · distqueue</title>" in page
    status, metrics = get("metrics")
    assert status == 200 and "\ndistqueue_tasks_submitted_total{" in metrics

    def ready() -> bool:  # (not ready until its first look at the store: a moment)
        try:
            return get("readyz") == (200, "ok\n")
        except urllib.error.HTTPError:
            return False

    wait_until(ready, 20, "/readyz")
    assert get("livez") == get("readyz") == (200, "ok\n")
    status, health = get("health")
    assert status == 200 and json.loads(health)["status"] == "ok"


def test_configuration_shell_completion() -> None:
    line = _inline('eval "$(_DISTQUEUE_COMPLETE=bash_source distqueue)"')
    complete = "COMP_WORDS=(distqueue sub); COMP_CWORD=1; _distqueue_completion distqueue"
    out = _bash([line, "complete -p distqueue", complete, 'echo "${COMPREPLY[@]}"'])
    assert _printed(out, "complete -p distqueue") == [
        "complete -o nosort -F _distqueue_completion distqueue"
    ]
    assert _printed(out, 'echo "${COMPREPLY[@]}"') == ["submit"]


def test_workers_and_tasks(tmp_path: Path, monkeypatch, server_proc, start) -> None:  # type: ignore[no-untyped-def]
    _tasks_module(tmp_path)
    lines = _commands("## Workers and tasks")
    workers, submits = lines[:4], lines[4:]
    assert [line.split(" ")[1] for line in workers] == ["worker", "worker", "worker", "workers"]
    # every line runs in the directory that holds myapp/, importable (PYTHONPATH), against
    # a real server on a free port (DISTQUEUE_SERVER: 7700 may be taken here); big.bin,
    # the file the gzip line sends, is made here
    server = server_proc()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("DISTQUEUE_SERVER", server.address)
    big = os.urandom(1 << 16) * 4
    (tmp_path / "big.bin").write_bytes(big)
    # the three worker lines, each a worker of its own, all kept running
    procs = [start(line) for line in workers[:3]]
    serving = ["myapp.tasks.resize", "myapp.tasks.resize", "shell"]  # among their types
    for proc, serves in zip(procs, serving, strict=True):
        assert serves in proc.wait_for(r"distqueue worker \S+ serving (.*)$")[1].split(", ")
        proc.wait_for(r"connected to")
    assert "shell" not in procs[0].output + procs[1].output  # only with --allow-shell
    # `distqueue workers 8 ...`: its eight workers connect; SIGTERM (Ctrl-C's clean stop)
    supervisor = start(workers[3])
    wait_until(lambda: supervisor.output.count(" connected to ") == 8, 30, "eight workers")
    with Client(server.address) as client:
        assert client.stats()["workers"]["connected"] == 11
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0, supervisor.output
    assert supervisor.lines[-1] == "distqueue workers: all 8 stopped (0 restarts)"
    # the submits, as one script; each prints what the README says it does
    out = _bash(submits)
    printed = [_printed(out, line) for line in submits]
    assert printed[3] == printed[4] == []  # `id=$(...)`, and `-o FILE`: silent
    with Client(server.address) as client:
        positional, keywords, shell = (int(p[0]) for p in printed[:3])
        assert client.result(positional, wait=10) == {"path": "a.jpg", "width": 100}
        assert client.result(keywords, wait=10) == {"path": "a.jpg", "width": 200}
        progress = client.status(positional).progress or {}
        assert (progress["percent"], progress["message"]) == (50.0, "halfway")
        wc = subprocess.run(["wc", "-l", "/etc/passwd"], capture_output=True, text=True)
        assert client.result(shell, wait=10) == {"stdout": wc.stdout, "stderr": "", "exit_code": 0}
        assert client.status(shell).timeout == 10
    assert gzip.decompress((tmp_path / "big.bin.gz").read_bytes()) == big
    # and the three workers stop cleanly
    for proc in procs:
        assert proc.stop() == 0, proc.output


def test_from_python(tmp_path: Path, monkeypatch, server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    _tasks_module(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    server = server_proc()
    worker_proc(server.address, "--tasks", "myapp.tasks").wait_connected()
    # the block as written but for its address: the server's free port for 7700 (which
    # may be taken here)
    code = _block("## From Python", "python")
    assert code.count('Client("127.0.0.1:7700")') == 1
    code = code.replace('Client("127.0.0.1:7700")', f'Client("{server.address}")')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    result, jobs = out.stdout.splitlines()
    assert result == "2"  # what the README says it prints
    counts = ast.literal_eval(jobs)  # the jobs by state: the four it submitted
    assert list(counts) == [
        "waiting", "scheduled", "queued", "running", "retrying", "succeeded", "dead", "cancelled"
    ]  # fmt: skip
    assert sum(counts.values()) == 4 and counts["succeeded"] >= 1
    # and the jobs it submitted ran as asked
    with Client(server.address) as client:
        wordcount, resize, echo_a, echo_b = sorted(client.list(), key=lambda job: job.id)
        assert (wordcount.type, wordcount.priority) == ("wordcount", 0)  # "high"
        resize = client.status(resize.id)
        assert (resize.type, resize.max_retries, resize.timeout) == ("myapp.tasks.resize", 5, 60)
        assert client.result(resize.id, wait=10) == {"path": "a.jpg", "width": 200}
        assert client.result(echo_a.id, wait=10) == "a"
        assert client.result(echo_b.id, wait=10) == "b"


def test_the_redis_cli_line(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    """The protocol is RESP: the README's redis-cli line, on the server's free port."""
    line = _inline("redis-cli -p 7700 ")
    if shutil.which("redis-cli") is None:
        message = "redis-cli is missing (Debian's redis-tools)"
        if os.environ.get("DISTQUEUE_REQUIRE_REDIS") == "1":
            pytest.fail(message + " (DISTQUEUE_REQUIRE_REDIS=1)")
        pytest.skip(message)
    server = server_proc()
    worker_proc(server.address).wait_connected()
    # 7700 replaced by the server's free port (7700 may be taken here)
    line = line.replace("-p 7700 ", f"-p {server.port} ")
    (job_id,) = _printed(_bash([line]), line)
    with Client(server.address) as client:
        assert client.result(int(job_id), wait=10) == 2


def test_workflows_and_limits(tmp_path: Path, monkeypatch, server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    _tasks_module(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    server = server_proc()
    worker_proc(server.address, "--tasks", "myapp.tasks").wait_connected()
    lines = _commands("## Workflows and limits")
    out = _bash(lines, env={"DISTQUEUE_SERVER": server.address})
    [capitalized] = _printed(out, lines[2])
    with Client(server.address) as client:
        assert client.result(int(capitalized), wait=10) == "SECOND"  # as its comment says
        assert client.limits() == [
            {"scope": "queue", "name": "default", "max_depth": 100000},
            {"scope": "type", "name": "myapp.tasks.resize", "concurrency": 5, "rate": "100/m",
             "burst": 1},
        ]  # fmt: skip
        assert client.paused() == []
        [nightly] = client.schedules()
        assert (nightly["cron"], nightly["timezone"]) == ("0 3 * * *", "Europe/Paris")
        assert nightly["job"]["args"] == ["all.jpg"]
        assert _printed(out, lines[-1])[0].startswith("nightly\t0 3 * * * Europe/Paris\t")
    # the Python block as written but for its address
    code = _block("## Workflows and limits", "python")
    code = code.replace('Client("127.0.0.1:7700"', f'Client("{server.address}"')
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout == "A\n"
    with Client(server.address) as client:
        limits = {(x["scope"], x["name"]): x for x in client.limits()}
        assert limits[("type", "wordcount")] == {"scope": "type", "name": "wordcount",
                                                 "concurrency": 2}  # fmt: skip
        done = client.list(type="echo", limit=10)
        assert [client.result(j.id, wait=10) for j in done if j.args == ["done"]] == ["done"]
