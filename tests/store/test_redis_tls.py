"""The Redis store over TLS (``rediss://``): a redis-server of the test's own that
speaks TLS only, its certificate signed by a throwaway CA made with ``openssl``;
a server on it and a direct-mode worker on it, each running a job end to end, and a
CA that did not sign it refused clearly. Skips without redis-server, unless
DISTQUEUE_REQUIRE_REDIS=1 (then it fails, as the other Redis tests do)."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from distqueue.client import Client
from tests.procs import CLI, Proc, cli, wait_until
from tests.redis_server import free_port, redis_url
from tests.system.test_tls import Certs, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("redis-certs"))


def _answers_over_tls(port: int, ca: str) -> bool:
    context = ssl.create_default_context(cafile=ca)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def tls_redis(certs: Certs) -> Iterator[int]:
    """A redis-server on 127.0.0.1 speaking TLS only (no client certificates asked);
    its port."""
    redis_url()  # skips, or fails under DISTQUEUE_REQUIRE_REDIS=1, without redis-server
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--dir", tempfile.mkdtemp(prefix="dq-redis-tls-"), "--save", "", "--appendonly", "no",
         "--tls-cert-file", certs.server, "--tls-key-file", certs.server_key,
         "--tls-ca-cert-file", certs.ca, "--tls-auth-clients", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not _answers_over_tls(port, certs.ca):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
            pytest.fail(f"redis-server did not start with TLS on port {port}:\n{out[-2000:]}")
        time.sleep(0.05)
    yield port
    proc.kill()
    proc.communicate()


def rediss(port: int, db: int, ca: str | None) -> str:
    url = f"rediss://127.0.0.1:{port}/{db}"
    return url + (f"?ssl_ca_certs={quote(ca)}" if ca else "")


def test_a_server_on_a_rediss_store_runs_a_job(
    tls_redis: int, certs: Certs, server_proc: Any, worker_proc: Any
) -> None:
    # Given a server whose store is the TLS Redis (its CA in the URL)
    server = server_proc("--store", rediss(tls_redis, 0, certs.ca))
    worker = worker_proc(server.address)
    worker.wait_connected()
    # When a job goes through it, Then it runs and its result is kept in Redis
    with Client(server.address) as client:
        job_id = client.submit("wordcount", "one two three")
        assert client.result(job_id, wait=10) == 3
    with Client(rediss(tls_redis, 0, certs.ca)) as direct:  # read back without the server
        assert direct.status(job_id).worker == worker.id


def test_direct_mode_on_rediss_with_the_ca_from_the_environment(
    tls_redis: int, certs: Certs
) -> None:
    # Given a direct-mode worker on the TLS Redis, the CA given by the environment
    env = {"DISTQUEUE_REDIS_TLS_CA": certs.ca}
    url = rediss(tls_redis, 1, None)
    worker = Proc([*CLI, "worker", "--store", url], env=env)
    try:
        worker.wait_for("connected to")
        # When the CLI submits a job straight to the store, Then the worker runs it
        out = cli("submit", "--server", url, "capitalize", "secure", env=env)
        assert out.returncode == 0, out.stderr
        job_id = out.stdout.strip()
        # (polled: in direct mode `result --wait` does not return once the job is done)
        out = wait_until(lambda: (r := cli("result", "--server", url, job_id, env=env))
                         .returncode == 0 and r, 15, "the result")  # fmt: skip
        assert out.stdout.strip() == "SECURE"
    finally:
        worker.stop()


def test_a_ca_that_did_not_sign_redis_is_refused_clearly(
    tls_redis: int, certs: Certs, tmp_path: Path
) -> None:
    # A client in direct mode: one line, certificate verify failed, exit 1
    out = cli("stats", "--server", rediss(tls_redis, 0, certs.other_ca))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert re.fullmatch(
        r"distqueue: cannot open the store at Redis rediss://\S+: redis: .*\[SSL:"
        r" CERTIFICATE_VERIFY_FAILED\] certificate verify failed: .* \[STORE\]\n",
        out.stderr,
    ), out.stderr
    # Without a CA, the system's trust store does not know the throwaway CA either
    out = cli("stats", "--server", rediss(tls_redis, 0, None))
    assert out.returncode == 1 and "certificate verify failed" in out.stderr
    # A CA file that is not there: said before any connection is tried
    missing = str(tmp_path / "missing-ca.pem")
    out = cli("stats", "--server", rediss(tls_redis, 0, missing))
    assert out.returncode == 1
    assert out.stderr == (
        f"distqueue: Redis TLS file {missing} (ssl_ca_certs): no such readable file\n"
    )
    # A server waits for its store (as for a Redis that is down), saying why in its log
    server = Proc([*CLI, "server", "--port", "0", "--no-console",
                   "--store", rediss(tls_redis, 0, certs.other_ca)])  # fmt: skip
    try:
        server.wait_for(
            r"store unavailable: cannot open the store at Redis rediss://.*"
            r"\[SSL: CERTIFICATE_VERIFY_FAILED\] certificate verify failed"
        )
    finally:
        server.stop()
