"""Redis client libraries, as they ship, against a real ``distqueue server`` (issue #12).

redis-py 8, node-redis 6 and ioredis 6 open a connection with Redis's ``HELLO 3``
(RESP3), ``AUTH`` inside it when given a password, ``CLIENT SETINFO``, and ioredis
with ``INFO`` (its ready check). Each library here connects with its default
options (and the token as the password), then sends SUBMIT, WAIT, STATUS, RESULT
through its generic command call, while a real worker runs the job.

The Node libraries run from tests/protocol/node (``npm install --prefix
tests/protocol/node``); without node, npm or that install these tests are skipped,
saying why, unless DISTQUEUE_REQUIRE_NODE=1 (as .ci/run sets): then they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis

from distqueue import codec
from distqueue._version import __version__
from tests.procs import Peer, ServerProc, WorkerProc

TOKEN = "s3cret"
NODE_DIR = Path(__file__).resolve().parent / "node"


class Setup:
    """A server (maybe with a token) and a worker that runs its jobs."""

    def __init__(self, data: Path, token: str | None) -> None:
        extra = ("--token", token) if token else ()
        self.token = token
        self.server = ServerProc(data, *extra)
        try:
            self.worker = WorkerProc(self.server.address, *extra)
            self.worker.wait_connected()
        except BaseException:
            self.server.stop()
            raise

    def stop(self) -> None:
        self.worker.stop()
        self.server.stop()


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["open", "token"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    s = Setup(tmp_path_factory.mktemp("redis-clients") / "data", request.param)
    yield s
    s.stop()


# -- redis-py ----------------------------------------------------------------------------


def redis_py(setup: Setup, **options: Any) -> redis.Redis:
    return redis.Redis(
        host=setup.server.host, port=setup.server.port, password=setup.token,
        socket_timeout=30, **options,
    )  # fmt: skip


def test_redis_py_is_the_one_meant() -> None:
    assert int(redis.__version__.split(".")[0]) >= 8, "pip install 'redis>=8'"


@pytest.mark.parametrize("protocol", [None, 3, 2], ids=["default", "resp3", "resp2"])
def test_redis_py_submit_status_result(setup: Setup, protocol: int | None) -> None:
    options = {} if protocol is None else {"protocol": protocol}
    r = redis_py(setup, **options)
    try:
        assert r.ping() is True
        job_id = r.execute_command("SUBMIT", "echo", "hi")
        assert isinstance(job_id, int) and job_id > 0
        done = codec.loads(r.execute_command("WAIT", job_id, 20))
        assert (done["id"], done["state"], done["result"]) == (job_id, "succeeded", "hi")
        status = codec.loads(r.execute_command("STATUS", job_id))
        assert (status["type"], status["args"], status["state"]) == ("echo", "hi", "succeeded")
        assert r.execute_command("RESULT", job_id) == [b"json", b'"hi"']
        with pytest.raises(redis.ResponseError, match=r"^NOTFOUND no job 999999$"):
            r.execute_command("STATUS", 999999)
        with pytest.raises(redis.ResponseError, match=r"^UNKNOWN unknown command 'FROB'"):
            r.execute_command("FROB")
        # what redis-py said on connect: RESP3 unless asked for 2, its name and version
        info = r.client_info()
        assert info["resp"] == ("2" if protocol == 2 else "3")
        assert (info["lib-name"], info["lib-ver"]) == ("redis-py", redis.__version__)
        assert info["db"] == 0
        assert r.client_id() == info["id"]
        assert r.client_getname() is None  # the null: `_` in RESP3, `$-1` in RESP2
        assert r.client_setname("dq-test") is True
        assert r.client_getname() in (b"dq-test", "dq-test")
        assert r.execute_command("SELECT", 0) in (b"OK", "OK", True)
        with pytest.raises(redis.ResponseError, match="SELECT 0 only"):
            r.execute_command("SELECT", 1)
        server = r.info("server")
        assert server["redis_version"] == "7.4.0"
        assert (server["server_name"], server["distqueue_version"]) == ("distqueue", __version__)
        assert r.info()["loading"] == 0
    finally:
        r.close()


def test_redis_py_handshake_metadata(setup: Setup) -> None:
    r = redis_py(setup)
    try:
        conn = r.connection_pool.get_connection()
        try:
            meta = conn.handshake_metadata
            assert isinstance(meta, dict)
            assert {k: v for k, v in meta.items() if k != b"id"} == {
                b"server": b"distqueue", b"version": __version__.encode(), b"proto": 3,
                b"mode": b"standalone", b"role": b"master", b"modules": [],
            }  # fmt: skip
            assert isinstance(meta[b"id"], int)
        finally:
            r.connection_pool.release(conn)
    finally:
        r.close()


def test_redis_py_with_a_username(setup: Setup) -> None:
    """``username=`` sends ``HELLO 3 AUTH name pw`` or ``AUTH name pw``: the name is
    not checked, the password is the token."""
    for protocol in (3, 2):
        r = redis_py(setup, username="anyone", protocol=protocol)
        try:
            assert r.execute_command("PING") in (b"PONG", True)
            assert isinstance(r.execute_command("SUBMIT", "noop"), int)
        finally:
            r.close()


def test_redis_py_wrong_or_no_password(tmp_path: Path) -> None:
    """Refused as AUTH; then the right token, held back by the token throttle (its
    HELLO 3 answered late), still gets its RESP3 map."""
    server = ServerProc(tmp_path / "data", "--token", TOKEN)
    try:
        for options in ({"password": "wrong"}, {"password": "wrong", "protocol": 2}, {}):
            r = redis.Redis(host=server.host, port=server.port, **options)
            with pytest.raises(redis.RedisError, match=r"wrong token|wants a token"):
                r.execute_command("SUBMIT", "noop")
            r.close()
        r = redis.Redis(host=server.host, port=server.port, password=TOKEN)
        try:
            assert isinstance(r.execute_command("SUBMIT", "noop"), int)
            assert r.client_info()["resp"] == "3"
        finally:
            r.close()
    finally:
        server.stop()


# -- the wire: what changes under RESP3 ---------------------------------------------------


def raw(peer: Peer, data: bytes) -> bytes:
    """Send ``data``; return the bytes of exactly one reply."""
    peer.send(data)
    reader = hiredis.Reader()
    got = b""
    while True:
        chunk = peer.sock.recv(1 << 16)
        assert chunk, f"closed; got {got!r}"
        got += chunk
        reader.feed(chunk)
        if reader.gets() is not False:
            assert not reader.has_data(), f"more than one reply: {got!r}"
            return got


def cmd(*words: str) -> bytes:
    return b"".join(
        [b"*%d\r\n" % len(words)] + [b"$%d\r\n%b\r\n" % (len(w), w.encode()) for w in words]
    )


def hello_reply(proto: int, client_id: int, head: bytes) -> bytes:
    version = __version__.encode()
    return b"".join([
        head, b"$6\r\nserver\r\n$9\r\ndistqueue\r\n",
        b"$7\r\nversion\r\n$%d\r\n%b\r\n" % (len(version), version),
        b"$5\r\nproto\r\n:%d\r\n" % proto, b"$2\r\nid\r\n:%d\r\n" % client_id,
        b"$4\r\nmode\r\n$10\r\nstandalone\r\n", b"$4\r\nrole\r\n$6\r\nmaster\r\n",
        b"$7\r\nmodules\r\n*0\r\n",
    ])  # fmt: skip


def test_resp3_forms_on_the_wire(setup: Setup) -> None:
    auth = ["AUTH", "default", setup.token] if setup.token else []
    peer = Peer(setup.server)
    try:
        # HELLO 2 first, to learn the id: the same fields as a flat array
        got = raw(peer, cmd("HELLO", "2", *auth))
        client_id = int(got.split(b"$2\r\nid\r\n:", 1)[1].split(b"\r\n", 1)[0])
        assert got == hello_reply(2, client_id, b"*14\r\n")
        assert raw(peer, cmd("CLIENT", "GETNAME")) == b"$-1\r\n"
        assert raw(peer, cmd("HELLO", "3", "SETNAME", "me")) == hello_reply(3, client_id, b"%7\r\n")
        assert raw(peer, cmd("CLIENT", "GETNAME")) == b"$2\r\nme\r\n"
        assert raw(peer, cmd("CLIENT", "SETNAME", "")) == b"+OK\r\n"
        assert raw(peer, cmd("CLIENT", "GETNAME")) == b"_\r\n"  # RESP3's null
        assert raw(peer, cmd("CLIENT", "ID")) == b":%d\r\n" % client_id
        # distqueue's own replies keep their forms: integers, JSON in bulk strings,
        # simple strings, arrays, errors
        job = raw(peer, cmd("SUBMIT", '{"type": "noop", "check_type": false, "delay": 60}'))
        assert job.startswith(b":")
        job_id = job[1:-2].decode()
        assert raw(peer, cmd("STATUS", job_id)).startswith(b"$")
        assert raw(peer, cmd("LIST", "STATE", "scheduled", "LIMIT", "1")).startswith(b"*1\r\n$")
        assert raw(peer, cmd("CANCEL", job_id)) == b"+cancelled\r\n"
        assert raw(peer, cmd("RESULT", job_id)) == b"-FAILED job %b is cancelled\r\n" % job[1:-2]
        assert raw(peer, cmd("PING")) == b"+PONG\r\n"
        assert raw(peer, cmd("HELLO", "2")) == hello_reply(2, client_id, b"*14\r\n")
        assert raw(peer, cmd("CLIENT", "GETNAME")) == b"$-1\r\n"
    finally:
        peer.close()


def test_null_payload_in_fetch_and_the_protocol_of_each_reply(setup: Setup) -> None:
    """A reply has the forms of the protocol in force when its request was read: a
    FETCH blocked before HELLO 3 answers in RESP2 (``$-1``), one after it in RESP3."""
    token = ["TOKEN", setup.token] if setup.token else []
    auth = ["AUTH", "default", setup.token] if setup.token else []
    worker = Peer(setup.server)
    client = Peer(setup.server)
    try:
        hello = cmd("HELLO", "1", *token, "ROLE", "worker", "ID", "w-resp3", "TYPES", "resp3.t")
        assert raw(worker, hello).startswith(b"$")
        if setup.token:
            assert raw(client, cmd("AUTH", setup.token)) == b"+OK\r\n"
        for before, after, null in (("2", "3", b"$-1\r\n"), ("3", "2", b"_\r\n")):
            assert raw(worker, cmd("HELLO", before, *auth))[:1] == (b"*" if before == "2" else b"%")
            # FETCH blocks; HELLO (the other protocol) is read behind it at once
            worker.send(cmd("FETCH", "1", "10") + cmd("HELLO", after))
            job_id = client.call("SUBMIT", '{"type": "resp3.t", "check_type": false}')
            got = b""
            reader = hiredis.Reader()
            replies: list[Any] = []
            while len(replies) < 2:
                chunk = worker.sock.recv(1 << 16)
                assert chunk, f"closed; got {got!r}"
                got += chunk
                reader.feed(chunk)
                while (item := reader.gets()) is not False:
                    replies.append(item)
            first = replies[0]
            assert got.startswith(b"*1\r\n*4\r\n:%d\r\n:" % job_id), got
            fetch_end = got.index(b"}\r\n") + 3
            assert got[fetch_end : fetch_end + len(null)] == null
            rest = got[fetch_end + len(null) :]
            assert rest.startswith(b"%7\r\n" if after == "3" else b"*14\r\n"), rest
            [[_, fence, _, _]] = first
            assert raw(worker, cmd("ACK", str(job_id), str(fence))) == b"+OK\r\n"
    finally:
        worker.close()
        client.close()


def test_handshake_needs_the_token(tmp_path: Path) -> None:
    server = ServerProc(tmp_path / "data", "--token", TOKEN)
    try:
        peer = Peer(server)
        for words in (["HELLO", "3"], ["INFO"], ["CLIENT", "SETINFO", "LIB-NAME", "x"],
                      ["SELECT", "0"], ["CLIENT", "ID"]):  # fmt: skip
            assert str(peer.call(*words)).startswith("AUTH ")
        assert raw(peer, cmd("HELLO", "3", "AUTH", "default", TOKEN))[:4] == b"%7\r\n"
        assert peer.call("CLIENT", "SETINFO", "LIB-NAME", "x") == b"OK"
        peer.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("words", "code"),
    [(["HELLO", "4"], "ARGS"), (["HELLO", "3", "AUTH", "default"], "ARGS"),
     (["HELLO", "3", "SETNAME", "a b"], "ARGS"), (["HELLO", "2", "FROB"], "ARGS"),
     (["CLIENT", "SETINFO", "LIB-NAME"], "ARGS"), (["CLIENT", "SETINFO", "COLOUR", "x"], "ARGS"),
     (["CLIENT", "SETNAME", "a\nb"], "ARGS"), (["CLIENT", "KILL", "x"], "UNKNOWN"),
     (["CLIENT", "MAINT_NOTIFICATIONS", "ON"], "UNKNOWN"), (["CLIENT", "ID", "x"], "ARGS"),
     (["SELECT", "1"], "ARGS"), (["SELECT", "x"], "ARGS"), (["COMMAND", "DOCS"], "UNKNOWN"),
     (["AUTH", "a", "b", "c"], "ARGS")],
)  # fmt: skip
def test_handshake_errors(setup: Setup, words: list[str], code: str) -> None:
    peer = Peer(setup.server)
    try:
        if setup.token:
            assert peer.call("AUTH", setup.token) == b"OK"
        reply = peer.call(*words)
        assert isinstance(reply, hiredis.ReplyError) and str(reply).split()[0] == code, reply
        assert peer.call("PING") == b"PONG"
    finally:
        peer.close()


def test_info_sections(setup: Setup) -> None:
    peer = Peer(setup.server)
    try:
        if setup.token:
            assert peer.call("AUTH", setup.token) == b"OK"
        text = peer.call("INFO", "persistence", "REPLICATION")
        assert text == b"# Persistence\r\nloading:0\r\nasync_loading:0\r\n\r\n" \
            b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"  # fmt: skip
        assert peer.call("INFO", "nosuchsection") == b""
        heads = [b"# Server", b"# Persistence", b"# Replication", b"# Cluster", b"# Keyspace"]
        for words in (["INFO"], ["INFO", "all"], ["INFO", "everything"], ["INFO", "default"]):
            everything = peer.call(*words)
            assert [line for line in everything.split(b"\r\n") if line[:1] == b"#"] == heads
            assert everything.startswith(b"# Server\r\nredis_version:7.4.0\r\n")
            assert everything.endswith(b"# Keyspace\r\n")
    finally:
        peer.close()


# -- redis-cli -----------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["-2"], ["-3"]], ids=["plain", "resp2", "resp3"])
def test_redis_cli(setup: Setup, flags: list[str]) -> None:
    cli = shutil.which("redis-cli")
    if cli is None:
        why = "redis-cli is not installed (Debian: redis-tools)"
        if os.environ.get("DISTQUEUE_REQUIRE_REDIS") == "1":
            pytest.fail(f"DISTQUEUE_REQUIRE_REDIS=1 but {why}", pytrace=False)
        pytest.skip(why)
    auth = ["-a", setup.token, "--no-auth-warning"] if setup.token else []

    def run(*words: str) -> str:
        base = [cli, *flags, *auth, "-h", setup.server.host, "-p", str(setup.server.port)]
        proc = subprocess.run([*base, *words], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    job_id = int(run("SUBMIT", "echo", "hi"))
    assert json.loads(run("WAIT", str(job_id), "20"))["state"] == "succeeded"
    assert run("RESULT", str(job_id)) == 'json\n"hi"\n'
    assert f"resp={3 if flags == ['-3'] else 2}" in run("CLIENT", "INFO")


# -- node-redis and ioredis ----------------------------------------------------------------


def node_ready() -> str:
    """The node executable; skips (or fails under DISTQUEUE_REQUIRE_NODE=1) saying
    what is missing."""
    node = shutil.which("node")
    why = None
    if node is None:
        why = "node is not installed (Node.js 18 or newer runs these tests)"
    elif (
        not (NODE_DIR / "node_modules" / "redis").is_dir()
        or not (NODE_DIR / "node_modules" / "ioredis").is_dir()
    ):
        why = (
            "the Node client libraries are not installed: npm install --prefix"
            " tests/protocol/node --no-audit --no-fund"
        )
    if why is not None:
        if os.environ.get("DISTQUEUE_REQUIRE_NODE") == "1":
            pytest.fail(f"DISTQUEUE_REQUIRE_NODE=1 but {why}", pytrace=False)
        pytest.skip(why)
    assert node is not None
    return node


@pytest.mark.parametrize(
    ("script", "library"), [("node_redis.js", "node-redis 6."), ("ioredis.js", "ioredis 6.")]
)
def test_node_library(setup: Setup, script: str, library: str) -> None:
    node = node_ready()
    args = [node, str(NODE_DIR / script), setup.server.host, str(setup.server.port)]
    if setup.token:
        args.append(setup.token)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("library").startswith(library)
    job_id = out["submit"]
    assert isinstance(job_id, int) and job_id > 0
    lib_name = "node-redis" if script == "node_redis.js" else "ioredis"
    client_info = out.pop("client_info")
    assert f" resp=3 lib-name={lib_name} lib-ver=6." in client_info, client_info
    assert out == {
        "ping": "PONG",
        "submit": job_id,
        "wait_state": "succeeded",
        "status": {"id": job_id, "type": "echo", "state": "succeeded", "args": "hi"},
        "result": ["json", '"hi"'],
        "getname": None,
        "info_loading": True,
        "notfound": "NOTFOUND no job 999999",
    }


def test_node_library_wrong_password(tmp_path: Path) -> None:
    node = node_ready()
    server = ServerProc(tmp_path / "data", "--token", TOKEN)
    try:
        for script in ("node_redis.js", "ioredis.js"):
            args = [node, str(NODE_DIR / script), server.host, str(server.port), "wrong"]
            proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
            assert proc.returncode != 0, proc.stdout
            assert "AUTH wrong token" in proc.stderr, proc.stderr
    finally:
        server.stop()
