"""Coverage-guided fuzzing of the request parser with atheris (libFuzzer), run as
a subprocess for a bounded time (budget.py: ~10 s in CI, 2 min soaking).

atheris is an optional extra (``pip install atheris``: wheels for CPython on
x86-64 Linux); without it this test is skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import budget, frames

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SEEDS = [
    b"PING\r\n", b"SUBMIT echo 'hello world'\r\n", b'STATUS "4\\"2"\n',
    frames.resp([b"PING"]), frames.resp([b"SUBMIT", b"echo", b"x" * 100]),
    frames.resp([b"AUTH", b"secret"]) + frames.resp([b"STATS"]),
    b"*2000000000\r\n", b"*1\r\n$4294967295\r\n", b"*1\r\n*1\r\n$1\r\na\r\n",
]  # fmt: skip


@pytest.mark.parametrize(
    "seconds", [pytest.param(budget.seconds("atheris"), id="budget", marks=budget.marks("atheris"))]
)
def test_atheris_request_parser(tmp_path: Path, seconds: float) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(SEEDS):
        # the harness reads a limit and the cuts first: give the seeds room for them
        (corpus / f"seed{i}").write_bytes(b"\x00" * 8 + seed)
    cmd = [
        sys.executable, str(HERE / "atheris_resp.py"), str(corpus),
        f"-max_total_time={max(1, round(seconds))}", "-timeout=2", "-rss_limit_mb=2048",
        "-malloc_limit_mb=512", "-max_len=4096", f"-dict={HERE / 'resp.dict'}",
        f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    crashes = sorted(p for p in tmp_path.iterdir() if p.name.split("-")[0] in
                     ("crash", "timeout", "oom", "leak", "slow"))  # fmt: skip
    found = "\n".join(f"{p.name}: {p.read_bytes()[:300]!r}" for p in crashes)
    assert proc.returncode == 0 and not crashes, (
        f"atheris found {len(crashes)} failing inputs (exit {proc.returncode}):\n{found}\n"
        f"{out[-4000:]}"
    )
    runs = [line.split(":")[-1].strip() for line in out.splitlines()
            if "stat::number_of_executed_units" in line]  # fmt: skip
    print(f"\natheris: {runs[-1] if runs else '?'} inputs in {seconds:.0f} s")
