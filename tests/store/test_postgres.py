"""The PostgreSQL store's own tests (the contract suites run on it from tests/contract):
transactional enqueue on the application's connection, migrations up and down,
several stores sharing one schema, URL options and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from distqueue.errors import InvalidJob, QueueFull, StoreError
from distqueue.jobs import JobError, JobSpec, JobState
from distqueue.store import Store, open_store
from distqueue.store.base import Limit
from tests.postgres_server import drop_schema, new_schema, postgres_url

psycopg = pytest.importorskip("psycopg")

from distqueue.postgres import enqueue, enqueue_async  # noqa: E402
from distqueue.store.postgres import PostgresStore, migrate, migrations  # noqa: E402

S = JobState
T0 = 1_000_000.0


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = new_schema("pg")
    yield name
    drop_schema(name)


@pytest.fixture
async def pg(schema: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(postgres_url(), schema=schema)
    yield store
    await store.close()


def app_conn() -> Any:
    """An application's own connection (not the store's)."""
    return psycopg.connect(postgres_url())


# -- transactional enqueue ------------------------------------------------------------------


async def test_a_rolled_back_transaction_leaves_no_job(pg: PostgresStore, schema: str) -> None:
    with app_conn() as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        with conn.transaction():
            conn.execute("INSERT INTO orders VALUES (1)")
            got = enqueue(conn, JobSpec(type="ship", args={"order": 1}), schema=schema, now=T0)
            assert got.created and got.state is S.QUEUED
            # not visible to the store before the commit
            assert await pg.get(got.id) is None
            assert await pg.claim("w", 10, T0) == []
            raise psycopg.Rollback()  # the application changes its mind
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    assert await pg.get(got.id) is None
    assert await pg.claim("w", 10, T0) == []
    stats = await pg.stats()
    assert sum(stats.by_state.values()) == 0 and stats.totals["submitted"] == 0


async def test_a_committed_transaction_makes_a_claimable_job(
    pg: PostgresStore, schema: str
) -> None:
    with app_conn() as conn:
        with conn.transaction():
            [a, b] = enqueue(conn, [JobSpec(type="ship", args=[1]), JobSpec(type="ship")],
                             schema=schema, now=T0)  # fmt: skip
        assert (a.created, b.created) and b.id > a.id
    jobs = await pg.claim("w", 10, T0)
    assert [j.id for j in jobs] == [a.id, b.id] and jobs[0].args == [1]
    await pg.complete(a.id, jobs[0].token, "done", T0)
    stats = await pg.stats()
    assert stats.by_state["running"] == 1 and stats.by_state["succeeded"] == 1
    assert stats.totals["submitted"] == 2


async def test_async_twin_and_autocommit(pg: PostgresStore, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url()) as conn:
        async with conn.transaction():
            first = await enqueue_async(conn, JobSpec(type="t", unique_key="k"), schema=schema)
            again = await enqueue_async(conn, [JobSpec(type="t", unique_key="k")], schema=schema)
            assert again == [dataclass_copy(first, created=False)]
            assert await pg.get(first.id) is None
        committed = await pg.get(first.id)
        assert committed is not None and committed.state is S.QUEUED
        assert committed.unique_key == "k"
    # a connection in autocommit mode: the enqueue is its own transaction
    async with await psycopg.AsyncConnection.connect(postgres_url(), autocommit=True) as conn:
        late = await enqueue_async(conn, JobSpec(type="t", run_at=T0 + 60), schema=schema, now=T0)
        assert late.state is S.SCHEDULED
    assert await pg.promote(T0 + 60) == [late.id]


def dataclass_copy(e: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(e, **changes)


async def test_a_refused_enqueue_leaves_the_application_transaction_usable(
    pg: PostgresStore, schema: str
) -> None:
    await pg.set_limit(Limit(scope="queue", name="q", max_depth=1))
    with app_conn() as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        with conn.transaction():
            conn.execute("INSERT INTO orders VALUES (1)")
            enqueue(conn, JobSpec(type="t", queue="q"), schema=schema)
            with pytest.raises(QueueFull):
                enqueue(conn, JobSpec(type="t", queue="q"), schema=schema)
            with pytest.raises(InvalidJob):
                enqueue(conn, JobSpec(type="t", after=(999_999,)), schema=schema)
            conn.execute("INSERT INTO orders VALUES (2)")  # the transaction goes on
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
    assert (await pg.stats()).by_queue == {"q": {"queued": 1}}


async def test_the_commit_wakes_a_watching_store(pg: PostgresStore, schema: str) -> None:
    ready = asyncio.Event()
    watcher = asyncio.ensure_future(pg.watch(ready.set, lambda ids: None))
    try:
        await asyncio.wait_for(ready.wait(), 10)  # listening
        ready.clear()
        conn = await psycopg.AsyncConnection.connect(postgres_url())
        async with conn, conn.transaction():
            await enqueue_async(conn, JobSpec(type="t"), schema=schema)
            await asyncio.sleep(0.2)
            assert not ready.is_set()  # nothing before the commit
        await asyncio.wait_for(ready.wait(), 10)
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


# -- migrations -------------------------------------------------------------------------------


async def test_migrations_go_down_and_up_again(schema: str) -> None:
    latest = migrations()[-1].version
    async with await psycopg.AsyncConnection.connect(postgres_url(), autocommit=True) as conn:
        assert await migrate(conn, schema) == [
            f"applied {m.version:04d}_{m.name}" for m in migrations()
        ]
        assert await migrate(conn, schema) == []  # nothing pending
        store = await PostgresStore.open(postgres_url(), schema=schema, migrate=False)
        await store.enqueue([JobSpec(type="t")], T0)
        await store.close()
        assert await migrate(conn, schema, to=0) == [
            f"reverted {m.version:04d}_{m.name}" for m in reversed(migrations())
        ]
        cur = await conn.execute("SELECT to_regclass(%s)", (f"{schema}.jobs",))
        assert await cur.fetchone() == (None,)
        with pytest.raises(StoreError, match="distqueue migrate"):
            await PostgresStore.open(postgres_url(), schema=schema, migrate=False)
        assert len(await migrate(conn, schema, to=latest)) == latest
    store = await PostgresStore.open(postgres_url() + f"?schema={schema}&migrate=off")
    # the migrated-again schema is empty: the job enqueued before the revert went with it
    assert sum((await store.stats()).by_state.values()) == 0
    await store.close()


async def test_wide_priorities_go_down_only_once_finished(pg: PostgresStore, schema: str) -> None:
    """Version 3 (priorities up to 2**32-1) goes down to 2 (smallint) only when no job
    still to run holds a priority above 32767; finished ones are clamped. A store open
    meanwhile goes on (its prepared statements, made stale, are made again)."""
    top = 2**32 - 1
    queued, done, small = [
        e.id for e in await pg.enqueue([JobSpec(type="t", priority=p) for p in (top, 40000, 7)], T0)
    ]  # fmt: skip
    assert await pg.cancel(done, T0) is S.CANCELLED

    async def read_small() -> None:  # (often enough for psycopg to prepare the statement)
        for _ in range(8):
            job = await pg.get(small)
            assert job is not None and job.priority == 7 and job.state is S.QUEUED

    async def version() -> Any:
        cur = await conn.execute(f"SELECT max(version) FROM {schema}.migrations")
        return await cur.fetchone()

    await read_small()
    latest = migrations()[-1].version
    async with await psycopg.AsyncConnection.connect(postgres_url(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match=r"above 32767.*\(1 queued\)"):
            await migrate(conn, schema, to=2)
        assert await version() == (latest,)  # nothing changed
        assert (await pg.stats()).queued_by_priority == {top: 1, 7: 1}
        assert await pg.cancel(queued, T0) is S.CANCELLED
        assert (await migrate(conn, schema, to=2))[-1] == "reverted 0003_wide_priorities"
        assert await version() == (2,)
        cur = await conn.execute(
            f"SELECT id, priority, pg_typeof(priority)::text FROM {schema}.jobs ORDER BY id"
        )
        assert await cur.fetchall() == [
            (queued, 32767, "smallint"), (done, 32767, "smallint"), (small, 7, "smallint"),
        ]  # fmt: skip
        await read_small()
        assert (await migrate(conn, schema))[0] == "applied 0003_wide_priorities"
        assert await version() == (latest,)
    await read_small()
    assert (await pg.stats()).queued_by_priority == {7: 1}


async def test_counters_of_emptied_priorities_go(
    pg: PostgresStore, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A priority's counter ('p:<priority>' rows) goes once no job is queued at it
    (promote deletes it, a bounded step at a time): of 2**32 priorities, the rows of
    every one ever used would pile up, and stats reads them all."""
    import distqueue.store.postgres as pg_module

    monkeypatch.setattr(pg_module, "COMPACT_ROWS", 40)  # (many steps, over several promotes)
    top = 2**32 - 1
    gone = [1000 + i * 7919 for i in range(300)]
    await pg.enqueue([JobSpec(type="t", priority=p) for p in gone], T0)
    await pg.enqueue([JobSpec(type="t", priority=p) for p in (top, top - 1)], T0)
    assert len(await pg.claim("w", 300, T0)) == 300

    async def priority_keys() -> set[str]:
        async with await psycopg.AsyncConnection.connect(postgres_url()) as conn:
            cur = await conn.execute(
                f"SELECT DISTINCT key FROM {schema}.counts WHERE key LIKE 'p:%'"
            )
            return {key for (key,) in await cur.fetchall()}

    assert len(await priority_keys()) == 302
    for _ in range(20):
        assert await pg.promote(T0) == []
        if len(await priority_keys()) == 2:
            break
    assert await priority_keys() == {f"p:{top}", f"p:{top - 1}"}
    assert (await pg.stats()).queued_by_priority == {top: 1, top - 1: 1}
    # a priority used again counts from 0 again
    await pg.enqueue([JobSpec(type="t", priority=gone[7])], T0)
    assert (await pg.stats()).queued_by_priority == {top: 1, top - 1: 1, gone[7]: 1}
    assert [j.priority for j in await pg.claim("w", 3, T0)] == [gone[7], top - 1, top]
    assert (await pg.stats()).queued_by_priority == {}


async def test_servers_starting_together_migrate_once(schema: str) -> None:
    stores = await asyncio.gather(
        *(PostgresStore.open(postgres_url(), schema=schema) for _ in range(4))
    )
    async with await psycopg.AsyncConnection.connect(postgres_url()) as conn:
        cur = await conn.execute(f"SELECT count(*) FROM {schema}.migrations")
        assert await cur.fetchone() == (len(migrations()),)
    for store in stores:
        await store.close()


# -- several stores on one schema ---------------------------------------------------------------


async def test_stores_sharing_a_schema_never_share_a_job(pg: PostgresStore, schema: str) -> None:
    others = [await PostgresStore.open(postgres_url(), schema=schema) for _ in range(3)]
    stores: list[Store] = [pg, *others]
    try:
        n = 1200
        for i in range(0, n, 400):
            await pg.enqueue([JobSpec(type="t", args=[j]) for j in range(i, i + 400)], T0)
        claimed: list[int] = []

        async def work(store: Store, worker: str) -> None:
            while True:
                jobs = await store.claim(worker, 13, T0, lease=600)
                if not jobs:
                    return
                claimed.extend(j.id for j in jobs)
                errors = await store.complete_many([(j.id, j.token, None) for j in jobs], T0)
                assert errors == [None] * len(jobs)

        await asyncio.gather(*(work(stores[i % 4], f"w{i}") for i in range(12)))
        assert len(claimed) == len(set(claimed)) == n
        stats = await others[0].stats()
        assert stats.by_state["succeeded"] == n and stats.totals["succeeded"] == n
        assert stats.by_state["queued"] == stats.by_state["running"] == 0
    finally:
        for store in others:
            await store.close()


async def test_beats_and_expires_racing_across_stores_lose_nothing_early_or_twice(
    pg: PostgresStore, schema: str
) -> None:
    """A heartbeat writes one lease row per worker; expires on other stores hand the
    jobs that outlive their own lease over to that row and take them back when it ends.
    Run both at once, from several stores, and check the lease holds exactly."""
    others = [await PostgresStore.open(postgres_url(), schema=schema) for _ in range(2)]
    try:
        n = 300
        await pg.enqueue([JobSpec(type="t", args=[i]) for i in range(n)], T0)
        workers = [f"w{i}" for i in range(6)]
        held: dict[str, dict[int, int]] = {}
        for k, w in enumerate(workers):  # claimed at T0 .. T0+5, leases of 10 s
            jobs = await pg.claim(w, n // len(workers), T0 + k, lease=10)
            held[w] = {j.id: j.token for j in jobs}
        assert sum(len(h) for h in held.values()) == n
        # When every worker beats every 4 s for a minute, while two other stores expire
        # at the same moments: no lease ever ends, so nothing may be taken back
        t = T0 + 6
        while t < T0 + 66:
            answers = await asyncio.gather(
                *(pg.heartbeat(w, t, lease=10) for w in workers),
                *(other.expire(t) for other in others),
            )
            for w, beat in zip(workers, answers, strict=False):
                assert beat.held == held[w]
            assert answers[len(workers) :] == [[], []]
            t += 4
        # half the workers stop beating (their last beat at t - 4); the rest go on
        alive, gone = workers[:3], workers[3:]
        await asyncio.gather(*(pg.heartbeat(w, t, lease=10) for w in alive))
        # Then their jobs come back when their last lease ends — all, once — not before
        early = await asyncio.gather(*(other.expire(t + 5.9) for other in others))
        assert early == [[], []]
        taken = await asyncio.gather(*(other.expire(t + 6) for other in others))
        back = sorted(taken[0] + taken[1])
        assert back == sorted(i for w in gone for i in held[w])
        for w in alive:
            assert (await others[0].heartbeat(w, t + 6, lease=10)).held == held[w]
        for w in gone:
            assert (await others[1].heartbeat(w, t + 6, lease=10)).held == {}
        stats = await pg.stats()
        assert stats.by_state["running"] == n // 2 and stats.by_state["queued"] == n // 2
        assert stats.totals["lost"] == n // 2
    finally:
        for store in others:
            await store.close()


async def test_a_heartbeat_writes_one_row_not_every_job(pg: PostgresStore, schema: str) -> None:
    await pg.enqueue([JobSpec(type="t") for _ in range(200)], T0)
    await pg.claim("w", 200, T0, lease=10)

    def versions() -> list[tuple[str, str]]:
        """Each job row's version (xmin: the transaction that wrote it, ctid: where)."""
        with app_conn() as conn:
            rows = conn.execute(f"SELECT xmin::text, ctid::text FROM {schema}.jobs ORDER BY id")
            return [(r[0], r[1]) for r in rows]

    before = versions()
    for k in range(1, 6):
        assert len((await pg.heartbeat("w", T0 + k, lease=10)).held) == 200
    # the jobs' rows are not rewritten by the beats (the lease row is), and the
    # lease they hold moved with the beats
    assert versions() == before
    job = await pg.get((await pg.list(limit=1))[0].id)
    assert job is not None and job.lease_until == T0 + 15


async def test_a_touch_is_not_overruled_by_an_earlier_heartbeat(pg: PostgresStore) -> None:
    """touch sets one job's own lease: the worker's lease row, whose beats came before
    the touch, no longer covers it (a shorter lease holds); a beat after it does."""
    a, b = [e.id for e in await pg.enqueue([JobSpec(type="t"), JobSpec(type="t")], T0)]
    jobs = {j.id: j for j in await pg.claim("w", 2, T0, lease=10)}
    await pg.heartbeat("w", T0 + 1, lease=60)  # both covered until T0 + 61
    assert await pg.touch(a, jobs[a].token, T0 + 2, 3) == T0 + 5
    leases = [(await pg.get(i)).lease_until for i in (a, b)]  # type: ignore[union-attr]
    assert leases == [T0 + 5, T0 + 61]
    assert await pg.expire(T0 + 4.9) == []
    assert await pg.expire(T0 + 5) == [a]
    # a beat after the touch covers the touched job again, as every job of its worker
    [c] = [e.id for e in await pg.enqueue([JobSpec(type="u")], T0 + 6)]
    [jc] = await pg.claim("w", 1, T0 + 6, lease=10, types=["u"])
    assert await pg.touch(c, jc.token, T0 + 7, 2) == T0 + 9
    await pg.heartbeat("w", T0 + 8, lease=60)
    assert (await pg.get(c)).lease_until == T0 + 68  # type: ignore[union-attr]
    assert await pg.expire(T0 + 67) == []


async def test_a_touched_job_handed_over_to_its_worker_row_is_its_own_again(
    pg: PostgresStore,
) -> None:
    [a] = [e.id for e in await pg.enqueue([JobSpec(type="t")], T0)]
    [ja] = await pg.claim("w", 1, T0, lease=10)
    await pg.heartbeat("w", T0 + 5, lease=60)
    assert await pg.expire(T0 + 11) == []  # handed over to the row (until T0 + 65)
    assert await pg.touch(a, ja.token, T0 + 12, 5) == T0 + 17
    assert (await pg.get(a)).lease_until == T0 + 17  # type: ignore[union-attr]
    assert await pg.expire(T0 + 17) == [a]
    job = await pg.get(a)
    assert job is not None and (job.state, job.lost, job.run_at) == (S.QUEUED, 1, None)


async def test_kick_and_peek_read_what_they_return_not_the_jobs_they_pass(
    pg: PostgresStore, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kick and peek go through 0004's indexes (and jobs_ready's types): thousands of
    dead, scheduled and queued jobs of another type, or in another queue, cost them
    nothing (the buffers of each statement, under EXPLAIN ANALYZE)."""
    import distqueue.store.postgres as pg_module

    n = 2000
    decoys = [JobSpec(type="other", queue=q, run_at=T0 + 100 + i) for q in ("busy", "q")
              for i in range(n)]  # fmt: skip
    decoys += [JobSpec(type="other", queue="busy") for _ in range(n)]
    await pg.enqueue(decoys, T0)
    with app_conn() as conn:  # (half of the scheduled ones dead: counters do not matter here)
        conn.execute(
            f"UPDATE {schema}.jobs SET state = 6, finished_at = run_at, run_at = NULL"
            " WHERE state = 1 AND mod(id, 2) = 0"
        )
        conn.commit()
    ids = [e.id for e in await pg.enqueue(
        [JobSpec(type="t", queue="busy", max_retries=0), JobSpec(type="t", queue="busy",
         run_at=T0 + 5000), JobSpec(type="z", queue="quiet", priority=3)], T0)]  # fmt: skip
    [job] = await pg.claim("w", 1, T0, types=["t"])
    await pg.fail(job.id, job.token, JobError(kind="x", message="x"), T0, retryable=False)
    with app_conn() as conn:
        conn.execute(f"ANALYZE {schema}.jobs")
        conn.commit()

    seen: list[tuple[str, Any]] = []
    real = pg_module._drive

    async def spy(cur: Any, steps: Any) -> Any:
        def record() -> Any:
            rows = None
            while True:
                try:
                    stmt = steps.send(rows)
                except StopIteration as stop:
                    return stop.value
                seen.append(stmt)
                rows = yield stmt

        return await real(cur, record())

    monkeypatch.setattr(pg_module, "_drive", spy)
    peeked = [
        await pg.peek("busy", S.DEAD, type="t"),
        await pg.peek("busy", S.SCHEDULED, type="t"),
        await pg.peek("quiet", S.QUEUED),
        await pg.peek("quiet", S.DEAD),
        await pg.peek("quiet", S.SCHEDULED),
    ]
    assert [j and j.id for j in peeked] == [ids[0], ids[1], ids[2], None, None]
    assert await pg.kick("busy", 10, T0, type="t") == [ids[0]]
    assert await pg.kick("busy", 10, T0, type="t") == [ids[1]]
    assert await pg.kick("quiet", 10, T0) == []
    monkeypatch.undo()
    reads = [(sql, ps) for sql, ps in seen if sql.startswith(("SELECT", "WITH RECURSIVE"))]
    assert len(reads) == 10  # 5 peeks; the dead jobs, then (none) the scheduled, per kick
    with app_conn() as conn:
        for sql, params in reads:
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            top = plan.fetchone()[0][0]["Plan"]  # type: ignore[index]
            buffers = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
            assert buffers < 60, (buffers, sql)
        conn.rollback()


async def test_a_concurrency_limit_holds_across_stores(pg: PostgresStore, schema: str) -> None:
    others = [await PostgresStore.open(postgres_url(), schema=schema) for _ in range(2)]
    try:
        await pg.set_limit(Limit(scope="type", name="t", concurrency=3))
        await pg.enqueue([JobSpec(type="t") for _ in range(30)], T0)
        for _ in range(10):
            batches = await asyncio.gather(
                *(s.claim(f"w{i}", 5, T0, lease=600) for i, s in enumerate([pg, *others]))
            )
            got = [j for batch in batches for j in batch]
            assert len(got) == 3
            assert (await pg.stats()).by_state["running"] == 3
            await others[0].complete_many([(j.id, j.token, None) for j in got], T0)
    finally:
        for store in others:
            await store.close()


async def test_unserved_jobs_ahead_hold_up_nothing(pg: PostgresStore) -> None:
    """Thousands of queued jobs of a type no one serves, more urgent than the served
    ones, and of a paused queue: a claim finds the served jobs (it looks at the
    (type, queue) pairs, never walks the other jobs)."""
    await pg.enqueue([JobSpec(type="other", priority=0) for _ in range(3000)], T0)
    await pg.enqueue([JobSpec(type="mine", queue="stopped", priority=0) for _ in range(3000)], T0)
    await pg.pause("stopped", True)
    mine = [e.id for e in await pg.enqueue([JobSpec(type="mine", priority=10)] * 5, T0)]
    assert [j.id for j in await pg.claim("w", 10, T0, types=["mine"])] == mine


# -- URLs, options and errors ---------------------------------------------------------------------


async def test_durability_is_read_from_the_database(schema: str) -> None:
    # the session's server flushes commits (fsync on): full, unless told normal
    full = await PostgresStore.open(postgres_url(), schema=schema)
    normal = await PostgresStore.open(postgres_url(), schema=schema, synchronous="NORMAL")
    try:
        assert (full.durability, normal.durability) == ("full", "normal")
    finally:
        await full.close()
        await normal.close()


async def test_open_store_dispatches_postgres_urls(schema: str) -> None:
    url = postgres_url().replace("postgresql://", "postgres://", 1)
    store = await open_store(f"{url}?schema={schema}", synchronous="FULL")
    assert isinstance(store, PostgresStore) and store.schema == schema
    await store.close()


async def test_an_unreachable_server_is_a_store_error() -> None:
    from tests.redis_server import free_port

    with pytest.raises(StoreError, match="cannot open the store"):
        await PostgresStore.open(
            f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=2"
        )


async def test_bad_schema_names_are_refused() -> None:
    for bad in ("Upper", "has-dash", "x;drop", "a" * 60):
        with pytest.raises(ValueError, match="schema"):
            PostgresStore(postgres_url(), schema=bad)


# -- long transactions ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["snapshot", "write"])
async def test_an_open_transaction_shows_its_age_in_stats(pg: PostgresStore, kind: str) -> None:
    # Given no other transaction open on the database
    assert (await pg.stats()).oldest_transaction_age is None
    # When an application holds a transaction open: one with a snapshot (repeatable
    # read, after a read), or one that wrote (it has a transaction id)
    with app_conn() as conn:
        if kind == "snapshot":
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.execute("SELECT 1").fetchone()
        else:
            conn.execute("CREATE TEMP TABLE scratch (x int)")
        await asyncio.sleep(1.2)
        # Then the store reports how long it has been open
        age = (await pg.stats()).oldest_transaction_age
        assert age is not None and 1.2 <= age < 60
        assert await pg.oldest_transaction_age() == pytest.approx(age, abs=1.0)
        conn.rollback()
    # and nothing once it ends
    assert (await pg.stats()).oldest_transaction_age is None
