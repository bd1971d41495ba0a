"""Settings from a flag, the environment, a config file and the defaults, in that
order; ``distqueue config`` shows each with its source."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.procs import CLI, Peer, ServerProc, cli


def settings(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    out = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return {
        row["name"]: (row["value"], row["source"]) for row in json.loads(out.stdout)["settings"]
    }


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    conf = tmp_path / "dq.toml"
    conf.write_text('[server]\nlease = "45s"\npoll = 0.25\nmax-payload = "1MiB"\n'
                    'retain-failed = "2d"\nstore = "redis://:hunter2@db:6379/0"\n'
                    '[worker]\nconcurrency = 8\n')  # fmt: skip
    env = {"DISTQUEUE_SERVER_LEASE": "50", "DISTQUEUE_SERVER_POLL": "0.5"}
    s = settings("--config", str(conf), "config", "server", "--lease", "55", "--json", env=env)
    assert s["lease"] == (55.0, "flag")  # flag over env and file
    assert s["poll"] == (0.5, "env")  # env over file
    assert s["max_payload"] == (1024 * 1024, "file")
    assert s["retain_failed"] == (2 * 86400.0, "file")
    assert s["store_url"] == ("redis://:***@db:6379/0", "file")  # the password redacted
    assert s["retry_base"] == (2.0, "default")
    assert s["token"] == (None, "default")
    s = settings("--config", str(conf), "config", "worker", "--json",
                 env={"DISTQUEUE_TOKEN": "s3cret"})  # fmt: skip
    assert s["concurrency"] == (8, "file")
    assert s["token"] == ("***", "env")


def test_distqueue_toml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "distqueue.toml").write_text("[worker]\nqueues = 'emails,reports'\n")
    s = settings("config", "worker", "--json", cwd=tmp_path)
    assert s["queues"] == ("emails,reports", "file")
    s = settings("config", "worker", "--json", cwd=tmp_path / "..")
    assert s["queues"] == ("default", "default")


def test_the_server_runs_with_the_file_and_env_settings(tmp_path: Path) -> None:
    conf = tmp_path / "dq.toml"
    conf.write_text('[server]\nlease = "45s"\nmax-payload = "2MiB"\n')
    env = {"DISTQUEUE_CONFIG": str(conf), "DISTQUEUE_SERVER_MAX_FETCH_BYTES": "1MiB"}
    server = ServerProc(tmp_path / "data", env=env)
    try:
        hello = json.loads(Peer(server).call("HELLO", "1"))
        assert (hello["lease"], hello["max_payload"], hello["max_fetch_bytes"]) == (
            45.0, 2 * 1024 * 1024, 1024 * 1024)  # fmt: skip
    finally:
        Peer.close_all()
        server.stop()


def test_a_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    cases = {
        "[server\n": "is not valid TOML",
        "lease = 3\n": "belongs in a table",
        "[servr]\nlease = 3\n": "[servr] is no command",
        "[server]\nleese = 3\n": "[server] leese: no such option of distqueue server",
        '[server]\nlease = "soon"\n': "'soon' is not a duration",
    }
    for text, message in cases.items():
        bad.write_text(text)
        out = cli("--config", str(bad), "config", "server")
        assert out.returncode == 2, (text, out.stderr)
        assert message in out.stderr, (text, out.stderr)
        assert "Traceback" not in out.stderr
    out = cli("--config", str(tmp_path / "missing.toml"), "config")
    assert out.returncode == 2 and "no config file" in out.stderr
