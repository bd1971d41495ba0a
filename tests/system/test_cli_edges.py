"""The CLI's edges (issue #12): missing extras, one's own task types, typo'd queues,
--tasks forms, exit codes, file results, progress on a terminal, bulk submits.
Real server and worker processes; each outcome asserted exactly."""

from __future__ import annotations

import base64
import gzip
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distqueue import codec
from distqueue.client import Client
from distqueue.errors import UnknownType
from distqueue.names import BUILTIN_TYPES
from distqueue.worker.registry import REGISTRY
from tests.procs import CLI, Proc, ServerProc, cli, wait_until

README = Path(__file__).resolve().parents[2] / "README.md"
KNOWN = ", ".join(sorted(BUILTIN_TYPES))
MISSING_REDIS = "distqueue: the Redis store needs the redis extra: pip install 'distqueue[redis]'\n"


def hiding(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment in which importing ``modules`` fails, as if not installed."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    for name in modules:
        (shadow / f"{name}.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n"
        )
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


def on_tty(args: list[str], *, tty: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run the CLI with its stderr (``tty="stderr"``) or stdout on a terminal (a pty);
    the other stream piped. Returns (exit code, what the terminal got, the pipe's)."""
    master, slave = pty.openpty()
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, tty: slave}
    proc = subprocess.Popen([*CLI, *args], stdin=subprocess.DEVNULL, **streams)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            seen += data
        elif proc.poll() is not None:
            break
    os.close(master)
    out, err = proc.communicate(timeout=10)
    rest = err if tty == "stdout" else out
    return proc.returncode, seen.decode(errors="replace"), rest.decode()


def job_state(server: ServerProc, job_id: str) -> str:
    out = cli("status", job_id, "--json", "--server", server.address)
    return str(codec.loads(out.stdout)["state"])


# -- 1. a missing extra is one line --------------------------------------------------


def test_a_missing_redis_extra_is_one_line_for_server_worker_and_client(tmp_path: Path) -> None:
    env = hiding(tmp_path, "redis")
    store = "redis://127.0.0.1:1/0"
    for args in (
        ["server", "--store", store, "--port", "0", "--no-console", "--http", "off"],
        ["worker", "--store", store],
        ["submit", "echo", "hi", "--server", store],
        ["status", "1", "--server", store],
    ):
        out = cli(*args, env=env, timeout=30)
        assert (out.returncode, out.stdout, out.stderr) == (2, "", MISSING_REDIS), args


def test_without_uvloop_server_and_worker_run_on_asyncio(tmp_path: Path) -> None:
    env = hiding(tmp_path, "uvloop")
    server = ServerProc(tmp_path / "data", env=env)
    worker = Proc([*CLI, "worker", "--server", server.address], env=env)
    try:
        worker.wait_for("connected to")
        job = cli("submit", "echo", "no uvloop", "--server", server.address, env=env)
        assert (job.returncode, job.stderr) == (0, "")
        out = cli("result", job.stdout.strip(), "--wait", "20", "--server", server.address, env=env)
        assert (out.returncode, out.stdout, out.stderr) == (0, "no uvloop\n", "")
    finally:
        assert worker.stop() == 0
        assert server.stop() == 0
    assert "Traceback" not in server.output + worker.output
    assert "No module named" not in server.output + worker.output


# -- 2. one's own task types, typos of known ones --------------------------------------


def test_a_typo_is_refused_with_a_suggestion_and_the_flags_that_override_it(server_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    out = cli("submit", "wordcont", "x", "--server", server.address)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        "distqueue: unknown job type 'wordcont': no worker serves it; did you mean"
        f" 'wordcount'? (known types: {KNOWN}); to queue it anyway: distqueue submit"
        " --no-check-type, or check_type=False in Python [NOTYPE]\n"
    )
    out = cli("submit", "wordcont", "x", "--no-check-type", "--server", server.address)
    assert (out.returncode, out.stderr) == (0, "")
    assert re.fullmatch(r"\d+\n", out.stdout)


def test_ones_own_task_type_is_queued_before_its_worker_starts(  # type: ignore[no-untyped-def]
    server_proc, worker_proc, tmp_path: Path
) -> None:
    server = server_proc()
    out = cli("submit", "myapp.tasks.resize", "--args", '["a.jpg"]', "--server", server.address)
    assert out.returncode == 0
    assert out.stderr == (
        "distqueue: warning: no worker serves 'myapp.tasks.resize' yet: it waits until one does\n"
    )
    job_id = out.stdout.strip()
    assert re.fullmatch(r"\d+", job_id)
    # a bare name far from every known type: queued too, with the same warning
    out = cli("submit", "thumbnails", "x", "--server", server.address)
    assert out.returncode == 0
    assert out.stderr == (
        "distqueue: warning: no worker serves 'thumbnails' yet: it waits until one does\n"
    )
    # its worker starts (--tasks as a file path): the job runs
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "tasks.py").write_text(
        "import distqueue\n\n\n@distqueue.task\ndef resize(path, width=100):\n"
        "    return {'path': path, 'width': width}\n"
    )
    worker = worker_proc(server.address, "--tasks", str(tmp_path / "myapp" / "tasks.py"))
    assert "myapp.tasks.resize" in worker.wait_for(r"serving (.*)$").group(1).split(", ")
    out = cli("result", job_id, "--wait", "20", "--server", server.address)
    assert (out.returncode, out.stdout) == (0, '{"path":"a.jpg","width":100}\n')
    # served now: no warning
    out = cli("submit", "myapp.tasks.resize", "--args", '["b"]', "--server", server.address)
    assert (out.returncode, out.stderr) == (0, "")


def test_the_python_client_submits_its_own_task_functions_unchecked(server_proc) -> None:  # type: ignore[no-untyped-def]
    import distqueue

    @distqueue.task(name="wordcont")  # a name close to a built-in: refused as a string
    def wordcont(text: str) -> int:
        return len(text)

    server = server_proc()
    try:
        with Client(server.address) as client:
            with pytest.raises(UnknownType, match=r"did you mean 'wordcount'\?"):
                client.submit("wordcont", "x")
            job_id = client.submit(wordcont, "x")  # a function of this process: no typo
            assert client.status(job_id).state.value == "queued"
    finally:
        REGISTRY.pop("wordcont")


# -- 3. a typo'd queue -----------------------------------------------------------------


def test_a_queue_no_worker_serves_is_accepted_with_a_warning(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker = worker_proc(server.address, "--queues", "default,emails")
    worker.wait_connected()
    out = cli("submit", "echo", "hi", "--queue", "defualt", "--server", server.address)
    assert out.returncode == 0 and re.fullmatch(r"\d+\n", out.stdout)
    assert out.stderr == (
        "distqueue: warning: no worker serves queue 'defualt' (served: default, emails):"
        " the job waits until one does\n"
    )
    assert job_state(server, out.stdout.strip()) == "queued"
    out = cli("submit", "echo", "hi", "--queue", "emails", "--server", server.address)
    assert (out.returncode, out.stderr) == (0, "")
    assert worker.stop() == 0
    # a worker of every queue: no queue is unserved
    worker_proc(server.address, "--queues", "*").wait_connected()
    out = cli("submit", "echo", "hi", "--queue", "anything", "--server", server.address)
    assert (out.returncode, out.stderr) == (0, "")


# -- 4. --tasks: a module, a package, a file; one line when it serves nothing -------------


def test_tasks_takes_a_package_a_module_or_a_file_and_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "tasks.py").write_text(
        "import distqueue\n\n\n@distqueue.task\ndef order(n):\n    return n\n"
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "__init__.py").write_text("")
    (tmp_path / "empty" / "util.py").write_text("X = 1\n")
    (tmp_path / "broken.py").write_text("import distqueue\n\nfoo = bar\n")
    paths = [str(tmp_path), os.environ.get("PYTHONPATH")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    nowhere = ["--server", "127.0.0.1:1", "--no-builtins"]
    for spec in ("shop", "shop.tasks", str(tmp_path / "shop" / "tasks.py"), str(tmp_path / "shop")):
        worker = Proc([*CLI, "worker", "--tasks", spec, *nowhere], env=env)
        try:
            assert worker.wait_for(r"serving (.*)$").group(1) == "shop.tasks.order", spec
        finally:
            worker.kill()
    broken = str(tmp_path / "broken.py")
    where = os.path.relpath(broken)
    for spec, line in [
        ("empty", "empty registers no @distqueue.task: point --tasks at the module that"
                  " defines them, e.g. empty.tasks"),
        ("empty.util", "empty.util registers no @distqueue.task: point --tasks at the module"
                       " that defines them, e.g. myapp.tasks"),
        ("nosuch_module", "--tasks nosuch_module does not import: ModuleNotFoundError:"
                          " No module named 'nosuch_module'"),
        (broken, f"--tasks {broken} (as broken) does not import: NameError: name 'bar' is"
                 f" not defined (at {where}:3)"),
        (str(tmp_path / "missing.py"), f"--tasks {tmp_path / 'missing.py'}: no such file"),
    ]:  # fmt: skip
        out = cli("worker", "--tasks", spec, *nowhere, env=env, timeout=30)
        assert (out.returncode, out.stdout, out.stderr) == (2, "", f"distqueue: {line}\n"), spec


# -- 5. exit codes of wait, result, status ---------------------------------------------


def test_exit_codes_of_wait_result_and_status(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker_proc(server.address).wait_connected()
    at = ["--server", server.address]
    good = cli("submit", "echo", "fine", *at).stdout.strip()
    bad = cli("submit", "wordcount", "--args", '{"not": "text"}', *at).stdout.strip()
    parked = cli("submit", "echo", "x", "--queue", "parked", *at).stdout.strip()
    # 0: it succeeded
    out = cli("wait", good, "--timeout", "20", *at)
    assert (out.returncode, out.stdout.splitlines()[1]) == (0, "  state:    succeeded")
    assert (cli("result", good, *at).returncode, cli("status", good, *at).returncode) == (0, 0)
    # 1: it ended dead (or cancelled), or the job does not exist
    out = cli("wait", bad, "--timeout", "20", *at)
    assert (out.returncode, out.stdout.splitlines()[1], out.stderr) == (1, "  state:    dead", "")
    out = cli("result", bad, *at)
    assert (out.returncode, out.stdout, out.stderr) == (1, "", (
        f"distqueue: job {bad} is dead: InvalidJob: expected text or a list of strings,"
        " not dict [FAILED]\n"
    ))  # fmt: skip
    out = cli("status", "99999", *at)
    assert (out.returncode, out.stderr) == (1, "distqueue: no job 99999 [NOTFOUND]\n")
    # 3: not finished
    out = cli("wait", parked, "--timeout", "0.3", *at)
    assert (out.returncode, out.stdout) == (3, "")
    assert out.stderr == f"distqueue: job {parked} is still queued after 0.3s [TIMEOUT]\n"
    out = cli("result", parked, *at)
    assert (out.returncode, out.stderr) == (
        3, f"distqueue: job {parked} is queued, not finished [PENDING]\n"
    )  # fmt: skip
    out = cli("result", parked, "--wait", "0.3", *at)
    assert (out.returncode, out.stderr) == (
        3, f"distqueue: job {parked} is still queued after 0.3s [TIMEOUT]\n"
    )  # fmt: skip
    # 2: a usage mistake
    assert cli("wait", "not-a-number", *at).returncode == 2
    assert cli("submit", "echo", "x", "--count", "2", "--unique-key", "k", *at).returncode == 2


# -- 6, 7. file results: --json is JSON; the README's file-job lines run as written -------


def test_file_results_as_json_and_the_readme_file_job_lines(  # type: ignore[no-untyped-def]
    server_proc, worker_proc, tmp_path: Path
) -> None:
    server = server_proc()
    worker_proc(server.address).wait_connected()
    data = b"hello file job\n" * 1000
    (tmp_path / "big.bin").write_bytes(data)
    text = README.read_text()
    start = text.index("id=$(distqueue submit gzip --payload big.bin)")
    lines = [re.sub(r"\s+#.*$", "", line) for line in text[start:].splitlines()[:2]]
    assert lines[1].startswith("distqueue result $id")
    script = [
        "set -euo pipefail",
        f"export DISTQUEUE_SERVER={server.address}",
        f'distqueue() {{ {sys.executable} -m distqueue "$@"; }}',
        *lines,
        "echo $id",
    ]
    out = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)  # fmt: skip
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert gzip.decompress((tmp_path / "big.bin.gz").read_bytes()) == data
    job_id = out.stdout.strip()
    out = cli("result", job_id, "--json", "--server", server.address)
    assert out.returncode == 0
    value = codec.loads(out.stdout)
    assert set(value) == {"kind", "size", "base64"} and value["kind"] == "bytes"
    raw = base64.b64decode(value["base64"])
    assert value["size"] == len(raw) and gzip.decompress(raw) == data


# -- 9. progress on a terminal, nothing extra when piped -------------------------------


def test_wait_shows_a_spinner_on_a_terminal_and_nothing_when_piped(  # type: ignore[no-untyped-def]
    server_proc, worker_proc
) -> None:
    server = server_proc()
    worker_proc(server.address).wait_connected()
    at = ["--server", server.address]
    job_id = cli("submit", "sleep", "1.5", *at).stdout.strip()
    code, terminal, stdout = on_tty(["wait", job_id, *at], tty="stderr")
    assert code == 0
    assert f"job {job_id} (sleep): running" in terminal
    assert stdout.splitlines()[:2] == [f'job {job_id}: sleep "1.5"', "  state:    succeeded"]
    job_id = cli("submit", "sleep", "1", *at).stdout.strip()
    code, terminal, stdout = on_tty(["result", job_id, "--wait", "20", *at], tty="stderr")
    assert (code, stdout) == (0, "1.0\n")
    assert f"job {job_id} (sleep): " in terminal
    job_id = cli("submit", "sleep", "0.5", *at).stdout.strip()
    out = cli("wait", job_id, *at)
    assert (out.returncode, out.stderr) == (0, "")


def test_demo_shows_a_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    args = ["demo", "-n", "40", "-w", "1"]
    code, terminal, stdout = on_tty([*args, "--data", str(tmp_path / "a")], tty="stderr")
    assert code == 0 and "succeeded=40, dead=1" in stdout
    assert "jobs finished" in terminal and "41/41" in terminal
    out = cli(*args, "--data", str(tmp_path / "b"))
    assert out.returncode == 0 and "succeeded=40, dead=1" in out.stdout
    assert "jobs finished" not in out.stderr


# -- 10, 11, 12, 13. the one-string form, sleep N, --count, list ------------------------


def test_submit_forms_sleep_count_and_list(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker_proc(server.address, "--concurrency", "20").wait_connected()
    at = ["--server", server.address]
    # the text after the type, verbatim
    job_id = cli("submit", "echo   a   b  ", *at).stdout.strip()
    out = cli("result", job_id, "--wait", "20", "--json", *at)
    assert (out.returncode, codec.loads(out.stdout)) == (0, "a   b  ")
    # sleep takes "5" as the CLI sends it; junk fails for good
    slept = cli("submit", "sleep", "0.2", *at).stdout.strip()
    junk = cli("submit", "sleep", "soon", *at).stdout.strip()
    assert cli("wait", slept, "--timeout", "20", *at).returncode == 0
    out = cli("wait", junk, "--timeout", "20", "--json", *at)
    job = codec.loads(out.stdout)
    assert (out.returncode, job["state"], job["attempts"]) == (1, "dead", 1)
    assert job["error"]["message"] == "sleep takes a number of seconds (0-86400), not 'soon'"
    # --count: every id, one a line, in calls of 1000
    out = cli("submit", "noop", "--count", "2500", *at)
    assert out.returncode == 0 and out.stderr == ""
    ids = [int(i) for i in out.stdout.split()]
    assert len(ids) == 2500 and ids == list(range(ids[0], ids[0] + 2500))
    out = cli("submit", "noop", "--count", "3", "--json", *at)
    listed = codec.loads(out.stdout)
    assert out.returncode == 0 and listed == list(range(ids[-1] + 1, ids[-1] + 4))
    wait_until(lambda: job_state(server, str(listed[-1])) == "succeeded", 60, "the flood")
    # list, piped: tab-separated lines, no header
    out = cli("list", "-n", "2", "--type", "sleep", *at)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert out.returncode == 0 and [r[:6] for r in rows] == [
        [junk, "dead", "sleep", "default", "5", "1"],
        [slept, "succeeded", "sleep", "default", "5", "1"],
    ]
    assert all(len(r) == 7 for r in rows)
    assert cli("list", "--state", "cancelled", *at).stdout == ""
    # ... and a table on a terminal
    code, terminal, _ = on_tty(["list", "-n", "2", "--type", "sleep", *at], tty="stdout")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal)
    assert code == 0
    assert plain.split()[:7] == ["ID", "STATE", "TYPE", "QUEUE", "PRI", "TRIES", "CREATED"]
    assert re.search(rf"{junk}\s+dead\s+sleep\s+default\s+5\s+1\s", plain)


def test_success_rate_is_never_rounded_up_to_100_with_a_dead_job() -> None:
    from distqueue.server.server import _percent

    assert [_percent(r) for r in (None, 1.0, 2000 / 2001, 0.5, 1 / 5000, 0.0)] == [
        "-", "100.0%", "99.9%", "50.0%", "0.1%", "0.0%"]  # fmt: skip


def test_workers_stop_at_a_usage_error_instead_of_restarting_it(
    server_proc,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    server = server_proc()
    out = cli("workers", "2", "--server", server.address, "--tasks", "no_such_module_x",
              timeout=60)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "no_such_module_x" in out.stderr
    assert "a usage error that a restart would repeat; stopping them all" in out.stderr
    assert "restarting" not in out.stderr
