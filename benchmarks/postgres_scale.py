"""The PostgreSQL store at scale: claim cost as the queue grows, and table size under
steady traffic (does the jobs table bloat?).

Both run distqueue/store/postgres.py in this process, on the PostgreSQL server at
--dsn (default $DISTQUEUE_PG_DSN, else postgresql://postgres@127.0.0.1:5432/postgres),
in a database of their own (--database, default distqueue_bench, created when
missing), each measurement in a fresh schema (dqbench_<random>) dropped at the end
(--keep keeps it). The store is used as it ships: its migration and per-table
autovacuum settings, its session options, full durability (synchronous_commit on).
The output names the server's settings that matter (autovacuum, fsync,
shared_buffers): on the CI machines autovacuum is off (conf.d/90-ci.conf), so the
tables' own autovacuum settings never fire there.

claim-cost: for each size of --sizes, a fresh schema filled with that many queued
jobs (one type, one queue, small args; bulk enqueue through the store, --batch jobs
a call), then ANALYZE on jobs and counts, run here (not left to autovacuum, which may
be off). Then one worker claims back to back: ``claim(worker, 64, now)`` and
``complete_many`` of what it got (the ACK); --warmup rounds on each size first, then
--repeat runs of --jobs jobs on each size, the sizes taking turns (so a slow moment
of a shared machine does not land on one size). Reported per size: jobs/s (claim +
ACK wall time; the median of the runs, and each run), the claim's and the ACK's
latency p50/p99 over all runs, the rate as a fraction of the first size's rate (the
issue's target: claim cost flat from 10k to 1M queued, within 20%: every fraction
>= 0.80), and the buffers (shared hit + read) and execution time of the store's own
claim statement under EXPLAIN (ANALYZE, BUFFERS), once before the rounds and once
after them (in a transaction rolled back: nothing claimed). Once, on the first size:
the database's transactions per claim + ACK round (pg_stat_database, 22 s of waiting
for the statistics to settle; --no-xacts skips it).

    python benchmarks/postgres_scale.py claim-cost --sizes 10000,100000,1000000

bloat: steady traffic for --seconds: a producer enqueues --rate jobs/s in calls of
--batch jobs, --consumers tasks claim (64 at a time) and complete them, and the
store's ``sweep`` runs every --sweep-every seconds with --retain seconds of
retention (succeeded and failed alike), so that finished jobs are purged. (The server
itself sweeps hourly, distqueue/server/server.py PURGE_EVERY, with Retention's
defaults of 1 day / 7 days: ``--sweep-every 3600 --retain 86400`` is that cadence,
too long to run here.) Every --sample-every seconds: the jobs table's total size,
its heap and its indexes (pg_total_relation_size, pg_relation_size,
pg_indexes_size), the counts table's total size, n_dead_tup of both
(pg_stat_user_tables), the vacuums they had, and the live jobs (the store's
counters). Verdict, on the samples after --warmup seconds (default: the first
minute): stable when the max of the last third is within 1.5x the max of the first
third and the size does not grow at (nearly) every sample.

--emulate-autovacuum (off by default; for a server that runs with autovacuum off):
every autovacuum_naptime a task of this process does what the autovacuum launcher
would do for jobs and counts: their thresholds (the tables' reloptions, else the
server's autovacuum_* settings) checked against pg_stat_user_tables, VACUUM and/or
ANALYZE run with the table's autovacuum cost delay and limit.

    python benchmarks/postgres_scale.py bloat --seconds 600 --rate 1000

Both print a markdown table (progress on stderr); --json prints one JSON document
instead. Not part of the package or its tests: a measuring tool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from distqueue.jobs import JobSpec
from distqueue.policy import Retention
from distqueue.store.postgres import PostgresStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "distqueue_bench"
TYPE = "bench.noop"
WORKER = "bench-worker"
CLAIM_N = 64
#: seconds a bloat consumer waits after a claim that got nothing
IDLE_POLL = 0.05
MB = 1024 * 1024
#: server settings worth stating next to the figures
SETTINGS = (
    "server_version", "autovacuum", "autovacuum_naptime", "fsync", "synchronous_commit",
    "shared_buffers", "max_wal_size",
)  # fmt: skip


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the database ------------------------------------------------------------------------


def with_db(dsn: str, db: str) -> str:
    """``dsn`` with its database replaced by ``db``."""
    base, sep, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    if "://" not in head:  # no path: postgresql://host:port
        head = base
    return f"{head}/{db}" + (sep + query if sep else "")


def ensure_database(dsn: str, db: str) -> str:
    """The URL of database ``db`` on the server of ``dsn``, created when missing."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
        if not found:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f'CREATE DATABASE "{db}"')
    return with_db(dsn, db)


def new_schema() -> str:
    return f"dqbench_{uuid.uuid4().hex[:12]}"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def server_settings(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
            (list(SETTINGS),),
        ).fetchall()
    return {name: value for name, value in rows}


def autovacuum_note(settings: dict[str, str]) -> str | None:
    if settings.get("autovacuum") == "off":
        return (
            "autovacuum is off on this server: the tables' own autovacuum settings never"
            " fire, nothing vacuums them"
        )
    return None


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def specs(start: int, n: int) -> list[JobSpec]:
    return [JobSpec(type=TYPE, args=[i]) for i in range(start, start + n)]


# -- claim-cost ---------------------------------------------------------------------------


async def fill(store: PostgresStore, size: int, batch: int) -> float:
    """Enqueue ``size`` queued jobs; returns the seconds it took."""
    t0 = time.perf_counter()
    last = t0
    done = 0
    while done < size:
        n = min(batch, size - done)
        await store.enqueue(specs(done, n), time.time())
        done += n
        now = time.perf_counter()
        if now - last >= 10 or done == size:
            last = now
            log(f"  fill {size:,}: {done:,} jobs in {now - t0:.0f}s ({done / (now - t0):,.0f}/s)")
    return time.perf_counter() - t0


def claim_statement(schema: str, now: float) -> tuple[str, dict[str, Any]] | None:
    """The store's own fast claim statement (no queues or types given) and its
    parameters for a claim of CLAIM_N, or None when the store's internals changed."""
    try:
        from distqueue.store import postgres as pg
        from distqueue.store.checks import MAX_INT

        pairs = pg._PAIRS_ALL.replace("{qfilter}", "")
        text = pg.sql_for(schema).text(pg._CLAIM_FAST.replace("{pairs}", pairs))
        params = {
            "queues": None, "types": None, "m": CLAIM_N + pg.CLAIM_SLACK, "n": CLAIM_N,
            "now": now, "until": now + 30.0, "worker": WORKER, "room": MAX_INT, "free": 1,
        }  # fmt: skip
    except (ImportError, AttributeError):
        return None
    return text, params


async def explain_claim(url: str, schema: str) -> dict[str, Any] | None:
    """EXPLAIN (ANALYZE, BUFFERS) of one claim statement, rolled back."""
    stmt = claim_statement(schema, time.time())
    if stmt is None:
        return None
    text, params = stmt
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, options="-c plan_cache_mode=force_custom_plan"
    )
    try:
        async with conn.transaction(force_rollback=True):
            cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text, params)
            row = await cur.fetchone()
    finally:
        await conn.close()
    assert row is not None
    doc = row[0][0]
    plan, planning = doc["Plan"], doc.get("Planning", {})
    return {
        "shared_hit": plan.get("Shared Hit Blocks", 0),
        "shared_read": plan.get("Shared Read Blocks", 0),
        "shared_dirtied": plan.get("Shared Dirtied Blocks", 0),
        "planning_hit": planning.get("Shared Hit Blocks", 0)
        + planning.get("Shared Read Blocks", 0),
        "execution_ms": doc.get("Execution Time"),
        "planning_ms": doc.get("Planning Time"),
    }


async def xact_count(conn: psycopg.AsyncConnection[Any]) -> int:
    """Transactions committed and rolled back in this database (pg_stat_database). A
    backend flushes its counts at most once a second, and one that went idle within a
    second of its last flush only 10 s later: wait XACT_SETTLE seconds before reading."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    cur = await conn.execute(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database"
        " WHERE datname = current_database()"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


#: seconds for every backend's transaction counts to reach pg_stat_database
XACT_SETTLE = 11.0


@dataclass
class Size:
    """One size of claim-cost: its schema, its store, what was measured on it."""

    size: int
    schema: str
    store: PostgresStore | None = None
    fill_s: float = 0.0
    analyze_s: float = 0.0
    table_bytes: int = 0
    index_bytes: int = 0
    explain_before: dict[str, Any] | None = None
    explain_after: dict[str, Any] | None = None
    rates: list[float] = field(default_factory=list)
    claim_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    taken: int = 0


async def rounds(store: PostgresStore, jobs: int, sz: Size | None = None) -> tuple[int, float]:
    """Claim + ACK back to back until ``jobs`` jobs are taken; (taken, seconds).
    Latencies go to ``sz`` when given."""
    taken = 0
    t_start = time.perf_counter()
    while taken < jobs:
        t0 = time.perf_counter()
        got = await store.claim(WORKER, CLAIM_N, time.time())
        t1 = time.perf_counter()
        if not got:
            raise SystemExit(f"error: the queue ran dry after {taken} jobs")
        errors = await store.complete_many(
            [(j.id, j.token, None) for j in got], time.time(), worker=WORKER
        )
        t2 = time.perf_counter()
        if any(errors):
            raise SystemExit(f"error: an ACK was refused: {next(e for e in errors if e)}")
        if sz is not None:
            sz.claim_ms.append((t1 - t0) * 1000)
            sz.ack_ms.append((t2 - t1) * 1000)
        taken += len(got)
    return taken, time.perf_counter() - t_start


async def prepare(url: str, sz: Size, opts: argparse.Namespace) -> None:
    """A fresh schema filled with ``sz.size`` queued jobs, analyzed."""
    log(f"size {sz.size:,}: schema {sz.schema}")
    sz.store = store = await PostgresStore.open(url, schema=sz.schema)
    sz.fill_s = await fill(store, sz.size, opts.batch)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        await conn.execute(f"ANALYZE {sz.schema}.jobs")
        await conn.execute(f"ANALYZE {sz.schema}.counts")
        sz.analyze_s = time.perf_counter() - t0
        cur = await conn.execute(
            "SELECT pg_total_relation_size(%(t)s::regclass), pg_indexes_size(%(t)s::regclass)",
            {"t": f"{sz.schema}.jobs"},
        )
        row = await cur.fetchone()
    assert row is not None
    sz.table_bytes, sz.index_bytes = row
    if opts.explain:
        sz.explain_before = await explain_claim(url, sz.schema)


async def transactions_per_round(url: str, store: PostgresStore) -> float:
    """Transactions the database runs per claim + ACK round, over 20 rounds."""
    log(f"  transactions per round: {2 * XACT_SETTLE:.0f}s of waiting for the statistics")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await asyncio.sleep(XACT_SETTLE)
        before = await xact_count(conn)
        n = 0
        for _ in range(20):
            got = await store.claim(WORKER, CLAIM_N, time.time())
            await store.complete_many([(j.id, j.token, None) for j in got], time.time())
            n += 1
        await asyncio.sleep(XACT_SETTLE)
        # less the two reading statements of this connection (pg_stat_clear_snapshot, the
        # count) that ran between the two counts
        return (await xact_count(conn) - before - 2) / n


async def claim_cost(opts: argparse.Namespace, url: str) -> dict[str, Any]:
    sizes = [Size(int(s.replace("_", "")), new_schema()) for s in opts.sizes.split(",")]
    need = opts.repeat * opts.jobs + (opts.warmup + 21) * CLAIM_N
    if min(sz.size for sz in sizes) < need:
        raise SystemExit(f"error: every size must hold --repeat x --jobs + warm-up ({need} jobs)")
    xacts: float | None = None
    try:
        for sz in sizes:
            await prepare(url, sz, opts)
        for sz in sizes:
            assert sz.store is not None
            await rounds(sz.store, opts.warmup * CLAIM_N)
        # the sizes take turns, so that a slow moment of a shared machine is not
        # charged to one size
        for rep in range(opts.repeat):
            for sz in sizes:
                assert sz.store is not None
                taken, seconds = await rounds(sz.store, opts.jobs, sz)
                sz.taken += taken
                sz.rates.append(taken / seconds)
                log(f"  repeat {rep + 1}: {sz.size:,} queued: {taken / seconds:,.0f} jobs/s")
        for sz in sizes:
            if opts.explain:
                sz.explain_after = await explain_claim(url, sz.schema)
        if opts.xacts:
            assert sizes[0].store is not None
            xacts = await transactions_per_round(url, sizes[0].store)
    finally:
        for sz in sizes:
            if sz.store is not None:
                await sz.store.close()
            if opts.keep:
                log(f"  kept schema {sz.schema}")
            else:
                drop_schema(url, sz.schema)
    results: list[dict[str, Any]] = []
    for sz in sizes:
        results.append({
            "size": sz.size, "schema": sz.schema, "fill_seconds": round(sz.fill_s, 2),
            "fill_rate": round(sz.size / sz.fill_s), "analyze_seconds": round(sz.analyze_s, 3),
            "jobs_table_bytes": sz.table_bytes, "jobs_index_bytes": sz.index_bytes,
            "jobs": sz.taken, "rounds": len(sz.claim_ms),
            "rates": [round(r, 1) for r in sz.rates], "rate": round(statistics.median(sz.rates), 1),
            "claim_p50_ms": round(pct(sz.claim_ms, 50), 3),
            "claim_p99_ms": round(pct(sz.claim_ms, 99), 3),
            "ack_p50_ms": round(pct(sz.ack_ms, 50), 3), "ack_p99_ms": round(pct(sz.ack_ms, 99), 3),
            "claim_share": round(sum(sz.claim_ms) / (sum(sz.claim_ms) + sum(sz.ack_ms)), 3),
            "explain_before": sz.explain_before, "explain_after": sz.explain_after,
        })  # fmt: skip
    base = results[0]["rate"]
    for r in results:
        r["ratio"] = round(r["rate"] / base, 3)
    low = min(r["ratio"] for r in results)
    high = max(r["ratio"] for r in results)
    flat = low >= 0.8
    verdict = (
        f"{'flat' if flat else 'NOT flat'}: from {sizes[0].size:,} to {sizes[-1].size:,} queued"
        f" the rate stays within {low:.0%}..{high:.0%} of the {sizes[0].size:,}-queued rate"
        " (target: >= 80%)"
    )
    settings = server_settings(url)
    return {
        "measurement": "claim-cost", "jobs": opts.jobs, "repeat": opts.repeat,
        "warmup": opts.warmup, "batch": opts.batch, "claim_n": CLAIM_N,
        "analyze": "explicit ANALYZE after the fill", "sizes": results,
        "xacts_per_round": None if xacts is None else round(xacts, 2), "flat": flat,
        "verdict": verdict, "server": settings, "note": autovacuum_note(settings),
    }  # fmt: skip


def _buffers(e: dict[str, Any] | None) -> str:
    if not e:
        return "-"
    return f"{e['shared_hit'] + e['shared_read']} ({e['execution_ms']:.2f} ms)"


def claim_cost_markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"claim-cost: one worker, claim({CLAIM_N}) + complete_many back to back;"
        f" {doc['repeat']} x {doc['jobs']} jobs per size, the sizes taking turns, after"
        f" {doc['warmup']} warm-up rounds; ANALYZE run after the fill",
        "",
        "| queued | fill s | jobs/s (median) | runs | vs first | claim p50 ms | claim p99 ms"
        " | ack p50 ms | ack p99 ms | claim share | claim buffers (exec) before | after |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["sizes"]:
        runs = " / ".join(f"{x:,.0f}" for x in r["rates"])
        lines.append(
            f"| {r['size']:,} | {r['fill_seconds']:.1f} | {r['rate']:,.0f} | {runs}"
            f" | {r['ratio']:.2f} | {r['claim_p50_ms']:.2f} | {r['claim_p99_ms']:.2f}"
            f" | {r['ack_p50_ms']:.2f} | {r['ack_p99_ms']:.2f} | {r['claim_share']:.0%}"
            f" | {_buffers(r['explain_before'])} | {_buffers(r['explain_after'])} |"
        )
    lines += ["", f"verdict: {doc['verdict']}"]
    if doc["xacts_per_round"] is not None:
        lines.append(
            f"transactions per claim + ACK round (pg_stat_database): {doc['xacts_per_round']:.2f}"
        )
    e = doc["sizes"][-1]["explain_after"]
    if e:
        lines.append(
            f"claim statement at {doc['sizes'][-1]['size']:,} queued, after the rounds:"
            f" planning {e['planning_ms']:.2f} ms ({e['planning_hit']} buffers), execution"
            f" {e['execution_ms']:.2f} ms, {e['shared_dirtied']} buffers dirtied"
        )
    lines += ["", "server: " + _settings_line(doc["server"])]
    if doc.get("note"):
        lines.append(f"note: {doc['note']}")
    return "\n".join(lines)


# -- bloat -------------------------------------------------------------------------------

_SIZES_SQL = (
    "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid),"
    " pg_indexes_size(c.oid), s.n_live_tup, s.n_dead_tup,"
    " s.vacuum_count + s.autovacuum_count, s.analyze_count + s.autoanalyze_count"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
    " WHERE n.nspname = %(schema)s AND c.relname IN ('jobs', 'counts') AND c.relkind = 'r'"
)
_INDEXES_SQL = (
    "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes"
    " WHERE schemaname = %(schema)s AND relname = 'jobs' ORDER BY indexrelname"
)
#: what the autovacuum launcher looks at (emulation): the table's counters, reloptions
_AV_SQL = (
    "SELECT c.reltuples, coalesce(c.reloptions, '{}'), s.n_dead_tup, s.n_ins_since_vacuum,"
    " s.n_mod_since_analyze FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid"
    " WHERE s.schemaname = %(schema)s AND s.relname = %(table)s"
)
_AV_SETTINGS = (
    "autovacuum_vacuum_threshold", "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_insert_threshold", "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_analyze_threshold", "autovacuum_analyze_scale_factor",
    "autovacuum_vacuum_cost_delay", "autovacuum_vacuum_cost_limit", "vacuum_cost_limit",
    "autovacuum_naptime",
)  # fmt: skip


@dataclass
class Traffic:
    """What the bloat run's tasks did so far."""

    enqueued: int = 0
    done: int = 0
    purged: int = 0
    claims: int = 0
    empty_claims: int = 0
    producer_behind: float = 0.0  # the producer's worst lag behind its schedule (s)
    sweep_max: float = 0.0  # the slowest sweep (s)
    sweeps: int = 0
    vacuums: list[dict[str, Any]] = field(default_factory=list)  # emulated autovacuum


async def producer(store: PostgresStore, t: Traffic, rate: float, batch: int, end: float) -> None:
    gap = batch / rate
    due = time.perf_counter()
    while due < end:
        await store.enqueue(specs(t.enqueued, batch), time.time())
        t.enqueued += batch
        due += gap
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            t.producer_behind = max(t.producer_behind, -delay)


async def consumer(store: PostgresStore, t: Traffic, worker: str, end: float) -> None:
    while time.perf_counter() < end:
        jobs = await store.claim(worker, CLAIM_N, time.time())
        t.claims += 1
        if not jobs:
            t.empty_claims += 1
            await asyncio.sleep(IDLE_POLL)
            continue
        errors = await store.complete_many(
            [(j.id, j.token, None) for j in jobs], time.time(), worker=worker
        )
        if any(errors):
            raise RuntimeError(f"an ACK was refused: {next(e for e in errors if e)}")
        t.done += len(jobs)


async def sweeper(
    store: PostgresStore, t: Traffic, every: float, retain: float, end: float
) -> None:
    retention = Retention(succeeded=retain, failed=retain)
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        t.purged += await store.sweep(time.time(), retention)
        took = time.perf_counter() - t0
        t.sweeps += 1
        t.sweep_max = max(t.sweep_max, took)
        await asyncio.sleep(max(0.0, every - took))


async def emulated_autovacuum(url: str, schema: str, t: Traffic, t_start: float) -> None:
    """Every autovacuum_naptime, what the launcher would do for jobs and counts."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        cur = await conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(_AV_SETTINGS),)
        )
        server = {name: float(value) for name, value in await cur.fetchall()}
        while True:
            await asyncio.sleep(server["autovacuum_naptime"])
            for table in ("jobs", "counts"):
                cur = await conn.execute(_AV_SQL, {"schema": schema, "table": table})
                row = await cur.fetchone()
                if row is None:
                    continue
                reltuples, reloptions, dead, inserted, modified = row
                o = dict(server)
                for item in reloptions:
                    key, _, value = item.partition("=")
                    with contextlib.suppress(ValueError):
                        o[key] = float(value)
                tuples = max(0.0, float(reltuples))
                vacuum = dead > o["autovacuum_vacuum_threshold"] + (
                    o["autovacuum_vacuum_scale_factor"] * tuples
                ) or inserted > o["autovacuum_vacuum_insert_threshold"] + (
                    o["autovacuum_vacuum_insert_scale_factor"] * tuples
                )
                analyze = modified > o["autovacuum_analyze_threshold"] + (
                    o["autovacuum_analyze_scale_factor"] * tuples
                )
                if not (vacuum or analyze):
                    continue
                limit = o["autovacuum_vacuum_cost_limit"]
                if limit <= 0:
                    limit = o["vacuum_cost_limit"]
                await conn.execute(
                    f"SET vacuum_cost_delay = {o['autovacuum_vacuum_cost_delay']:g};"
                    f" SET vacuum_cost_limit = {int(limit)}"
                )
                what = (
                    "VACUUM (ANALYZE)" if vacuum and analyze else "VACUUM" if vacuum else "ANALYZE"
                )
                t0 = time.perf_counter()
                await conn.execute(f"{what} {schema}.{table}")
                took = time.perf_counter() - t0
                t.vacuums.append({
                    "at": round(t0 - t_start, 1), "table": table, "what": what,
                    "dead_before": dead, "seconds": round(took, 3),
                })  # fmt: skip
                log(f"  [emulated autovacuum] {what} {table}: {dead} dead, {took:.2f}s")
    finally:
        await conn.close()


async def sample(
    conn: psycopg.AsyncConnection[Any], store: PostgresStore, schema: str, t: Traffic, at: float
) -> dict[str, Any]:
    cur = await conn.execute(_SIZES_SQL, {"schema": schema})
    rel = {row[0]: row[1:] for row in await cur.fetchall()}
    cur = await conn.execute(_INDEXES_SQL, {"schema": schema})
    indexes = {name: size for name, size in await cur.fetchall()}
    stats = await store.stats()
    jobs, counts = rel["jobs"], rel["counts"]
    live = sum(stats.by_state.values())
    return {
        "t": round(at), "enqueued": t.enqueued, "done": t.done, "purged": t.purged,
        "rows": live, "queued": stats.by_state["queued"],
        "jobs_total": jobs[0], "jobs_heap": jobs[1], "jobs_indexes": jobs[2],
        "jobs_live_tup": jobs[3], "jobs_dead_tup": jobs[4], "jobs_vacuums": jobs[5],
        "counts_total": counts[0], "counts_dead_tup": counts[4], "counts_vacuums": counts[5],
        "bytes_per_row": round(jobs[0] / live) if live else None, "indexes": indexes,
    }  # fmt: skip


def bloat_verdict(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    after = [s for s in samples if s["t"] >= warmup]
    out: dict[str, Any] = {"samples_after_warmup": len(after)}
    if len(after) < 3:
        out["verdict"] = f"too short to judge: {len(after)} samples after the {warmup:g}s warm-up"
        return out
    third = max(1, len(after) // 3)
    first = max(s["jobs_total"] for s in after[:third])
    last = max(s["jobs_total"] for s in after[-third:])
    half = len(after) // 2
    steps = [b["jobs_total"] > a["jobs_total"] for a, b in itertools.pairwise(after)]
    growing = sum(steps) >= 0.8 * len(steps) and after[-1]["jobs_total"] > after[0]["jobs_total"]
    span = after[-1]["t"] - after[0]["t"]
    slope = (after[-1]["jobs_total"] - after[0]["jobs_total"]) / span * 60 / MB if span else 0.0
    ratio = last / first if first else math.inf
    stable = ratio <= 1.5 and not growing
    out.update(
        first_third_max=first, last_third_max=last, ratio=round(ratio, 3),
        first_half_max=max(s["jobs_total"] for s in after[:half] or after[:1]),
        second_half_max=max(s["jobs_total"] for s in after[half:]),
        growing_steps=f"{sum(steps)}/{len(steps)}", growing=growing,
        mb_per_minute=round(slope, 2), stable=stable,
    )  # fmt: skip
    short = " (few samples: run longer)" if len(after) < 6 else ""
    out["verdict"] = (
        f"{'stable' if stable else 'NOT stable'}{short}: jobs table max {last / MB:.1f} MB in the"
        f" last third vs {first / MB:.1f} MB in the first third after the warm-up"
        f" ({ratio:.2f}x, limit 1.5x); grew at {sum(steps)}/{len(steps)} samples,"
        f" {slope:+.2f} MB/min"
    )
    queued = [s["queued"] for s in after]
    if queued[-1] > max(1000, 5 * queued[0]):
        out["verdict"] += (
            f"; the backlog grew ({queued[0]:,} -> {queued[-1]:,} queued): the consumers did"
            " not keep up, so part of the growth is live jobs"
        )
    return out


async def bloat(opts: argparse.Namespace, url: str) -> dict[str, Any]:
    settings = server_settings(url)
    note = autovacuum_note(settings)
    if note and not opts.emulate_autovacuum:
        log(f"warning: {note}; --emulate-autovacuum does its work from here")
    schema = new_schema()
    log(f"bloat: schema {schema}, {opts.seconds:g}s at {opts.rate:g} jobs/s")
    store = await PostgresStore.open(url, schema=schema)
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    t = Traffic()
    samples: list[dict[str, Any]] = []
    try:
        start = time.perf_counter()
        end = start + opts.seconds
        tasks = [
            asyncio.create_task(producer(store, t, opts.rate, opts.batch, end)),
            asyncio.create_task(sweeper(store, t, opts.sweep_every, opts.retain, end)),
            *(asyncio.create_task(consumer(store, t, f"{WORKER}-{i}", end))
              for i in range(opts.consumers)),
        ]  # fmt: skip
        side = []
        if opts.emulate_autovacuum:
            side.append(asyncio.create_task(emulated_autovacuum(url, schema, t, start)))
        at = 0.0
        while True:
            s = await sample(conn, store, schema, t, time.perf_counter() - start)
            samples.append(s)
            log(
                f"  t={s['t']:>4}s enqueued {s['enqueued']:,} done {s['done']:,} rows"
                f" {s['rows']:,} jobs {s['jobs_total'] / MB:.1f} MB (heap"
                f" {s['jobs_heap'] / MB:.1f}, indexes {s['jobs_indexes'] / MB:.1f}) dead"
                f" {s['jobs_dead_tup']:,}"
            )
            failed = [x for x in tasks if x.done() and x.exception() is not None]
            if failed:
                raise RuntimeError(f"a traffic task failed: {failed[0].exception()!r}")
            if at >= opts.seconds:
                break
            at = min(at + opts.sample_every, opts.seconds)
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        await asyncio.gather(*tasks)
        for x in side:
            x.cancel()
        await asyncio.gather(*side, return_exceptions=True)
    finally:
        await conn.close()
        await store.close()
        if opts.keep:
            log(f"kept schema {schema}")
        else:
            drop_schema(url, schema)
    verdict = bloat_verdict(samples, opts.warmup)
    return {
        "measurement": "bloat", "seconds": opts.seconds, "rate": opts.rate,
        "batch": opts.batch, "consumers": opts.consumers, "sweep_every": opts.sweep_every,
        "retain": opts.retain, "warmup": opts.warmup,
        "emulated_autovacuum": opts.emulate_autovacuum, "enqueued": t.enqueued,
        "done": t.done, "purged": t.purged, "claims": t.claims,
        "empty_claims": t.empty_claims, "producer_behind_max_s": round(t.producer_behind, 3),
        "sweeps": t.sweeps, "sweep_max_s": round(t.sweep_max, 3), "vacuums": t.vacuums,
        "samples": samples, **verdict, "server": settings,
        "note": f"{note} (emulated here: --emulate-autovacuum)"
        if note and opts.emulate_autovacuum else note,
    }  # fmt: skip


def bloat_markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"bloat: {doc['seconds']:g}s, {doc['rate']:g} jobs/s enqueued in calls of"
        f" {doc['batch']}, {doc['consumers']} consumer(s), sweep every {doc['sweep_every']:g}s"
        f" keeping {doc['retain']:g}s"
        + (", emulated autovacuum" if doc["emulated_autovacuum"] else ""),
        "",
        "| t s | enqueued | done | rows | queued | jobs MB | heap MB | indexes MB"
        " | bytes/row | jobs dead tup | jobs vacuums | counts kB | counts dead tup |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in doc["samples"]:
        lines.append(
            f"| {s['t']} | {s['enqueued']:,} | {s['done']:,} | {s['rows']:,} | {s['queued']:,}"
            f" | {s['jobs_total'] / MB:.1f} | {s['jobs_heap'] / MB:.1f}"
            f" | {s['jobs_indexes'] / MB:.1f} | {s['bytes_per_row'] or '-'}"
            f" | {s['jobs_dead_tup']:,} | {s['jobs_vacuums']} | {s['counts_total'] / 1024:.0f}"
            f" | {s['counts_dead_tup']:,} |"
        )
    last = doc["samples"][-1]
    lines += [
        "",
        "jobs indexes at the end (MB): "
        + ", ".join(f"{k} {v / MB:.1f}" for k, v in last["indexes"].items()),
        f"traffic: {doc['enqueued']:,} enqueued, {doc['done']:,} done, {doc['purged']:,}"
        f" purged; {doc['claims']:,} claims ({doc['empty_claims']:,} empty); producer at"
        f" most {doc['producer_behind_max_s']:.2f}s behind; {doc['sweeps']} sweeps, slowest"
        f" {doc['sweep_max_s'] * 1000:.0f} ms",
    ]
    if doc["vacuums"]:
        lines.append(
            "emulated autovacuum: "
            + "; ".join(
                f"t={v['at']}s {v['what']} {v['table']} ({v['dead_before']:,} dead,"
                f" {v['seconds']:.2f}s)"
                for v in doc["vacuums"]
            )
        )
    lines += ["", f"verdict: {doc['verdict']}", "", "server: " + _settings_line(doc["server"])]
    if doc.get("note"):
        lines.append(f"note: {doc['note']}")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def _settings_line(settings: dict[str, str]) -> str:
    return ", ".join(f"{k}={settings[k]}" for k in SETTINGS if k in settings)


def main() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dsn", default=os.environ.get("DISTQUEUE_PG_DSN", DEFAULT_DSN),
        help="the server (any database on it; default $DISTQUEUE_PG_DSN or %(default)s)",
    )  # fmt: skip
    common.add_argument("--database", default=DATABASE, help="created when missing")
    common.add_argument("--keep", action="store_true", help="keep the schema (debugging)")
    common.add_argument("--json", action="store_true", help="print JSON, not markdown")
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    cc = sub.add_parser(
        "claim-cost", parents=[common], help="claim + ACK cost as the queued jobs grow"
    )
    cc.add_argument("--sizes", default="10000,100000,1000000", help="queued jobs, comma-separated")
    cc.add_argument("--jobs", type=int, default=2000, help="jobs taken per size and repeat")
    cc.add_argument("--repeat", type=int, default=3, help="measured runs per size (median)")
    cc.add_argument("--warmup", type=int, default=10, help="claim rounds before measuring")
    cc.add_argument("--batch", type=int, default=5000, help="jobs per enqueue call (the fill)")
    cc.add_argument("--no-explain", dest="explain", action="store_false",
                    help="skip EXPLAIN (ANALYZE, BUFFERS) of the claim")  # fmt: skip
    cc.add_argument("--no-xacts", dest="xacts", action="store_false",
                    help="skip counting transactions per round (22 s of waiting)")  # fmt: skip

    bl = sub.add_parser("bloat", parents=[common], help="table size over time under steady traffic")
    bl.add_argument("--seconds", type=float, default=600)
    bl.add_argument("--rate", type=float, default=1000, help="jobs/s enqueued")
    bl.add_argument("--batch", type=int, default=10, help="jobs per enqueue call")
    bl.add_argument("--consumers", type=int, default=2)
    bl.add_argument("--sweep-every", type=float, default=1.0, help="seconds between sweeps")
    bl.add_argument("--retain", type=float, default=60.0, help="retention of finished jobs (s)")
    bl.add_argument("--sample-every", type=float, default=10.0)
    bl.add_argument("--warmup", type=float, default=60.0, help="seconds the verdict ignores")
    bl.add_argument(
        "--emulate-autovacuum", action="store_true",
        help="do autovacuum's work from here (for a server with autovacuum off)",
    )  # fmt: skip
    opts = parser.parse_args()

    url = ensure_database(opts.dsn, opts.database)
    if opts.command == "claim-cost":
        doc = asyncio.run(claim_cost(opts, url))
        text = claim_cost_markdown(doc)
    else:
        doc = asyncio.run(bloat(opts, url))
        text = bloat_markdown(doc)
    print(json.dumps(doc, indent=2) if opts.json else text, flush=True)


if __name__ == "__main__":
    main()
