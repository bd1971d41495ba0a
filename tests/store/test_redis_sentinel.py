"""The Redis store behind Redis Sentinel (``redis+sentinel://``), with ``?wait=1``.

A master and a replica (both ``appendfsync always``) and one Sentinel (quorum 1),
all of the test's own on free ports. Jobs are enqueued one call each, every one
acknowledged; then a failover (``SENTINEL FAILOVER``, or the master killed with -9
and started again later, when the Sentinel makes it a replica of the new master);
enqueues and claims go on through the StoreErrors of the switch, an enqueue sent
again under the same unique key until it is answered. Afterwards the new master
holds every acknowledged job exactly once (under its acknowledged id) and every
acknowledged completion, and the store events reach the other process again.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from distqueue.client.direct import is_store_url
from distqueue.errors import JobNotFound, LeaseLost, StoreError
from distqueue.jobs import JobSpec, JobState
from distqueue.store import open_store
from distqueue.store.redis import RedisStore, _sentinel_url, _split_options
from tests.redis_server import (
    free_port,
    redis_command,
    redis_url,
    start_redis,
    start_sentinel,
    wait_until,
)

#: every server: each write fsynced before Redis answers, a replica synced at once
SERVER = ("--appendonly", "yes", "--appendfsync", "always", "--repl-diskless-sync-delay", "0")
#: jobs enqueued before the failover, and through it
BEFORE, THROUGH = 300, 200
#: seconds any one thing may take before the test gives up
PATIENCE = 60.0


def test_sentinel_urls() -> None:
    hosts, name, options = _sentinel_url("redis+sentinel://:pw@h1:26380,h2/mymaster/3")
    assert hosts == [("h1", 26380), ("h2", 26379)] and name == "mymaster"
    assert options == {"username": None, "password": "pw", "db": 3}
    assert _split_options("redis://h:1/0?wait=2&socket_timeout=3&wait_timeout=50") == (
        "redis://h:1/0?socket_timeout=3", {"wait": "2", "wait_timeout": "50"},
    )  # fmt: skip
    for bad in ("redis+sentinel://h:1", "redis+sentinel://h:x/m", "redis+sentinel:///m"):
        with pytest.raises(ValueError):
            RedisStore(bad)
    with pytest.raises(ValueError, match="Cluster"):
        RedisStore("redis://h:1?wait=1", cluster=True)
    assert is_store_url("redis+sentinel://h:1/m") and not is_store_url("h:7700")


class Deployment:
    """A master, a replica and a Sentinel, each a process of this test's own."""

    def __init__(self) -> None:
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_port = free_port()
        ports = (self.master_port, self.replica_port, self.sentinel_port)
        self.dirs = {p: tempfile.mkdtemp(prefix="dq-sentinel-") for p in ports}
        self.procs: dict[int, Any] = {}
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel_port}/mymaster"

    def setup(self) -> None:
        self.start(self.master_port)
        self.start(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        wait_until(self.replicated, PATIENCE, "the replica to sync")
        self.procs[self.sentinel_port] = start_sentinel(
            self.sentinel_port, self.dirs[self.sentinel_port], self.master_port,
            down_after_ms=1000,  # on a busy machine, less sees a live master down
        )  # fmt: skip
        wait_until(
            lambda: any(r["port"] == str(self.replica_port) for r in self.sentinel_replicas()),
            PATIENCE, "the Sentinel to know the replica",
        )  # fmt: skip

    def start(self, port: int, *extra: str) -> None:
        self.procs[port] = start_redis(port, self.dirs[port], *SERVER, *extra)

    def link_up(self, port: int) -> bool:
        """Whether the server on port is a replica in sync with its master."""
        try:
            info = redis_command(port, "INFO", "replication")
        except Exception:
            return False
        return bool(info.get("master_link_status") == "up")

    def replicated(self) -> bool:
        """Whether a write to the master reaches the replica (after a full sync, a
        master streams nothing until the replica's first ack, up to a second later)."""
        import redis

        client = redis.Redis(port=self.master_port, socket_timeout=5)
        try:
            client.set("probe", 1)
            return bool(client.execute_command("WAIT", 1, 100) == 1)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def sentinel_replicas(self) -> list[dict[str, str]]:
        return list(redis_command(self.sentinel_port, "SENTINEL", "REPLICAS", "mymaster"))

    def master(self) -> int:
        _, port = redis_command(self.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                "mymaster")  # fmt: skip
        return int(port)

    def failovers(self) -> int:
        """The Sentinel's config epoch: how many failovers it made."""
        master = redis_command(self.sentinel_port, "SENTINEL", "MASTER", "mymaster")
        return int(master["config-epoch"])

    def failover(self) -> None:
        def asked() -> bool:
            answer = redis_command(self.sentinel_port, "SENTINEL", "FAILOVER", "mymaster")
            return bool(answer == "OK")

        wait_until(asked, PATIENCE, "the Sentinel to take the failover")  # NOGOODSLAVE at first

    def __repr__(self) -> str:
        """What the Sentinel and the servers say (for a failure's message)."""
        out = []
        for port, what in ((self.sentinel_port, "SENTINEL MASTER mymaster"),
                           (self.master_port, "INFO replication"),
                           (self.replica_port, "INFO replication")):  # fmt: skip
            try:
                out.append(f"{port} {what}: {redis_command(port, *what.split())}")
            except Exception as exc:
                out.append(f"{port} {what}: {exc!r}")
        return "\n".join(out)

    def restart_when_switched(self, old_master: int) -> None:
        wait_until(lambda: self.master() != old_master, PATIENCE, "the Sentinel's failover")
        self.start(old_master)

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def close(self) -> None:
        for port in list(self.procs):
            self.kill(port)


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    redis_url()  # skips (or fails under DISTQUEUE_REQUIRE_REDIS) without redis-server
    if shutil.which("redis-sentinel") is None and shutil.which("redis-server") is None:
        pytest.fail("neither redis-sentinel nor redis-server is installed")
    d = Deployment()
    try:
        d.setup()
        yield d
    finally:
        d.close()


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("how", ["sentinel-failover", "kill-master"])
async def test_a_failover_keeps_every_acknowledged_job(deployment: Deployment, how: str) -> None:
    url = deployment.url + "?wait=1"
    a = await open_store(url, prefix="s")
    b = await open_store(url, prefix="s")
    assert isinstance(a, RedisStore) and isinstance(b, RedisStore)
    seen_done: set[int] = set()
    watcher = asyncio.ensure_future(b.watch(lambda: None, seen_done.update))
    acked: dict[str, int] = {}  # unique key -> the id its enqueue was answered with
    completed: set[int] = set()  # ids whose completion was answered
    errors = 0

    async def enqueue(i: int) -> None:
        """One job, sent again under its unique key until it is answered."""
        nonlocal errors
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                [e] = await a.enqueue([JobSpec(type="t", args=i, unique_key=f"k{i}")], time.time())
            except StoreError:
                errors += 1
                assert time.monotonic() < deadline, f"job {i} never went through"
                await asyncio.sleep(0.05)
                continue
            assert acked.setdefault(f"k{i}", e.id) == e.id
            return

    async def work() -> None:
        """Claim a few jobs and complete them; a StoreError just skips a turn."""
        nonlocal errors
        try:
            for job in await a.claim("w", 3, time.time()):
                await a.complete(job.id, job.token, job.id, time.time())
                completed.add(job.id)
        except (StoreError, LeaseLost, JobNotFound):
            errors += 1

    try:
        for i in range(BEFORE):
            await enqueue(i)
            if i % 10 == 0:
                await work()
        assert errors == 0 and len(set(acked.values())) == BEFORE
        old_master = deployment.master()
        if how == "sentinel-failover":
            await in_thread(deployment.failover)
        else:
            deployment.kill(old_master)
            # once the replica is master, the old one comes back (from its append-only
            # file) and the Sentinel makes it the new master's replica; until then no
            # replica confirms a change (WAIT 1) and every change is refused
            restart = asyncio.ensure_future(in_thread(deployment.restart_when_switched,
                                                      old_master))  # fmt: skip
        switched = settled = False
        i = BEFORE
        deadline = time.monotonic() + 3 * PATIENCE
        while i < BEFORE + THROUGH or not settled:  # through the switch, and more
            await enqueue(i)
            await work()
            i += 1
            if i % 5 == 0 and not settled:
                # settled: after a failover (the Sentinel may even have switched back,
                # on a busy machine), a master whose replica, the other server, is in sync
                switched = switched or await in_thread(deployment.failovers) > 0
                master = await in_thread(deployment.master)
                other = ({deployment.master_port, deployment.replica_port} - {master}).pop()
                settled = switched and await in_thread(deployment.link_up, other)
            assert time.monotonic() < deadline, f"the failover did not settle: {deployment}"
        if how == "kill-master":
            await restart
        new_master = deployment.master()
        assert errors > 0  # the switch was felt

        # the events reach the other process again, through the new master
        deadline = time.monotonic() + PATIENCE
        while True:
            with contextlib.suppress(StoreError):
                [e] = await a.enqueue([JobSpec(type="marker")], time.time())
                [job] = await a.claim("w", 1, time.time(), types=["marker"])
                await a.complete(job.id, job.token, None, time.time())
                completed.add(job.id)
                await asyncio.sleep(0.3)
                if e.id in seen_done:
                    break
            assert time.monotonic() < deadline, "no store event arrived after the failover"
            await asyncio.sleep(0.2)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await a.close()
        await b.close()

    # straight on the new master: every acknowledged job once, under its id
    check = await open_store(f"redis://127.0.0.1:{new_master}/0", prefix="s")
    try:
        by_key: dict[str, list[int]] = {}
        before = None
        while page := await check.list(limit=1000, before=before):
            for job in page:
                if job.unique_key is not None:
                    by_key.setdefault(job.unique_key, []).append(job.id)
            before = page[-1].id
        assert len(acked) == i >= BEFORE + THROUGH
        lost = {k: i for k, i in acked.items() if k not in by_key}
        assert not lost, f"acknowledged jobs lost in the failover: {lost}"
        assert {k: by_key[k] for k in acked} == {k: [i] for k, i in acked.items()}
        for job_id in completed:
            done = await check.get(job_id)
            assert done is not None and done.state is JobState.SUCCEEDED, (job_id, done)
    finally:
        await check.close()
