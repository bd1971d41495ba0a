"""The transactional-enqueue example of docs/scaling.md, run as written (its
addresses swapped for the tests' database): the job exists if and only if the
application's transaction committed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from distqueue.jobs import JobState
from tests.postgres_server import drop_schema, new_schema, postgres_url

psycopg = pytest.importorskip("psycopg")

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    found = [b for b in blocks if "from distqueue.postgres import enqueue" in b]
    assert len(found) == 1, "docs/scaling.md has one transactional-enqueue example"
    return found[0]


@pytest.fixture
def schema() -> Iterator[str]:
    name = new_schema("example")
    yield name
    drop_schema(name)


def run(code: str, schema: str) -> None:
    # the application's tables (orders) in the test's schema, found by search_path
    app_url = postgres_url() + "?options=" + quote(f"-csearch_path={schema}")
    code = code.replace('"postgresql://app@db-host/app"', repr(app_url))
    code = code.replace('schema="jobs"', f"schema={schema!r}")
    assert repr(app_url) in code and repr(schema) in code, "the example's addresses moved"
    exec(compile(code, str(DOC), "exec"), {})


def orders_and_jobs(schema: str) -> tuple[list[tuple[int, float]], list[tuple[str, bytes]]]:
    with psycopg.connect(postgres_url()) as conn:
        orders = conn.execute(f"SELECT id, total FROM {schema}.orders").fetchall()
        jobs = conn.execute(f"SELECT type, args FROM {schema}.jobs WHERE state = 2").fetchall()
    return [(int(i), float(t)) for i, t in orders], [(t, bytes(a)) for t, a in jobs]


def setup(schema: str) -> None:
    from distqueue.store.postgres import migrate

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(postgres_url(), autocommit=True) as c:
            await migrate(c, schema)

    import asyncio

    asyncio.run(go())
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {schema}.orders (id int PRIMARY KEY, total float8)")


def test_the_example_commits_the_order_and_its_job(schema: str) -> None:
    setup(schema)
    run(example(), schema)
    orders, jobs = orders_and_jobs(schema)
    assert orders == [(42, 99.5)]
    assert jobs == [("shop.tasks.ship", b'{"order":42}')]

    # and the job is a job like any other: a worker of the store gets it
    import asyncio

    from distqueue.store import open_store

    async def claim() -> None:
        store = await open_store(f"{postgres_url()}?schema={schema}")
        try:
            [job] = await store.claim("w", 5, 1e9)
            assert (job.type, job.args, job.state) == (
                "shop.tasks.ship", {"order": 42}, JobState.RUNNING)  # fmt: skip
        finally:
            await store.close()

    asyncio.run(claim())


def test_the_example_rolled_back_leaves_neither(schema: str) -> None:
    setup(schema)
    code = example()
    # the same code, failing after the enqueue, inside the transaction
    after = ', schema="jobs")\n'
    code = code.replace(after, after + '        raise LookupError("stock")\n')
    assert 'raise LookupError("stock")' in code
    with pytest.raises(LookupError):
        run(code, schema)
    assert orders_and_jobs(schema) == ([], [])
