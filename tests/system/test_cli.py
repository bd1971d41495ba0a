"""The ``distqueue`` command as a newcomer runs it: a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from distqueue import __version__

CLI = [sys.executable, "-m", "distqueue"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_version_and_help() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert __version__ in out.stdout
    out = run("--help")
    assert out.returncode == 0
    assert "demo" in out.stdout


def test_demo_runs_every_job(tmp_path: Path) -> None:
    # When the README's first command runs (with fewer jobs): a server, 2 worker
    # processes and a client
    out = run("demo", "-n", "300", "--data", str(tmp_path / "data"))
    # Then every good job succeeded, the bad one is a dead letter, the typo refused
    assert out.returncode == 0, out.stderr
    assert "started 2 worker processes" in out.stdout
    assert "succeeded=300, dead=1" in out.stdout
    assert "is dead after 1 attempt(s)" in out.stdout
    assert "a typo is refused at once: unknown job type 'wordcont'" in out.stdout
    assert "workers: 2 connected" in out.stdout


def test_unknown_command_is_one_clear_error() -> None:
    out = run("frobnicate")
    assert out.returncode != 0
    assert "No such command" in out.stderr
    assert "Traceback" not in out.stderr
