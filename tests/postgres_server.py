"""The PostgreSQL server the tests use, and a throwaway cluster for crash tests.

The tests never touch anyone's data: they use the server named by DISTQUEUE_PG_DSN
(default: the one these machines run on 127.0.0.1:5432, user postgres) and, in it,
a database of their own (``distqueue_tests``, ``distqueue_tests_gw0``… when tests
run in parallel); each Backend of tests/conftest.py gets
a fresh schema there, dropped at its teardown. When no server answers, the postgres
parameters skip with one clear line, unless DISTQUEUE_REQUIRE_POSTGRES=1 (as .ci/run
sets): then they fail, so CI cannot skip them silently.

Crash tests start a cluster of their own (``initdb`` + ``pg_ctl`` on a free port, in
a temp dir): ``start_cluster``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
#: a database for each pytest-xdist worker: the oldest-transaction figure
#: (pg_stat_activity, per database) must not see another worker's tests
TEST_DB = "distqueue_tests" + (f"_{os.environ['PYTEST_XDIST_WORKER']}"
                               if os.environ.get("PYTEST_XDIST_WORKER") else "")  # fmt: skip
_url: str | None = None


def _require(message: str) -> None:
    if os.environ.get("DISTQUEUE_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " (DISTQUEUE_REQUIRE_POSTGRES=1)")
    pytest.skip(message)


def _with_db(dsn: str, db: str) -> str:
    base, sep, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    if "://" not in head:  # no path: postgresql://host:port
        head = base
    return f"{head}/{db}" + (sep + query if sep else "")


def postgres_url() -> str:
    """The tests' database (created on first use) on the session's server, as a URL."""
    global _url
    if _url is None:
        try:
            import psycopg
        except ImportError:
            _require("psycopg is not installed: the postgres store tests cannot run")
            raise
        dsn = os.environ.get("DISTQUEUE_PG_DSN", DEFAULT_DSN)
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                found = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (TEST_DB,)
                ).fetchone()
                if not found:
                    # (another test session may make it meanwhile)
                    with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                        conn.execute(f"CREATE DATABASE {TEST_DB}")
        except psycopg.OperationalError as exc:
            _require(f"no PostgreSQL server answers at {dsn}: {str(exc).strip()}")
        _url = _with_db(dsn, TEST_DB)
    return _url


def new_schema(prefix: str) -> str:
    """A schema name no other test uses."""
    return f"dqt_{prefix}_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- a throwaway cluster ----------------------------------------------------------------------


def pg_bin(name: str) -> str:
    """A PostgreSQL server program (initdb, pg_ctl, postgres): on PATH or Debian's."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    _require(f"{name} is not installed: the postgres crash tests cannot run")
    raise AssertionError


def _as_postgres() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    return ["su", "postgres", "-c"]  # pragma: no cover - not on these machines


@dataclass
class Cluster:
    """A cluster of the test's own: its data directory, port and server process."""

    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the postmaster (not through pg_ctl: the test holds its pid, to kill -9 it)."""
        with open(self.directory / "log", "ab") as log:
            self.proc = subprocess.Popen(
                [*_as_postgres(), pg_bin("postgres"), "-D", str(self.directory / "data"),
                 "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={self.directory}", "-c", "fsync=on",
                 "-c", "max_connections=50"],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=1):
                    return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not start: {(self.directory / 'log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def postmaster_pid(self) -> int:
        """The postmaster's pid (``self.proc`` may be runuser's, which waits for it)."""
        return int((self.directory / "data" / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """kill -9 of the postmaster, mid-whatever: no shutdown, no checkpoint. Its
        backends notice and exit; the next start recovers from the WAL."""
        os.kill(self.postmaster_pid(), signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def restart(self) -> None:
        """Start again after a kill (the old backends may take a moment to go)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop it (fast shutdown) and remove its files."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(self.postmaster_pid(), signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(self.postmaster_pid(), signal.SIGKILL)
                self.proc.wait(30)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(port: int) -> Cluster:
    """initdb a cluster in a temp dir (trust auth, user postgres) and start it."""
    directory = Path(tempfile.mkdtemp(prefix="dq-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    subprocess.run(
        [*_as_postgres(), pg_bin("initdb"), "-D", str(directory / "data"), "-U", "postgres",
         "-A", "trust", "--no-sync", "-E", "UTF8"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    cluster = Cluster(directory, port)
    cluster.start()
    return cluster
