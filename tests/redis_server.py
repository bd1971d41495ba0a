"""One redis-server of the tests' own, on a free port, for the whole session.

Never anyone else's Redis. When redis-server is missing, the redis parameters
skip with one clear line, unless DISTQUEUE_REQUIRE_REDIS=1 (as .ci/run sets):
then they fail, so CI cannot skip them silently.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytest

_url: str | None = None
_proc: subprocess.Popen[bytes] | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too.

    An ephemeral port from the kernel is often above 55535, where the bus port
    would not exist and redis-server refuses to start. Both are taken below the
    kernel's ephemeral range (32768 on): the many connections of tests running in
    parallel cannot take them between this probe and the server's start.
    """
    rng = random.Random()
    while True:
        port = rng.randrange(10000, 22768)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


def start_redis(port: int, directory: str, *extra: str) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:port, its files in directory; waits until it answers."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
         "--save", "", "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # up (a password set)
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)


def redis_url() -> str:
    """The session's redis-server (started on first use)."""
    global _url, _proc
    if _url is None:
        if shutil.which("redis-server") is None:
            message = "redis-server is not installed: the redis store tests cannot run"
            if os.environ.get("DISTQUEUE_REQUIRE_REDIS") == "1":
                pytest.fail(message + " (DISTQUEUE_REQUIRE_REDIS=1)")
            pytest.skip(message)
        port = free_port()
        _proc = start_redis(port, tempfile.mkdtemp(prefix="dq-redis-"))
        atexit.register(_proc.kill)
        _url = f"redis://127.0.0.1:{port}/0"
    return _url


_cluster_url: str | None = None


def redis_cluster_url() -> str:
    """The session's 3-master Redis Cluster (started on first use), as a store URL."""
    global _cluster_url
    if _cluster_url is None:
        redis_url()  # the same skip-or-fail rule
        if shutil.which("redis-cli") is None:
            pytest.fail("redis-cli is missing: cannot create the test cluster")
        ports: list[int] = []
        tries = 0
        while len(ports) < 3:
            port = free_cluster_port()
            if port in ports:
                continue
            try:
                proc = start_redis(port, tempfile.mkdtemp(prefix="dq-cluster-"),
                                   "--cluster-enabled", "yes", "--cluster-config-file",
                                   f"nodes-{port}.conf")  # fmt: skip
            except RuntimeError:  # taken since the probe (another test's server): again
                tries += 1
                if tries > 10:
                    raise
                continue
            atexit.register(proc.kill)
            ports.append(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:  # until every node sees every slot served (our clients do not retry)
            infos = [
                subprocess.run(
                    ["redis-cli", "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                ).stdout
                for port in ports
            ]
            info = "\n".join(infos)
            if all("cluster_state:ok" in i for i in infos):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test cluster did not come up: {info}")
            time.sleep(0.1)
        _cluster_url = f"redis+cluster://127.0.0.1:{ports[0]}"
    return _cluster_url


# -- helpers for fault tests: every process here is the caller's own, on a free port --


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    """Call ``check`` until it is true; RuntimeError naming ``what`` after ``timeout``
    seconds. Errors from ``check`` count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def redis_command(port: int, *args: str | int | float) -> Any:
    """One command to 127.0.0.1:port (redis-py, a connection of its own); its reply."""
    import redis

    client = redis.Redis(port=port, socket_timeout=5, decode_responses=True)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def sentinel_binary() -> list[str]:
    """How to start a Sentinel: Debian's redis-sentinel, else redis-server --sentinel."""
    found = shutil.which("redis-sentinel")
    return [found] if found else ["redis-server"]


def start_sentinel(
    port: int,
    directory: str,
    master_port: int,
    *,
    name: str = "mymaster",
    down_after_ms: int = 500,
    failover_timeout_ms: int = 5000,
) -> subprocess.Popen[bytes]:
    """A Redis Sentinel on 127.0.0.1:port watching the master on master_port (quorum
    1: it alone decides a failover); waits until it answers and names the master."""
    conf = os.path.join(directory, f"sentinel-{port}.conf")
    with open(conf, "w") as f:
        f.write(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {name} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
    binary = sentinel_binary()
    argv = [*binary, conf] + (["--sentinel"] if binary == ["redis-server"] else [])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(
            lambda: redis_command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
            == ["127.0.0.1", str(master_port)],
            20, f"the sentinel on port {port}",
        )  # fmt: skip
    except RuntimeError:
        proc.kill()
        raise
    return proc
