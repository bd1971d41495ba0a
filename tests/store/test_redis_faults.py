"""The Redis store under faults, on redis-servers of the tests' own.

- Bounded work: each promote, expire, purge and filtered-list script call handles
  at most a batch (counted, not timed), and a claim walks only live (queue, type)
  pairs.
- An outage (Redis killed, or BUSY with a slow script) makes every store call
  raise StoreError, never a raw redis-py error; when Redis is back the same store
  works again by itself, its scripts loaded again after NOSCRIPT.
- No automatic retry of a script: a call whose reply timed out raises StoreError
  ("maybe") and the script runs at most once (redis-py's default retries would
  send it again: two jobs for one enqueue).
- A Redis that lost the store's data (FLUSHALL, or a restart without persistence)
  is refused with a clear StoreError and nothing changes, so no job id is handed
  out twice; a new process (a new store object) starts a new, empty store, which
  the running ones then adopt. Data an earlier version wrote (no epoch, bare ids
  in the lease and schedule sets, ready jobs in zsets scored priority * 2^48 + seq)
  is adopted and migrated, a bounded step at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from distqueue.errors import StoreError
from distqueue.jobs import JobError, JobSpec, JobState
from distqueue.policy import Retention
from distqueue.store import open_store
from distqueue.store import redis as redis_store
from distqueue.store.redis import (
    BATCH,
    CLAIM_BATCH,
    FORMAT,
    LIST_SCAN,
    SCRIPTS,
    VANISHED,
    RedisStore,
)
from tests.redis_server import free_port, redis_command, redis_url, start_redis, wait_until

S = JobState
T0 = 1_000_000.0
AOF = ("--appendonly", "yes", "--appendfsync", "always")
ERR = JobError(kind="Boom", message="it broke")
_PREFIXES = iter(range(1, 10**6))


class OwnRedis:
    """A redis-server of this test's own: killed, restarted (same port and files)."""

    def __init__(self, *extra: str) -> None:
        redis_url()  # skips (or fails under DISTQUEUE_REQUIRE_REDIS) without redis-server
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="dq-faults-")
        self.extra = extra
        self.proc = start_redis(self.port, self.directory, *extra)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.proc = start_redis(self.port, self.directory, *self.extra)

    def command(self, *args: Any) -> Any:
        return redis_command(self.port, *args)


async def in_thread(fn: Any, *args: Any) -> Any:
    """Run a blocking step (a restart) off the event loop, which meanwhile goes on and
    sees the store's connections close, as in any running process."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@pytest.fixture
def own() -> Iterator[Any]:
    started: list[OwnRedis] = []

    def start(*extra: str) -> OwnRedis:
        server = OwnRedis(*extra)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)  # if a test left it stopped
        server.kill()


async def shared_store() -> RedisStore:
    """A store of its own prefix on the session's redis-server."""
    store = await open_store(redis_url(), prefix=f"faults{os.getpid()}x{next(_PREFIXES)}")
    assert isinstance(store, RedisStore)
    return store


# -- bounded work ------------------------------------------------------------------------


def ints(values: list[Any]) -> list[int]:
    return [int(v) for v in values]


async def test_each_script_call_handles_at_most_a_batch() -> None:
    store = await shared_store()
    try:
        n = 2 * BATCH + 200
        ids = [e.id for e in await store.enqueue(
            [JobSpec(type="t", run_at=T0 + 5) for _ in range(n)], T0)]  # fmt: skip
        # one call of the promote script: the first batch, in id order, and no more
        assert ints(await store._run("promote", repr(T0 + 5), BATCH)) == ids[:BATCH]
        assert (await store.stats()).by_state["scheduled"] == n - BATCH
        assert await store.promote(T0 + 5) == ids[BATCH:]
        while await store.claim("w", 500, T0 + 5, lease=10):
            pass
        # expire: one call, one batch
        assert ints(await store._run("expire", repr(T0 + 20), 3, BATCH)) == ids[:BATCH]
        assert (await store.stats()).by_state["running"] == n - BATCH
        assert await store.expire(T0 + 20) == ids[BATCH:]
        # purge: one call deletes a batch
        while jobs := await store.claim("w", 500, T0 + 20):
            await store.complete_many([(j.id, j.token, None) for j in jobs], T0 + 20)
        r = Retention(succeeded=1, failed=1)
        ok_before, failed_before = repr(T0 + 30 - r.succeeded), repr(T0 + 30 - r.failed)
        assert await store._run("purge", ok_before, failed_before, BATCH) == BATCH
        assert sum((await store.stats()).by_state.values()) == n - BATCH
        assert await store.sweep(T0 + 30, r) == n - BATCH
        # a filtered list: one call looks at LIST_SCAN ids at most, and says where
        # to go on
        [rare] = [e.id for e in await store.enqueue([JobSpec(type="rare")], T0)]
        common = [e.id for e in await store.enqueue(
            [JobSpec(type="common") for _ in range(LIST_SCAN + 10)], T0)]  # fmt: skip
        found, cursor = await store._run("list", "", "", "rare", 10, "", LIST_SCAN)
        assert found == [] and int(cursor) == common[-LIST_SCAN]
        assert [j.id for j in await store.list(type="rare")] == [rare]
    finally:
        await store.close()


async def test_a_big_claim_takes_several_calls() -> None:
    """A claim of more than CLAIM_BATCH jobs calls the script again; should a later
    call fail, the jobs the earlier ones leased are returned (up to n), not lost."""
    store = await shared_store()
    run = store._run
    sizes: list[int] = []
    fail_after: list[int] = []

    async def counted(name: str, *args: Any) -> Any:
        if name == "claim" and fail_after and len(sizes) >= fail_after[0]:
            raise StoreError("redis: down (a test's)")
        answer = await run(name, *args)
        if name == "claim":
            sizes.append(len(answer))
        return answer

    try:
        n = 2 * CLAIM_BATCH + 10
        ids = [e.id for e in await store.enqueue([JobSpec(type="t")] * (2 * n), T0)]
        store._run = counted  # type: ignore[method-assign]
        assert [j.id for j in await store.claim("w", n, T0)] == ids[:n]
        assert sizes == [CLAIM_BATCH, CLAIM_BATCH, 10]
        sizes.clear()
        fail_after.append(1)
        assert [j.id for j in await store.claim("w", n, T0)] == ids[n : n + CLAIM_BATCH]
        fail_after[0] = 0
        with pytest.raises(StoreError):
            await store.claim("w", n, T0)  # nothing leased: the error is the answer
    finally:
        del store._run
        await store.close()


async def test_a_claim_walks_only_live_pairs() -> None:
    store = await shared_store()
    pairs = store._key("pairs")
    try:
        await store.enqueue([JobSpec(type=f"t{i}", queue=f"q{i % 5}") for i in range(50)], T0)
        assert await store._redis.scard(pairs) == 50
        await store.claim("w", 10, T0, queues=["q1", "q2"], types=["t1", "t2", "t11"])
        # t1, t11 (queue q1) and t2 (q2) are empty now: their pairs are gone
        assert await store._redis.scard(pairs) == 47
        assert len(await store.claim("w", 100, T0)) == 47
        assert await store._redis.scard(pairs) == 0  # every ready zset is empty
        [job_id] = [e.id for e in await store.enqueue([JobSpec(type="t7")], T0)]
        assert await store._redis.smembers(pairs) == {b"default\tt7"}
        # a pair an earlier version left behind is dropped by the next claim that sees it
        await store._redis.sadd(pairs, "default\tghost")
        assert [j.id for j in await store.claim("w", 5, T0)] == [job_id]
        assert await store._redis.scard(pairs) == 0
    finally:
        await store.close()


# -- outages ---------------------------------------------------------------------------


async def every_call(store: RedisStore, job_id: int, token: int) -> dict[str, Any]:
    """Each Store method once: its name -> what it returned or raised."""
    calls: dict[str, Any] = {
        "enqueue": lambda: store.enqueue([JobSpec(type="t")], T0),
        "claim": lambda: store.claim("w2", 1, T0),
        "complete": lambda: store.complete(job_id, token, None, T0),
        "complete_many": lambda: store.complete_many([(job_id, token, None)], T0),
        "fail": lambda: store.fail(job_id, token, ERR, T0),
        "progress": lambda: store.progress(job_id, token, 5, "x", T0),
        "heartbeat": lambda: store.heartbeat("w", T0),
        "expire": lambda: store.expire(T0),
        "release": lambda: store.release("nobody", T0),
        "promote": lambda: store.promote(T0),
        "next_wakeup": lambda: store.next_wakeup(),
        "cancel": lambda: store.cancel(job_id + 1, T0),
        "retry": lambda: store.retry(job_id + 1, T0),
        "get": lambda: store.get(job_id),
        "list": lambda: store.list(),
        "list filtered": lambda: store.list(type="t"),
        "stats": lambda: store.stats(),
        "purge": lambda: store.sweep(T0),
        "delete": lambda: store.delete(job_id),
        "note_types": lambda: store.note_types(["t"], T0),
        "known_types": lambda: store.known_types(),
    }
    out: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            out[name] = await call()
        except Exception as exc:
            out[name] = exc
    return out


async def test_every_call_in_an_outage_is_a_store_error_and_redis_back_works(own: Any) -> None:
    server = own(*AOF)
    store = await open_store(server.url, prefix="out")
    assert isinstance(store, RedisStore)
    try:
        await store.enqueue([JobSpec(type="t"), JobSpec(type="t")], T0)
        [job] = await store.claim("w", 1, T0)
        await in_thread(server.kill)
        for name, answer in (await every_call(store, job.id, job.token)).items():
            assert isinstance(answer, StoreError), f"{name} during the outage: {answer!r}"
        await in_thread(server.restart)  # from its append-only file; no scripts cached
        shas = [s.sha for s in store._scripts.values()]
        assert server.command("SCRIPT", "EXISTS", *shas) == [0] * len(SCRIPTS)
        # the same store object works again: scripts loaded again after NOSCRIPT
        [again] = await store.enqueue([JobSpec(type="t")], T0)
        assert again.id == 3 and again.created  # ids go on: nothing was lost
        beat = await store.heartbeat("w", T0)
        assert beat.held == {job.id: job.token}
        await store.complete(job.id, job.token, "done", T0)
        done = await store.get(job.id)
        assert done is not None and done.state is S.SUCCEEDED and done.result == "done"
        assert [j.id for j in await store.claim("w", 5, T0)] == [2, 3]
        assert (await store.stats()).by_state["running"] == 2
        assert [j.id for j in await store.list(type="t")] == [3, 2, 1]
        # and after a SCRIPT FLUSH alone
        server.command("SCRIPT", "FLUSH")
        assert await store.release("w", T0) == [2, 3]
    finally:
        await store.close()


async def test_a_busy_redis_is_a_store_error(own: Any) -> None:
    """A script of someone else's that runs too long: Redis answers BUSY to all."""
    server = own("--busy-reply-threshold", "50")
    store = await open_store(server.url, prefix="busy")
    assert isinstance(store, RedisStore)
    hog = redis.Redis(port=server.port, socket_timeout=60)
    try:
        [job] = await store.enqueue([JobSpec(type="t")], T0)
        loop = asyncio.get_running_loop()
        stuck = loop.run_in_executor(None, lambda: hog.eval("while true do end", 0))

        def busy() -> bool:
            try:
                server.command("PING")
            except redis.exceptions.ResponseError as exc:
                return "BUSY" in str(exc)
            return False

        await in_thread(wait_until, busy, 30, "Redis to answer BUSY")
        for name, answer in (await every_call(store, job.id, 1)).items():
            assert isinstance(answer, StoreError), f"{name} while Redis is busy: {answer!r}"
            assert "BUSY" in str(answer)
        server.command("SCRIPT", "KILL")
        with pytest.raises(redis.exceptions.ResponseError):
            await stuck
        assert [j.id for j in await store.claim("w", 1, T0)] == [job.id]
    finally:
        hog.close()
        await store.close()


async def test_a_script_is_never_sent_twice(own: Any) -> None:
    """Redis frozen (SIGSTOP) while an enqueue waits for its reply; it resumes after
    the reply timed out. redis-py's default retry would send the script again on a
    new connection, and both would run: two jobs for one enqueue. Ours raises
    StoreError ("maybe") and the script runs at most once."""
    server = own()
    store = await open_store(server.url + "?socket_timeout=0.5", prefix="once")
    assert isinstance(store, RedisStore)
    try:
        await store.enqueue([JobSpec(type="t")], T0)  # the script is loaded
        os.kill(server.proc.pid, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        resume = loop.call_later(2.0, os.kill, server.proc.pid, signal.SIGCONT)
        try:
            answer: Any = await store.enqueue([JobSpec(type="t")], T0)
        except StoreError as exc:
            answer = exc
        finally:
            await asyncio.sleep(2.5)
            resume.cancel()
            os.kill(server.proc.pid, signal.SIGCONT)
        await in_thread(wait_until, lambda: server.command("PING"), 20, "Redis to answer")
        jobs = sum((await store.stats()).by_state.values()) - 1
        assert jobs <= 1, f"one enqueue made {jobs} jobs"
        if not isinstance(answer, StoreError):
            assert jobs == 1 and answer[0].id == 2
    finally:
        await store.close()


async def test_wait_for_replicas_that_are_not_there(own: Any) -> None:
    """``?wait=1`` on a Redis without replicas: every change is made on the master but
    not confirmed by a replica, so it is answered with StoreError ("maybe"); reads
    and the read-only list script do not wait."""
    server = own()
    url = server.url + "?wait=1&wait_timeout=50"
    with pytest.raises(StoreError, match="0 of 1 replicas"):
        await open_store(url, prefix="wait")  # a new store: its epoch is a change too
    await (await open_store(server.url, prefix="wait")).close()
    store = await open_store(url, prefix="wait")  # an existing one: nothing to wait for
    assert isinstance(store, RedisStore) and store.wait == 1
    try:
        with pytest.raises(StoreError, match="0 of 1 replicas"):
            await store.enqueue([JobSpec(type="t", unique_key="k")], T0)
        assert [j.unique_key for j in await store.list()] == ["k"]  # it is on the master
        with pytest.raises(StoreError, match="replicas"):
            await store.claim("w", 1, T0)
        job = await store.get(1)
        assert job is not None and job.state is S.RUNNING
    finally:
        await store.close()


# -- a Redis that lost its data ----------------------------------------------------------


def vanished_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "vanished" in r.getMessage()]


async def refuses_everything(store: RedisStore, job_id: int, token: int) -> None:
    """Every state-changing call raises the vanished-data StoreError."""
    answers = await every_call(store, job_id, token)
    for name in ("enqueue", "claim", "complete", "complete_many", "fail", "progress",
                 "heartbeat", "expire", "release", "promote", "cancel", "retry", "purge",
                 "delete", "note_types"):  # fmt: skip
        answer = answers[name]
        assert isinstance(answer, StoreError) and str(answer) == VANISHED, (name, answer)


async def test_flushall_under_a_running_store(own: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = own()
    a = await open_store(server.url, prefix="e")
    assert isinstance(a, RedisStore)
    b = None
    try:
        ids = [e.id for e in await a.enqueue([JobSpec(type="t") for _ in range(5)], T0)]
        assert ids == [1, 2, 3, 4, 5]
        [job] = await a.claim("w", 1, T0)
        server.command("FLUSHALL")
        caplog.set_level(logging.WARNING, logger="distqueue.store")
        for _ in range(3):
            await refuses_everything(a, job.id, job.token)
        assert server.command("DBSIZE") == 0  # nothing changed, no id handed out
        assert len(vanished_logs(caplog)) == 1  # said once, not per call
        # a process restarted: a new store object starts a new, empty store
        b = await open_store(server.url, prefix="e")
        [first] = await b.enqueue([JobSpec(type="t")], T0)
        assert first.id == 1 and first.created
        # and the running one goes on with that one (warning once)
        caplog.clear()
        [second] = await a.enqueue([JobSpec(type="t")], T0)
        assert second.id == 2
        assert [r for r in caplog.records if "epoch changed" in r.getMessage()]
        assert [j.id for j in await b.claim("w", 5, T0)] == [1, 2]
    finally:
        await a.close()
        if b is not None:
            await b.close()


async def test_redis_restarted_without_its_data(own: Any) -> None:
    server = own()  # no persistence: a restart comes back empty
    a = await open_store(server.url, prefix="r")
    assert isinstance(a, RedisStore)
    try:
        assert [e.id for e in await a.enqueue([JobSpec(type="t")] * 3, T0)] == [1, 2, 3]
        [job] = await a.claim("w", 1, T0)
        await in_thread(server.restart)
        await refuses_everything(a, job.id, job.token)
        assert server.command("DBSIZE") == 0
    finally:
        await a.close()
    b = await open_store(server.url, prefix="r")  # the process restarted
    try:
        [again] = await b.enqueue([JobSpec(type="t")], T0)
        assert again.id == 1 and again.created  # a new, empty store
    finally:
        await b.close()


async def test_an_earlier_versions_data_is_adopted_and_migrated() -> None:
    """Data written before epochs and padded ids: no P:epoch, no P:format, bare ids
    in P:scheduled and P:leases, dead pairs in P:pairs."""
    a = await shared_store()
    prefix = a.prefix[1:-1]
    raw = a._redis
    try:
        # odd ids due at one instant, even ones leased until one: "11" sorts before "3"
        ids = [e.id for e in await a.enqueue(
            [JobSpec(type="t", run_at=T0 + 5 if i % 2 == 0 else None) for i in range(24)],
            T0)]  # fmt: skip
        due, running = ids[0::2], ids[1::2]
        assert [j.id for j in await a.claim("w", 12, T0, lease=10)] == running
        await raw.delete(a._key("epoch"), a._key("format"))
        for key in ("scheduled", "leases"):
            members = await raw.zrange(a._key(key), 0, -1, withscores=True)
            await raw.delete(a._key(key))
            await raw.zadd(a._key(key), {m.lstrip(b"0"): score for m, score in members})
        await raw.sadd(a._key("pairs"), "default\tghost")
    finally:
        await a.close()
    b = await open_store(redis_url(), prefix=prefix)
    assert isinstance(b, RedisStore)
    try:
        assert await b._redis.get(b._key("format")) == FORMAT
        assert await b._redis.get(b._key("epoch")) == b._epoch.encode()
        members = await b._redis.zrange(b._key("leases"), 0, -1)
        assert members == [b"%020d" % i for i in running]
        # jobs due at the same instant in id order (9 before 10, ...)
        assert await b.promote(T0 + 5) == due
        assert await b.expire(T0 + 10) == running
        assert [j.id for j in await b.claim("w", 30, T0 + 10)] == due + running
        assert await b._redis.scard(b._key("pairs")) == 0
    finally:
        await b.close()


async def format_2(store: RedisStore) -> list[tuple[int, int, int]]:
    """Rewrite the store's ready jobs as a version before key format 3 kept them: a
    zset P:ready:<pair> of ids scored priority * 2^48 + seq, no P:line, P:queued_at or
    line fields, P:format '2'. Returns the (priority, seq, id) of every ready job."""
    raw = store._redis
    parked = [k for k in await raw.hkeys(store._key("parked")) if not k.startswith(b"#")]
    ready = []
    for pair in {*await raw.smembers(store._key("pairs")), *parked}:
        line = store._key("line").encode() + b":" + pair
        old = store._key("ready").encode() + b":" + pair
        for member in await raw.zrange(line, 0, -1):
            prio, seq, job_id = int(member[:8], 16), int(member[8:22], 16), int(member[22:])
            assert prio <= 10  # what such a version could hold
            await raw.zadd(old, {str(job_id): prio * 2**48 + seq})
            await raw.hdel(store._key("job", str(job_id)), "line")
            ready.append((prio, seq, job_id))
        await raw.delete(line)
    await raw.delete(store._key("queued_at"))
    await raw.set(store._key("format"), b"2")
    return sorted(ready)


async def test_a_format_2_store_is_migrated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ready zsets of format 2 become lines, a bounded step at a time (here 3 jobs
    a call, across pairs): same order, counts and oldest; a parked pair too."""
    a = await shared_store()
    prefix = a.prefix[1:-1]
    try:
        [first] = await a.enqueue([JobSpec(type="t", priority=7)], T0 - 100)
        ids = [e.id for e in await a.enqueue(
            [JobSpec(type=t, queue=q, priority=p)
             for t, q, p in [("t", "default", 5), ("t", "default", 0), ("u", "default", 10),
                             ("t", "default", 5), ("u", "default", 0), ("t", "q2", 3),
                             ("t", "q2", 5), ("t", "default", 0), ("u", "default", 5)]],
            T0)]  # fmt: skip
        [job] = await a.claim("w", 1, T0 + 10, types=["t"], queues=["default"])
        assert job.id == ids[1]
        assert await a.release("w", T0 + 50) == [job.id]  # queued again behind ids[7]
        await a.pause("q2", True)
        assert [j.id for j in await a.claim("w", 1, T0 + 60, types=["u"])] == [ids[4]]
        await a.claim("w", 1, T0 + 60, queues=["q2"])  # parks q2's pair
        assert await a._redis.hexists(a._key("parked"), "q2\tt")
        before = await a.stats()
        ready = await format_2(a)
        assert len(ready) == 9
    finally:
        await a.close()
    monkeypatch.setattr(redis_store, "MIGRATE_SCAN", 3)
    b = await open_store(redis_url(), prefix=prefix)
    assert isinstance(b, RedisStore)
    try:
        raw = b._redis
        assert await raw.get(b._key("format")) == FORMAT
        for pair in (b"default\tt", b"default\tu", b"q2\tt"):
            assert not await raw.exists(b._key("ready").encode() + b":" + pair)
        after = await b.stats()
        assert after.queued_by_priority == before.queued_by_priority
        assert after.oldest_queued_at == before.oldest_queued_at == T0 - 100
        # a job queued now goes behind the migrated ones of its priority
        [late] = await b.enqueue([JobSpec(type="t", priority=5)], T0 + 70)
        assert await b.cancel(ids[3], T0 + 80) is S.CANCELLED  # a migrated job
        await b.pause("q2", False)
        order = [ids[7], ids[1], ids[5], ids[0], ids[6], ids[8], late.id, first.id, ids[2]]
        assert [i for _, _, i in ready if i != ids[3]] == [i for i in order if i != late.id]
        assert [j.id for j in await b.claim("w", 20, T0 + 90)] == order
        assert (await b.stats()).oldest_queued_at is None
    finally:
        await b.close()


async def test_a_newer_format_is_refused() -> None:
    a = await shared_store()
    prefix = a.prefix[1:-1]
    await a._redis.set(a._key("format"), b"9")
    await a.close()
    with pytest.raises(StoreError, match="newer than this distqueue"):
        await open_store(redis_url(), prefix=prefix)
