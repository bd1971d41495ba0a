"""The README's command lines, run as written (the server and worker lines are
this test's fixtures; the rest runs in bash, one script, stopping at the first
failure)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _block(heading: str) -> list[str]:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    code = re.search(r"```sh\n(.*?)```", section, re.S)
    assert code is not None
    lines = []
    for line in code.group(1).splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_three_terminal_walkthrough(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    lines = _block("## By hand, in three terminals")
    assert lines[0] == "distqueue server" and lines[1] == "distqueue worker"
    server = server_proc()
    worker_proc(server.address).wait_connected()
    script = ["set -euo pipefail", f"export DISTQUEUE_SERVER={server.address}",
              f"distqueue() {{ {sys.executable} -m distqueue \"$@\"; }}"]  # fmt: skip
    for line in lines[2:]:
        # ID stands for any id: cancel the delayed job the block submitted just before
        line = line.replace(
            " ID",
            " $(distqueue list --state scheduled -n 1 --json"
            " | python3 -c 'import json,sys; print(json.load(sys.stdin)[0][\"id\"])')",
        )
        script.append(f"echo '>>> {line[:60]}'")
        script.append(line)
    out = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True,
                         timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    # what the README says each prints
    after = out.stdout.split(">>> distqueue result $id --wait 10", 1)[1]
    assert after.split("\n")[1] == "2"
    assert "cancelled" in out.stdout
    assert "jobs processed:" in out.stdout


def test_the_two_set_up_commands(tmp_path: Path) -> None:
    """The first block: command 1 makes a venv, installs and runs the demo (the demo
    is run here, in this test's environment: installing is .ci/smoke's part); command
    2 is what .ci/run runs, word for word."""
    text = README.read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line and line[0] != "#"]
    assert commands == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && distqueue demo",
        "pip install -e '.[test]' && pytest",
    ]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python3 -m venv .venv" in ci and ". .venv/bin/activate" in ci
    assert commands[1] in ci.replace("pip install --quiet ", "pip install ")
    out = subprocess.run([sys.executable, "-m", "distqueue", "demo", "--data",
                          str(tmp_path / "data")], capture_output=True, text=True,
                         timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "all 1001 jobs finished" in out.stdout
