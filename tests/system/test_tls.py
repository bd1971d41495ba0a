"""TLS on the protocol port: real servers, workers and CLI commands over real sockets.

The certificates are made at test time with the ``openssl`` command: a throwaway CA
that signs the server's certificate (for 127.0.0.1, 127.0.0.2 and localhost) and a
client certificate, and a second CA nobody trusts that signs a stranger's. The
servers listen on 127.0.0.2, a second loopback address, so the name checked is the
one the clients connect to.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from distqueue.client import Client
from tests.procs import CLI, Proc, cli, wait_until

TOKEN = "s3cret"
#: the CLI's commands get the token from the environment (on the command line, ps shows it)
TOKEN_ENV = {"DISTQUEUE_TOKEN": TOKEN}
HOST = "127.0.0.2"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


class Certs:
    """The PEM files of one test run: ``ca``, ``server``, ``client`` (signed by the
    CA), ``other_ca`` and ``stranger`` (signed by the other CA); ``X_key`` their keys."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def __getattr__(self, name: str) -> str:
        return str(self.dir / f"{name.removesuffix('_key')}{'-key' * name.endswith('_key')}.pem")


def _openssl(directory: Path, *args: str) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is missing: the TLS tests make their certificates with it")
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)


def make_ca(directory: Path, name: str) -> None:
    _openssl(directory, "req", "-x509", *EC_KEY, "-keyout", f"{name}-key.pem",
             "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=distqueue test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip


def make_cert(directory: Path, name: str, ca: str, san: str) -> None:
    (directory / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(directory, "req", *EC_KEY, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
             "-subj", f"/CN=distqueue test {name}")  # fmt: skip
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem",
             "-CAkey", f"{ca}-key.pem", "-CAcreateserial", "-out", f"{name}.pem",
             "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip


def make_certs(directory: Path) -> Certs:
    make_ca(directory, "ca")
    make_ca(directory, "other_ca")
    make_cert(directory, "server", "ca", "IP:127.0.0.1,IP:127.0.0.2,DNS:localhost")
    make_cert(directory, "client", "ca", "DNS:distqueue-client")
    make_cert(directory, "stranger", "other_ca", "DNS:distqueue-client")
    return Certs(directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_server(server_proc: Any, certs: Certs) -> Any:
    """A server on 127.0.0.2 that speaks TLS only and wants the token."""
    server = server_proc("--host", HOST, "--tls-cert", certs.server, "--tls-key",
                         certs.server_key, "--token", TOKEN)  # fmt: skip
    assert re.search(rf"listening on {HOST}:{server.port} \(TLS\)", server.output)
    return server


def clean_line(out: subprocess.CompletedProcess[str]) -> str:
    """A refused command's stderr: a non-zero exit and one line, no traceback."""
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    return out.stderr.strip()


def test_a_worker_runs_a_job_over_tls(tls_server: Any, worker_proc: Any, certs: Certs) -> None:
    # Given a TLS server and a worker that trusts its CA, at a tls:// address
    address = f"tls://{HOST}:{tls_server.port}"
    worker = worker_proc(address, "--tls-ca", certs.ca, "--token", TOKEN)
    worker.wait_connected()
    assert f"connected to {HOST}:{tls_server.port}" in worker.output
    # When a job is submitted with the CLI over TLS (--tls-ca on a plain address)
    tls = ["--server", tls_server.address, "--tls-ca", certs.ca]
    out = cli("submit", *tls, "wordcount", "hello brave new world", env=TOKEN_ENV)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    # Then it runs: the CLI (the CA from the environment) and the Python API read it
    out = cli("result", "--server", address, job_id, "--wait", "10",
              env={**TOKEN_ENV, "DISTQUEUE_TLS_CA": certs.ca})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"
    with Client(address, token=TOKEN, tls_ca=certs.ca) as client:
        assert client.result(int(job_id), wait=10) == 4
        assert client.status(int(job_id)).worker == worker.id


def test_a_plain_worker_or_an_untrusted_server_is_refused_clearly(
    tls_server: Any, worker_proc: Any, certs: Certs
) -> None:
    where = re.escape(f"{HOST}:{tls_server.port}")
    # Given a worker without TLS: it is told the server speaks TLS, and retries
    plain = worker_proc(tls_server.address, "--token", TOKEN)
    plain.wait_for(rf"server unavailable \(the server at {where} closed the connection during"
                   r" HELLO: is it a TLS server\? use --tls \(or a tls:// address\)\)")  # fmt: skip
    # Given a worker that trusts another CA: certificate verify failed
    doubting = worker_proc(f"tls://{tls_server.address}", "--tls-ca", certs.other_ca,
                           "--token", TOKEN)  # fmt: skip
    doubting.wait_for(
        rf"server unavailable \(cannot reach a distqueue server: TLS handshake with {where}"
        r" failed: certificate verify failed: unable to get local issuer certificate \(is the"
        r" server's certificate signed by the CA in --tls-ca\?\)"
    )
    # And the CLI says the same in one line; without a CA the system's store is asked
    out = cli("stats", "--server", tls_server.address, env=TOKEN_ENV)
    assert clean_line(out) == (
        f"distqueue: the server at {HOST}:{tls_server.port} closed the connection during"
        " HELLO: is it a TLS server? use --tls (or a tls:// address) [UNAVAILABLE]"
    )
    out = cli("stats", "--server", tls_server.address, "--tls", env=TOKEN_ENV)
    assert re.fullmatch(rf"distqueue: cannot reach a distqueue server: TLS handshake with {where}"
                        r" failed: certificate verify failed: .*\(the system does not trust it:"
                        r" give the CA that signed it with --tls-ca\) \[UNAVAILABLE\]",
                        clean_line(out))  # fmt: skip
    # And neither worker ever got in
    assert "connected to" not in plain.output + doubting.output


def test_a_tls_client_of_a_plain_server_is_told(server_proc: Any, certs: Certs) -> None:
    plain = server_proc("--host", HOST)
    out = cli("stats", "--server", f"tls://{plain.address}", "--tls-ca", certs.ca)
    # a plain server answers the TLS hello with an error line; one that waited for
    # the rest of a line would make the handshake time out instead
    assert re.fullmatch(
        rf"distqueue: cannot reach a distqueue server: TLS handshake with {plain.address}"
        r" failed: (the server does not speak TLS \(.*\): connect without --tls, with a plain"
        r" HOST:PORT address|no answer in time: does the server speak TLS\? .*) \[UNAVAILABLE\]",
        clean_line(out),
    )


def test_client_certificates_when_the_server_asks(
    server_proc: Any, worker_proc: Any, certs: Certs
) -> None:
    # Given a server that requires a client certificate signed by its CA
    server = server_proc("--host", HOST, "--tls-cert", certs.server, "--tls-key",
                         certs.server_key, "--tls-ca", certs.ca)  # fmt: skip
    assert "(TLS, client certificates required)" in server.output
    where = f"{HOST}:{server.port}"
    tls = ["--server", f"tls://{where}", "--tls-ca", certs.ca]
    # When a client comes without one, or with one another CA signed: refused, clearly
    out = cli("stats", *tls)
    assert clean_line(out) == (
        f"distqueue: TLS handshake with {where} failed: the server closed the connection at"
        " once: it requires a client certificate (give --tls-cert and --tls-key) [UNAVAILABLE]"
    )
    out = cli("stats", *tls, "--tls-cert", certs.stranger, "--tls-key", certs.stranger_key)
    assert clean_line(out) == (
        f"distqueue: TLS handshake with {where} failed: the server closed the connection at"
        " once: it did not accept our client certificate (is it signed by the CA the server"
        " trusts, its --tls-ca?) [UNAVAILABLE]"
    )
    # Then one the CA signed gets in: a worker (the files from the environment) runs a
    # job a client submits (the files as arguments)
    env = {"DISTQUEUE_TLS_CERT": certs.client, "DISTQUEUE_TLS_KEY": certs.client_key}
    worker = Proc([*CLI, "worker", "--server", f"tls://{where}", "--tls-ca", certs.ca], env=env)
    try:
        worker.wait_for("connected to")
        with Client(f"tls://{where}", tls_ca=certs.ca, tls_cert=certs.client,
                    tls_key=certs.client_key) as client:  # fmt: skip
            job_id = client.submit("capitalize", "over tls")
            assert client.result(job_id, wait=10) == "OVER TLS"
    finally:
        worker.stop()


def test_supervised_workers_get_the_tls_options(
    tls_server: Any, certs: Certs, tmp_path: Path
) -> None:
    # Given `distqueue workers 1` with the TLS options
    sup = Proc([*CLI, "workers", "1", "--server", tls_server.address, "--tls-ca", certs.ca],
               env=TOKEN_ENV)  # fmt: skip
    try:
        # Then its worker connects over TLS and runs a job
        with Client(tls_server.address, tls=True, tls_ca=certs.ca, token=TOKEN) as client:
            wait_until(lambda: client.stats()["workers"]["connected"] >= 1, 20, "the worker")
            assert client.result(client.submit("echo", "hi"), wait=10) == "hi"
    finally:
        sup.stop()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tls-cert", "{server}"], "--tls-cert needs --tls-key: the certificate's private key"),
        (["--tls-key", "{server_key}"], "--tls-key needs --tls-cert: the server's certificate"),
        (["--tls-ca", "{ca}"], "--tls-ca (require client certificates) needs --tls-cert and"
         " --tls-key"),
        (["--tls-cert", "{server}", "--tls-key", "{dir}/missing-key.pem"],
         "TLS key {dir}/missing-key.pem: no such file"),
        (["--tls-cert", "{server}", "--tls-key", "{client_key}"],
         "the TLS key {client_key} does not match the certificate {server}"),
        (["--tls-cert", "{server}", "--tls-key", "{server_key}", "--tls-ca", "{dir}/server.ext"],
         "cannot use the TLS CA file {dir}/server.ext: no certificate or crl found (it must"
         " hold PEM certificates)"),
        (["--tls-cert", "{server}", "--tls-key", "{encrypted_key}"],
         "the TLS key {encrypted_key} is encrypted: give an unencrypted key"),
    ],
)  # fmt: skip
def test_bad_server_tls_flags_are_one_clear_line(
    certs: Certs, tmp_path: Path, flags: list[str], message: str
) -> None:
    encrypted = certs.dir / "encrypted-key.pem"
    if not encrypted.exists():
        _openssl(certs.dir, "pkcs8", "-topk8", "-in", certs.server_key, "-out", str(encrypted),
                 "-passout", "pass:secret")  # fmt: skip
    files = {name: getattr(certs, name) for name in ("server", "server_key", "client_key", "ca")}
    files.update(dir=str(certs.dir), encrypted_key=str(encrypted))
    out = cli("server", "--port", "0", "--data", str(tmp_path / "data"), "--no-console",
              *(f.format(**files) for f in flags), timeout=30)  # fmt: skip
    assert clean_line(out) == "distqueue: " + message.format(**files)
