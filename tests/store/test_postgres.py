"""The PostgreSQL store's own tests (the contract suites run on it from tests/contract):
transactional enqueue on the application's connection, migrations up and down,
several stores sharing one schema, URL options and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from distqueue.errors import InvalidJob, QueueFull, StoreError
from distqueue.jobs import JobSpec, JobState
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
