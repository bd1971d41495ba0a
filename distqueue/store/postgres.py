"""The PostgreSQL store: the whole Store contract on PostgreSQL >= 13 (psycopg 3, async,
psycopg-pool).

Open with ``await PostgresStore.open("postgresql://user@host:5432/db")``; the store
lives in one schema of that database (``?schema=NAME`` on the URL, default
``distqueue``), created and brought up to date by the versioned migrations in
postgres_sql/ (``distqueue migrate``; ``open`` applies pending ones unless
``?migrate=off`` or ``migrate=False``). Several servers and direct-mode workers may
share one database.

Shape. One ``jobs`` table, one row per job, its state a smallint, its priority a
bigint (0..2**32-1, postgres_sql/0003_wide_priorities.sql); partial indexes for each
hot path (ready jobs by (type, queue, priority, seq), due jobs, leases, finished
jobs), so a job's index entries follow its state. Every operation is one
transaction; the hot ones are one statement each plus the counters:

- claim: per (type, queue) pair the worker serves that holds queued jobs (found by
  a skip scan of the ready index: bounded by the pairs, not the jobs), the first
  jobs in (priority, seq) order, merged, then locked one by one with ``FOR UPDATE
  SKIP LOCKED`` as they stream (never ``WHERE id IN (subquery)``: each row is locked
  and re-checked by itself), cut by the byte budget with window functions, and
  leased by one ``UPDATE ... RETURNING`` that adds one to ``attempts``: the fencing
  token, which a committed claim alone makes, so no token is ever handed out twice.
  Flow control (paused queues, concurrency and rate limits) takes a second path:
  the limits' rows are locked (claims of one limited queue or type go one at a
  time), the blocked pairs left out, and the jobs chosen in Python.
- complete_many: one fenced ``UPDATE ... FROM unnest(ids, tokens, results)``.
- enqueue: one ``INSERT ... SELECT FROM unnest(...)``, JSON passed as bytes.
- promote, expire, sweep: a batch of at most BATCH jobs per transaction
  (``SKIP LOCKED``), the method looping: bounded work per step.
- kick, peek (beanstalk's, #16): a queue's dead jobs by (finished_at, id), its
  scheduled and retrying ones by (run_at, id), of any type or of one: the first
  entries of four partial indexes (postgres_sql/0004_beanstalk.sql), at most n;
  the next queued job of a queue by a skip scan of the ready index's types.
- stats: counters kept by every transaction that changes jobs (the ``counts``
  table, sharded), never ``count(*)`` over jobs; the oldest queued job from the
  first job of each (type, queue, priority) FIFO, found by a skip scan of the ready
  index (one descent per FIFO, whatever the priorities and the jobs).

Dependencies: a waiting job has one ``waits`` row per job it still waits for and a
``deps`` count; the transaction that ends a job with ``has_waiters`` locks its
waiters (in id order) and moves them on. Waking: each process notifies what it did
(jobs ready, jobs finished) on a channel after its transactions commit, at most one
NOTIFY per EVENT_GAP (never inside a data transaction: a NOTIFY serialises commits);
``watch`` LISTENs; polling stays the backstop.

Faults. A connection error is a StoreError: it may mean *maybe* for a write whose
COMMIT got no answer (as on Redis); nothing is retried automatically but a
transaction PostgreSQL rolled back itself (a deadlock or serialization failure),
which changed nothing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
import os
import random
import re
import time
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from distqueue import codec
from distqueue.errors import (
    DistQueueError,
    IllegalTransition,
    InvalidJob,
    JobNotFound,
    LeaseLost,
    QueueFull,
    StoreError,
)
from distqueue.jobs import (
    MAX_WAITERS,
    Job,
    JobError,
    JobSpec,
    JobState,
    check_name,
)
from distqueue.lifecycle import check_transition
from distqueue.policy import DEFAULT_LEASE, DEFAULT_POISON_LIMIT, Retention, RetryPolicy
from distqueue.store.base import (
    ALL_QUEUES,
    MAX_KICK,
    MAX_LIMITS,
    MAX_PERIODICS,
    MAX_RESUME,
    MAX_WORKERS,
    WORKER_JOBS,
    WORKERS_PURGE,
    Enqueued,
    FailOutcome,
    Heartbeat,
    Limit,
    Periodic,
    Stats,
    WorkerRecord,
)
from distqueue.store.buckets import TOKEN_EPS, Bucket
from distqueue.store.checks import (
    MAX_INT,
    check_claim,
    check_id,
    check_limit,
    check_list,
    check_pause,
    check_periodic,
    check_priority,
    check_seconds,
    check_specs,
    check_worker,
    check_worker_info,
    check_workers,
    encode_result,
    periodic_key,
)

__all__ = [
    "DEFAULT_SCHEMA", "PostgresStore", "applied_version", "migrate", "migrations", "split_url",
]  # fmt: skip

log = logging.getLogger("distqueue.store")
T = TypeVar("T")
S = JobState

#: the schema a store lives in unless told otherwise
DEFAULT_SCHEMA = "distqueue"
#: a schema name: lower-case letters, digits and _, so it goes into SQL unquoted (and
#: the events channel, <schema>_events, stays within PostgreSQL's 63 characters)
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,47}\Z")
#: the states as stored (JobState's order)
STATES = list(JobState)
CODE = {state: i for i, state in enumerate(STATES)}
WAITING, SCHEDULED, QUEUED, RUNNING, RETRYING, SUCCEEDED, DEAD, CANCELLED = range(8)
UNFINISHED = (WAITING, SCHEDULED, QUEUED, RUNNING, RETRYING)
#: the most jobs one promote, expire or sweep step moves or deletes
BATCH = 1000
#: the most waiting jobs one operation moves on beyond the direct waiters of the jobs
#: it ended (a cascade of cancellations goes on in the next promotes)
CASCADE = 1000
#: the most statements one claim runs to make up for jobs skipped (expired, locked)
CLAIM_ROUNDS = 8
#: candidates a claim reads beyond the n it wants (rows other claims hold are skipped)
CLAIM_SLACK = 32
#: ... at most this many, in its last rounds (bounded work under contention)
CLAIM_DEEPEST = 8192
#: seconds between two event notifications of one store under load
EVENT_GAP = 0.002
#: job ids per notification at most (a payload must stay under 8000 bytes)
EVENT_IDS = 400
#: how many times a transaction PostgreSQL rolled back (deadlock, serialization) is run again
TX_TRIES = 5
TOTALS = ("submitted", "succeeded", "failed", "retried", "dead", "cancelled", "lost",
          "expired", "purged")  # fmt: skip
#: connection options of the store's own connections. Custom plans always: psycopg
#: prepares a statement run often, and PostgreSQL's generic plan of the fenced ACK
#: (ids and tokens as arrays) is a hash join over every running job: 5x slower
SESSION_OPTIONS = (
    "-c idle_in_transaction_session_timeout=60000 -c plan_cache_mode=force_custom_plan"
)
#: worker lease rows one expire round deletes at most (their jobs come with them)
LEASE_ROWS = 100
#: the pool: connections a store keeps open at least and at most; seconds a call
#: waits for one before StoreError
POOL_MIN, POOL_MAX, POOL_TIMEOUT = 1, 10, 10.0
#: the counters of priorities no job is queued at any more ('p:<priority>' rows whose
#: shards sum to 0: with 2**32 priorities they would pile up) are deleted by promote,
#: a bounded step at a time: at most COMPACT_ROWS counts rows looked at per step,
#: COMPACT_STEPS steps per promote, and, once a pass over them all ended, the next
#: pass COMPACT_EVERY seconds later
COMPACT_ROWS, COMPACT_STEPS, COMPACT_EVERY = 2048, 8, 5.0

_COLS = (
    "id", "type", "queue", "priority", "args", "payload", "octet_length(payload)", "state",
    "max_retries", "timeout", "deadline", "run_at", "unique_key", "attempts", "failures",
    "lost", "worker", "lease_until", "cancel_requested", "result", "result_kind", "error",
    "progress", "created_at", "started_at", "finished_at", "after_ids", "on_failure",
    "pass_results",
)  # fmt: skip


#: a running job covered by its worker's lease row: the row's last heartbeat came at
#: or after its claim (started_at) or, once touched, its last touch (``touch`` sets
#: the job's own lease, which a heartbeat before it does not overrule). A running job
#: has no run-at: its run_at column keeps the time of its last touch (NULL: none since
#: its claim, which sets it NULL; not shown: Job.run_at is None while it runs)
_COVERED = "l.worker = j.worker AND l.beat_at >= coalesce(j.run_at, j.started_at)"
#: a running job's lease as read (see postgres_sql/0002_worker_leases.sql): its own,
#: or, when its worker's row covers it (_COVERED), the later of its own and the
#: worker's row (the row's alone once the job was handed over to it)
_LEASE = (
    "coalesce((SELECT CASE WHEN j.lease_until IS NULL THEN l.until"
    " ELSE greatest(j.lease_until, l.until) END FROM {s}.leases l"
    " WHERE " + _COVERED + "), j.lease_until)"
)


def _cols(prefix: str = "", summary: bool = False, lease: bool = False) -> str:
    out = []
    for col in _COLS:
        if lease and col == "lease_until":
            out.append(_LEASE)
        elif summary and col in ("payload", "result"):
            out.append("NULL")
        elif col.startswith("octet_length("):
            out.append(f"octet_length({prefix}payload)")
        else:
            out.append(prefix + col)
    return ", ".join(out)


FULL = _cols("j.", lease=True)
SUMMARY = _cols("j.", summary=True, lease=True)
NCOLS = len(_COLS)


def _job(row: Sequence[Any]) -> Job:
    state = STATES[row[7]]
    result = row[19]
    if result is not None:
        result = bytes(result)
        if row[20] == "json":
            result = codec.loads(result)
    args, payload, error, progress = row[4], row[5], row[21], row[22]
    return Job(
        id=row[0], type=row[1], queue=row[2], priority=row[3],
        args=None if args is None else codec.loads(bytes(args)),
        payload=None if payload is None else bytes(payload), payload_size=row[6] or 0,
        state=state, max_retries=row[8], timeout=row[9], deadline=row[10],
        run_at=row[11] if state in (S.SCHEDULED, S.RETRYING, S.WAITING) else None,
        unique_key=row[12], attempts=row[13], failures=row[14], lost=row[15],
        worker=row[16], lease_until=row[17] if state is S.RUNNING else None,
        cancel_requested=bool(row[18]), result=result,
        error=None if error is None else JobError.from_dict(codec.loads(bytes(error))),
        progress=None if progress is None else codec.loads(bytes(progress)),
        created_at=row[23], started_at=row[24], finished_at=row[25], token=row[13],
        after=tuple(row[26] or ()), on_failure=row[27] or "cancel",
        pass_results=bool(row[28]),
    )  # fmt: skip


def _error_bytes(error: JobError) -> bytes:
    return codec.dumps(error.to_dict())


# -- SQL ------------------------------------------------------------------------------
# Templates: {s} is the schema. Parameters are psycopg's %(name)s (so no % operator:
# mod()). Every statement names its tables with the schema, so the same text runs on
# an application's own connection (distqueue.postgres.enqueue).

_COUNTS = (
    "INSERT INTO {s}.counts AS c (key, shard, n)"
    " SELECT k, mod(pg_backend_pid(), 16), d FROM unnest(%(keys)s::text[], %(deltas)s::bigint[])"
    " AS u(k, d) ORDER BY k"
    " ON CONFLICT (key, shard) DO UPDATE SET n = c.n + excluded.n"
)

# the (type, queue) pairs a claim looks at: given (the worker named both), the queues
# of the given types, or every pair; each a skip scan of jobs_ready, one index
# descent per pair holding queued jobs, whatever the number of jobs
_PAIRS_GIVEN = (
    "pairs(type, queue) AS (SELECT * FROM unnest(%(ptypes)s::text[], %(pqueues)s::text[]))"
)
_PAIRS_BY_TYPE = (
    "pq(type, queue) AS ("
    " SELECT t.type, (SELECT j.queue FROM {s}.jobs j WHERE j.state = 2 AND j.type = t.type"
    "  ORDER BY j.queue LIMIT 1) FROM unnest(%(types)s::text[]) AS t(type)"
    " UNION ALL"
    " SELECT pq.type, (SELECT j.queue FROM {s}.jobs j WHERE j.state = 2 AND j.type = pq.type"
    "  AND j.queue > pq.queue ORDER BY j.queue LIMIT 1) FROM pq WHERE pq.queue IS NOT NULL),"
    " pairs(type, queue) AS (SELECT type, queue FROM pq WHERE queue IS NOT NULL {qfilter})"
)
#: the age of the oldest transaction that holds a snapshot or a transaction id (so
#: holds back vacuum) in this database, of a client that is not distqueue (its own are
#: one statement each: they would only show as a constant ~0 s); client backends only
#: (autovacuum's are not the application's). A role that is not a superuser or in
#: pg_read_all_stats sees only its own sessions' xact_start.
_OLDEST_XACT = (
    "SELECT extract(epoch FROM now() - min(xact_start))::float8 FROM pg_stat_activity"
    " WHERE datname = current_database()"
    " AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)"
    " AND backend_type = 'client backend' AND application_name NOT LIKE 'distqueue%%'"
)

_PAIRS_ALL = (
    "pq(type, queue) AS ("
    " (SELECT j.type, j.queue FROM {s}.jobs j WHERE j.state = 2 ORDER BY j.type, j.queue LIMIT 1)"
    " UNION ALL"
    " SELECT n.type, n.queue FROM pq CROSS JOIN LATERAL (SELECT j.type, j.queue FROM {s}.jobs j"
    "  WHERE j.state = 2 AND (j.type, j.queue) > (pq.type, pq.queue)"
    "  ORDER BY j.type, j.queue LIMIT 1) n),"
    " pairs(type, queue) AS (SELECT type, queue FROM pq WHERE true {qfilter})"
)
_QFILTER = "AND queue = ANY(%(queues)s::text[])"

#: the first job of each (type, queue, priority) FIFO (stats: oldest_queued_at): a
#: skip scan of jobs_ready, one index descent per FIFO holding queued jobs (the row
#: comparison starts past every entry of the FIFO just read), whatever the number of
#: jobs in each; priorities may be any of 0..2**32-1, so they are walked, not listed
_HEADS = (
    "heads(type, queue, priority, at) AS ("
    " (SELECT j.type, j.queue, j.priority, coalesce(j.queued_at, j.created_at) FROM {s}.jobs j"
    "  WHERE j.state = 2 ORDER BY j.type, j.queue, j.priority, j.seq LIMIT 1)"
    " UNION ALL"
    " SELECT n.* FROM heads h CROSS JOIN LATERAL (SELECT j.type, j.queue, j.priority,"
    "  coalesce(j.queued_at, j.created_at) FROM {s}.jobs j WHERE j.state = 2"
    "  AND (j.type, j.queue, j.priority) > (h.type, h.queue, h.priority)"
    "  ORDER BY j.type, j.queue, j.priority, j.seq LIMIT 1) n)"
)

# what a claim does to each job chosen (c: id, expired): leased, or dead past its deadline
_CLAIM_SET = (
    "UPDATE {s}.jobs j SET"
    " state = CASE WHEN c.expired THEN 6 ELSE 3 END,"
    " attempts = CASE WHEN c.expired THEN j.attempts ELSE j.attempts + 1 END,"
    " worker = CASE WHEN c.expired THEN j.worker ELSE %(worker)s END,"
    " lease_until = CASE WHEN c.expired THEN NULL ELSE %(until)s::float8 END,"
    " started_at = CASE WHEN c.expired THEN j.started_at ELSE %(now)s::float8 END,"
    " finished_at = CASE WHEN c.expired THEN %(now)s::float8 END,"
    " error = CASE WHEN c.expired THEN convert_to(json_build_object('kind', 'expired',"
    "  'message', 'deadline ' || j.deadline || ' passed before it started',"
    "  'traceback', '')::text, 'UTF8') ELSE j.error END,"
    " progress = CASE WHEN c.expired THEN j.progress END,"
    " cancel_requested = false, seq = NULL, run_at = NULL"
)
_CLAIM_RETURNING = "RETURNING " + _cols("j.") + ", c.expired, j.has_waiters"

#: the fast claim: one statement, for a claim no paused queue or limit concerns (the
#: gate CTE checks that, in the same snapshot; when one does, nothing is taken and
#: the claim goes the flow-controlled way)
_CLAIM_FAST = (
    "WITH RECURSIVE {pairs},"
    " gate AS (SELECT EXISTS (SELECT 1 FROM {s}.paused x"
    "  WHERE x.queue IN (SELECT queue FROM pairs))"
    "  OR EXISTS (SELECT 1 FROM {s}.limits l"
    "  WHERE (l.concurrency IS NOT NULL OR l.rate IS NOT NULL)"
    "  AND ((l.scope = 'queue' AND l.name IN (SELECT queue FROM pairs))"
    "  OR (l.scope = 'type' AND l.name IN (SELECT type FROM pairs)))) AS gated),"
    " cand AS MATERIALIZED (SELECT c.id, c.priority, c.seq FROM pairs p CROSS JOIN LATERAL ("
    "  SELECT j.id, j.priority, j.seq FROM {s}.jobs j WHERE j.state = 2 AND j.type = p.type"
    "  AND j.queue = p.queue ORDER BY j.priority, j.seq LIMIT %(m)s) c"
    "  WHERE NOT (SELECT gated FROM gate) ORDER BY c.priority, c.seq LIMIT %(m)s),"
    " picked AS MATERIALIZED (SELECT l.id, l.size, l.deadline, c.priority, c.seq FROM cand c"
    "  CROSS JOIN LATERAL (SELECT j.id, j.size, j.deadline FROM {s}.jobs j"
    "  WHERE j.id = c.id AND j.state = 2 FOR UPDATE SKIP LOCKED) l LIMIT %(n)s),"
    " flags AS (SELECT id, priority, seq, size, coalesce(deadline < %(now)s::float8, false)"
    "  AS expired FROM picked),"
    " win AS (SELECT id, priority, seq, expired, coalesce(NOT expired"
    "  AND count(*) FILTER (WHERE NOT expired) OVER w > %(free)s"
    "  AND sum(size) FILTER (WHERE NOT expired) OVER w > %(room)s, false) AS stop"
    "  FROM flags WINDOW w AS (ORDER BY priority, seq ROWS UNBOUNDED PRECEDING)),"
    " cut AS (SELECT id, priority, seq, expired, bool_or(stop) OVER"
    "  (ORDER BY priority, seq ROWS UNBOUNDED PRECEDING) AS cut FROM win),"
    " chosen AS MATERIALIZED (SELECT id, priority, seq, expired FROM cut WHERE NOT cut),"
    " upd AS ("
    + _CLAIM_SET
    + " FROM chosen c WHERE j.id = c.id "
    + _CLAIM_RETURNING
    + ", c.priority AS o1, c.seq AS o2)"
    " SELECT m.*, u.* FROM (SELECT (SELECT gated FROM gate),"
    "  (SELECT count(*) FROM cand), (SELECT count(*) FROM picked),"
    "  (SELECT count(*) FROM chosen), (SELECT bool_or(cut) FROM cut)) m"
    " LEFT JOIN upd u ON true ORDER BY u.o1, u.o2"
)
#: the flow-controlled claim's candidates: per pair at most its cap, locked as they stream
_CLAIM_LOCK = (
    "WITH pairs AS (SELECT * FROM unnest(%(ptypes)s::text[], %(pqueues)s::text[],"
    "  %(caps)s::int[]) AS p(type, queue, cap)),"
    " cand AS MATERIALIZED (SELECT c.id, c.priority, c.seq FROM pairs p CROSS JOIN LATERAL ("
    "  SELECT j.id, j.priority, j.seq FROM {s}.jobs j WHERE j.state = 2 AND j.type = p.type"
    "  AND j.queue = p.queue ORDER BY j.priority, j.seq LIMIT p.cap) c"
    "  ORDER BY c.priority, c.seq LIMIT %(m)s)"
    " SELECT l.id, l.queue, l.type, l.size, l.deadline FROM cand c CROSS JOIN LATERAL ("
    "  SELECT j.id, j.queue, j.type, j.size, j.deadline FROM {s}.jobs j"
    "  WHERE j.id = c.id AND j.state = 2 FOR UPDATE SKIP LOCKED) l"
)
_CLAIM_APPLY = (
    "WITH c AS (SELECT * FROM unnest(%(ids)s::bigint[], %(expired)s::bool[]) AS c(id, expired)) "
    + _CLAIM_SET
    + " FROM c WHERE j.id = c.id "
    + _CLAIM_RETURNING
)

_WAKE = (  # jobs queued again, in the order given (a seq each, in that order)
    "WITH o AS MATERIALIZED (SELECT u.id, nextval('{s}.seq') AS seq FROM"
    " unnest(%(ids)s::bigint[]) WITH ORDINALITY AS u(id, ord))"
    " UPDATE {s}.jobs j SET state = 2, seq = o.seq, queued_at = %(now)s::float8,"
    " lease_until = NULL, run_at = NULL, cancel_requested = false {more}"
    " FROM o WHERE j.id = o.id"
)

#: peek of queued jobs (beanstalk's peek-ready): the job a claim of the queue (and type)
#: would take next, pauses and limits aside. Of one type: the head of its (type, queue)
#: FIFOs in jobs_ready. Of every type: the types holding queued jobs walked by a skip
#: scan of jobs_ready (one descent each, whatever the jobs), the head of each type's
#: FIFOs of the queue (one descent each), the most urgent of those: bounded by the
#: types, not the jobs.
_PEEK_READY_TYPE = (
    f"SELECT {FULL} FROM {{s}}.jobs j WHERE j.state = 2 AND j.type = %(type)s"
    " AND j.queue = %(queue)s ORDER BY j.priority, j.seq LIMIT 1"
)
_PEEK_READY = (
    "WITH RECURSIVE ts(type) AS ("
    " (SELECT j.type FROM {s}.jobs j WHERE j.state = 2 ORDER BY j.type LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT j.type FROM {s}.jobs j WHERE j.state = 2 AND j.type > ts.type"
    "  ORDER BY j.type LIMIT 1) FROM ts WHERE ts.type IS NOT NULL),"
    " head AS (SELECT h.id FROM ts CROSS JOIN LATERAL (SELECT j.id, j.priority, j.seq"
    "  FROM {s}.jobs j WHERE j.state = 2 AND j.type = ts.type AND j.queue = %(queue)s"
    "  ORDER BY j.priority, j.seq LIMIT 1) h ORDER BY h.priority, h.seq LIMIT 1)"
    f" SELECT {FULL} FROM head c JOIN {{s}}.jobs j ON j.id = c.id"
)


#: peek of scheduled and retrying jobs (peek-delayed) by (run_at, id), of dead ones
#: (peek-buried) by (finished_at, id): the first entry of jobs_due_queue or
#: jobs_dead_queue, or of jobs_due_type or jobs_dead_type (0004_beanstalk.sql)
def _peek_sql(states: str, order: str, typed: bool) -> str:
    return (
        f"SELECT {FULL} FROM {{s}}.jobs j WHERE j.state {states} AND j.queue = %(queue)s"
        + (" AND j.type = %(type)s" if typed else "")
        + f" ORDER BY j.{order}, j.id LIMIT 1"
    )


_SQL_TEMPLATES: dict[str, str] = {
    "counts": _COUNTS,
    "claim_lock": _CLAIM_LOCK,
    "claim_apply": _CLAIM_APPLY,
    "wake": _WAKE.replace("{more}", ""),
    "wake_lost": _WAKE.replace("{more}", ", lost = j.lost + 1"),
    "wake_retry": _WAKE.replace("{more}", ", failures = 0, lost = 0, finished_at = NULL"),
    "wake_priority": _WAKE.replace("{more}", ", priority = %(priority)s::int8"),
    "get": f"SELECT {FULL} FROM {{s}}.jobs j WHERE j.id = %(id)s",
    "keys": "SELECT unique_key, id, state FROM {s}.jobs WHERE unique_key = ANY(%(keys)s::text[])",
    "lock_deps": (
        "SELECT id, state FROM {s}.jobs WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id"
        " FOR NO KEY UPDATE"
    ),
    "waiters_of": (
        "SELECT dep, count(*) FROM {s}.waits WHERE dep = ANY(%(ids)s::bigint[]) GROUP BY dep"
    ),
    "depth_limits": (
        "SELECT name, max_depth FROM {s}.limits WHERE scope = 'queue'"
        " AND name = ANY(%(names)s::text[]) AND max_depth IS NOT NULL ORDER BY name FOR UPDATE"
    ),
    "held": (
        "SELECT k.queue, coalesce(sum(c.n), 0)::bigint FROM unnest(%(queues)s::text[]) AS k(queue)"
        " LEFT JOIN {s}.counts c ON c.key IN ('q0:' || k.queue, 'q1:' || k.queue,"
        " 'q2:' || k.queue, 'q3:' || k.queue, 'q4:' || k.queue) GROUP BY k.queue"
    ),
    "held_all": (
        # (a range of the key: the q0: .. q4: rows alone, however many others there are)
        "SELECT coalesce(sum(n), 0)::bigint FROM {s}.counts WHERE key >= 'q0:' AND key < 'q4;'"
    ),
    "insert": (
        "WITH s AS MATERIALIZED (SELECT u.*, nextval('{s}.jobs_id') AS id,"
        "  CASE WHEN u.state = 2 THEN nextval('{s}.seq') END AS seq FROM unnest("
        "  %(ord)s::int[], %(type)s::text[], %(queue)s::text[], %(priority)s::int8[],"
        "  %(args)s::bytea[], %(payload)s::bytea[], %(state)s::int2[], %(max_retries)s::int[],"
        "  %(timeout)s::float8[], %(deadline)s::float8[], %(run_at)s::float8[],"
        "  %(unique_key)s::text[], %(after)s::text[], %(on_failure)s::text[],"
        "  %(pass_results)s::bool[], %(deps)s::int[], %(size)s::int[]) AS u(ord, type, queue,"
        "  priority, args, payload, state, max_retries, timeout, deadline, run_at, unique_key,"
        "  after, on_failure, pass_results, deps, size)),"
        " ins AS (INSERT INTO {s}.jobs (id, seq, type, queue, priority, args, payload, state,"
        "  max_retries, timeout, deadline, run_at, unique_key, after_ids, on_failure,"
        "  pass_results, deps, size, created_at, queued_at, finished_at)"
        "  SELECT id, seq, type, queue, priority, args, payload, state, max_retries, timeout,"
        "  deadline, run_at, unique_key, after::bigint[], on_failure, pass_results, deps, size,"
        "  %(now)s::float8, CASE WHEN state = 2 THEN %(now)s::float8 END,"
        "  CASE WHEN state = 7 THEN %(now)s::float8 END FROM s ORDER BY ord"
        "  ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id)"
        " SELECT s.ord, s.id, ins.id IS NOT NULL FROM s LEFT JOIN ins ON ins.id = s.id"
        " ORDER BY s.ord"
    ),
    "add_waits": (
        "INSERT INTO {s}.waits (dep, waiter) SELECT * FROM unnest(%(deps)s::bigint[],"
        " %(waiters)s::bigint[]) ON CONFLICT DO NOTHING"
    ),
    "flag_waiters": (
        "UPDATE {s}.jobs SET has_waiters = true WHERE id = ANY(%(ids)s::bigint[])"
        " AND NOT has_waiters"
    ),
    # (best effort, its own transaction: not worth an fsync of the commit)
    "notify": "SELECT set_config('synchronous_commit', 'off', true),"
    " pg_notify(%(channel)s, %(payload)s)",
}


class _Sql:
    """The statements of one schema."""

    def __init__(self, schema: str) -> None:
        if not _SCHEMA.match(schema):
            raise ValueError(
                f"bad schema name {schema!r}: lower-case letters, digits and _, at most 48"
            )
        self.schema = schema
        self.channel = f"{schema}_events"
        self._cache: dict[str, str] = {}
        for name, text in _SQL_TEMPLATES.items():
            self._cache[name] = text.replace("{s}", schema)

    def __getitem__(self, name: str) -> str:
        return self._cache[name]

    def text(self, template: str) -> str:
        """A statement of this schema from a template (cached)."""
        found = self._cache.get(template)
        if found is None:
            found = self._cache[template] = template.replace("{s}", self.schema)
        return found


_SQLS: dict[str, _Sql] = {}


def sql_for(schema: str) -> _Sql:
    found = _SQLS.get(schema)
    if found is None:
        found = _SQLS[schema] = _Sql(schema)
    return found


# -- steps: an operation as a generator of statements ---------------------------------
# ``rows = yield (sql, params)``: the driver runs the statement (async in the store,
# sync or async on an application's connection in distqueue.postgres) and sends back
# its rows. So the same code serves both, inside whatever transaction the driver keeps.

Step = Generator[tuple[str, Mapping[str, Any]], list[tuple[Any, ...]], T]


class Deltas:
    """An operation's changes to the counters, flushed with it (``flush``)."""

    __slots__ = ("d",)

    def __init__(self) -> None:
        self.d: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        self.d[key] = self.d.get(key, 0) + n

    def move(self, queue: str, type_: str, prio: int, old: int | None, new: int | None) -> None:
        """A job of ``queue``/``type_``/``prio`` goes from state ``old`` to ``new``."""
        if old is not None:
            self.add(f"q{old}:{queue}", -1)
            if old == QUEUED:
                self.add(f"p:{prio}", -1)
            elif old == RUNNING:
                self.add(f"r:{type_}", -1)
        if new is not None:
            self.add(f"q{new}:{queue}", 1)
            if new == QUEUED:
                self.add(f"p:{prio}", 1)
            elif new == RUNNING:
                self.add(f"r:{type_}", 1)

    def total(self, name: str, n: int = 1) -> None:
        self.add(f"t:{name}", n)

    def flush(self, sql: _Sql) -> Step[None]:
        keys = sorted(k for k, v in self.d.items() if v)
        if keys:
            yield sql["counts"], {"keys": keys, "deltas": [self.d[k] for k in keys]}
        self.d = {}


def enqueue_steps(
    sql: _Sql, items: list[tuple[JobSpec, bytes | None]], now: float, deltas: Deltas
) -> Step[list[Enqueued]]:
    """Store the checked specs (check_specs) in one transaction (the driver's): the
    Store.enqueue contract. Counters go to ``deltas`` (the caller flushes them)."""
    # unique keys: the jobs that exist, and the first spec of each key in this call
    keys = sorted({spec.unique_key for spec, _ in items if spec.unique_key is not None})
    existing: dict[str, Enqueued] = {}
    if keys:
        for key, jid, state in (yield sql["keys"], {"keys": keys}):
            existing[key] = Enqueued(id=jid, created=False, state=STATES[state])
    # answers: an existing job, ("new", slot), or ("same", slot) for a repeated key
    plan: list[Enqueued | tuple[str, int]] = []
    fresh: list[tuple[int, JobSpec, bytes | None]] = []  # (spec index, spec, args)
    mine: dict[str, int] = {}
    for i, (spec, args) in enumerate(items):
        key = spec.unique_key
        if key is not None:
            if key in existing:
                plan.append(existing[key])
                continue
            if key in mine:
                plan.append(("same", mine[key]))
                continue
            mine[key] = len(fresh)
        plan.append(("new", len(fresh)))
        fresh.append((i, spec, args))
    states = [
        SCHEDULED if spec.run_at is not None and spec.run_at > now else QUEUED
        for _, spec, _ in fresh
    ]
    pending: dict[int, list[int]] = {}  # slot -> the jobs it waits for
    wanted = sorted({dep for _, spec, _ in fresh for dep in spec.after})
    if wanted:
        # locked: a job ending now waits for this transaction, and then sees its waiters
        found = {jid: state for jid, state in (yield sql["lock_deps"], {"ids": wanted})}
        counts = {dep: n for dep, n in (yield sql["waiters_of"], {"ids": sorted(found)})}
        extra: dict[int, int] = {}
        for slot, (index, spec, _) in enumerate(fresh):
            if not spec.after:
                continue
            waits: list[int] = []
            failed = False
            for dep in spec.after:
                state = found.get(dep)
                if state is None:
                    raise InvalidJob(f"job {index}: after names job {dep}, which does not exist")
                if state == SUCCEEDED:
                    continue
                if state in (DEAD, CANCELLED):
                    failed = failed or spec.on_failure == "cancel"
                    continue
                waits.append(dep)
            if failed:
                states[slot] = CANCELLED
                continue
            if not waits:
                continue
            for dep in waits:
                if counts.get(dep, 0) + extra.get(dep, 0) >= MAX_WAITERS:
                    raise InvalidJob(
                        f"job {index}: {MAX_WAITERS} jobs wait for job {dep} already"
                        f" (at most {MAX_WAITERS})"
                    )
                extra[dep] = extra.get(dep, 0) + 1
            states[slot] = WAITING
            pending[slot] = waits
    for state in states:
        check_transition(0, None, STATES[state])
    # max_depth: the limits of the queues that get jobs (locked: one enqueue at a time
    # counts a limited queue's jobs), and of all queues
    adding: dict[str, int] = {}
    for (_, spec, _), state in zip(fresh, states, strict=True):
        if state != CANCELLED:
            adding[spec.queue] = adding.get(spec.queue, 0) + 1
    if adding:
        names = sorted({*adding, ALL_QUEUES})
        depth: dict[str, int] = dict((yield sql["depth_limits"], {"names": names}))
        limited = sorted(q for q in adding if q in depth)
        if limited:
            held: dict[str, int] = dict((yield sql["held"], {"queues": limited}))
            for queue in limited:
                if held[queue] + adding[queue] > depth[queue]:
                    raise QueueFull(
                        f"queue {queue} holds {held[queue]} jobs (max_depth {depth[queue]})"
                    )
        if ALL_QUEUES in depth:
            [(held_all,)] = yield sql["held_all"], {}
            if held_all + sum(adding.values()) > depth[ALL_QUEUES]:
                raise QueueFull(f"all queues hold {held_all} jobs (max_depth {depth[ALL_QUEUES]})")
    ids: list[int] = []
    created: list[bool] = []
    if fresh:
        cols: dict[str, list[Any]] = {name: [] for name in (
            "ord", "type", "queue", "priority", "args", "payload", "state", "max_retries",
            "timeout", "deadline", "run_at", "unique_key", "after", "on_failure", "pass_results",
            "deps", "size",
        )}  # fmt: skip
        for slot, ((_, spec, args), state) in enumerate(zip(fresh, states, strict=True)):
            payload = None if spec.payload is None else bytes(spec.payload)
            cols["ord"].append(slot)
            cols["type"].append(spec.type)
            cols["queue"].append(spec.queue)
            cols["priority"].append(spec.priority)
            cols["args"].append(args)
            cols["payload"].append(payload)
            cols["state"].append(state)
            cols["max_retries"].append(spec.max_retries)
            cols["timeout"].append(spec.timeout)
            cols["deadline"].append(spec.deadline)
            cols["run_at"].append(spec.run_at if state in (SCHEDULED, WAITING) else None)
            cols["unique_key"].append(spec.unique_key)
            cols["after"].append("{" + ",".join(map(str, spec.after)) + "}" if spec.after else None)
            cols["on_failure"].append(None if spec.on_failure == "cancel" else spec.on_failure)
            cols["pass_results"].append(spec.pass_results)
            cols["deps"].append(len(pending.get(slot, ())))
            cols["size"].append(len(args or b"") + len(payload or b""))
        rows = yield sql["insert"], {**cols, "now": now}
        ids = [row[1] for row in rows]
        created = [row[2] for row in rows]
        # a unique key another transaction took meanwhile: its job is the answer
        lost_keys = [fresh[slot][1].unique_key for slot, ok in enumerate(created) if not ok]
        if lost_keys:
            for key, jid, state in (
                yield sql["keys"], {"keys": sorted({k for k in lost_keys if k})}
            ):
                existing[key] = Enqueued(id=jid, created=False, state=STATES[state])
        made = 0
        dep_rows: list[tuple[int, int]] = []
        for slot, ((_, spec, _), state) in enumerate(zip(fresh, states, strict=True)):
            if not created[slot]:
                continue
            made += 1
            deltas.move(spec.queue, spec.type, spec.priority, None, state)
            if state == CANCELLED:
                deltas.total("cancelled")
            for dep in pending.get(slot, ()):
                dep_rows.append((dep, ids[slot]))
        if made:
            deltas.total("submitted", made)
        if dep_rows:
            dep_rows.sort()
            yield sql["add_waits"], {"deps": [d for d, _ in dep_rows],
                                     "waiters": [w for _, w in dep_rows]}  # fmt: skip
            yield sql["flag_waiters"], {"ids": sorted({d for d, _ in dep_rows})}
    out: list[Enqueued] = []
    for answer in plan:
        if isinstance(answer, Enqueued):
            out.append(answer)
            continue
        how, slot = answer
        key = fresh[slot][1].unique_key
        if not created[slot]:
            assert key is not None
            out.append(existing[key])
        elif how == "same":
            out.append(Enqueued(id=ids[slot], created=False, state=STATES[states[slot]]))
        else:
            out.append(Enqueued(id=ids[slot], created=True, state=STATES[states[slot]]))
    return out


# -- migrations -------------------------------------------------------------------------

_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


def migrations() -> list[Migration]:
    """The schema's migrations (postgres_sql/NNNN_name.sql), in order."""
    out = []
    folder = resources.files("distqueue.store").joinpath("postgres_sql")
    for entry in folder.iterdir():
        found = _MIGRATION.match(entry.name)
        if not found:
            continue
        text = entry.read_text()
        _, sep, rest = text.partition("-- distqueue:up\n")
        up, sep2, down = rest.partition("-- distqueue:down\n")
        if not sep or not sep2:
            raise ValueError(f"{entry.name}: no '-- distqueue:up' and '-- distqueue:down' parts")
        out.append(Migration(int(found.group(1)), found.group(2), up, down))
    out.sort(key=lambda m: m.version)
    return out


async def applied_version(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """The schema's version (0: none, or no schema)."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.migrations",))
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {schema}.migrations")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(
    conn: psycopg.AsyncConnection[Any], schema: str = DEFAULT_SCHEMA, *, to: int | None = None
) -> list[str]:
    """Bring ``schema`` to version ``to`` (None: the latest), up or down, in one
    transaction under an advisory lock (so servers starting together migrate once).
    Returns what was done, a line per migration."""
    sql_for(schema)  # checks the name
    done: list[str] = []
    all_ = migrations()
    latest = all_[-1].version if all_ else 0
    target = latest if to is None else to
    if not 0 <= target <= latest:
        raise ValueError(f"no schema version {target} (0..{latest})")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"distqueue:{schema}",))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await applied_version(conn, schema)
        if current > latest:
            raise StoreError(
                f"schema {schema} is at version {current}, newer than this distqueue knows"
                f" ({latest}): upgrade distqueue"
            )
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        for m in all_:
            if current < m.version <= target:
                await conn.execute(m.up.encode())
                await conn.execute(
                    f"INSERT INTO {schema}.migrations (version, name) VALUES (%s, %s)",
                    (m.version, m.name),
                )
                done.append(f"applied {m.version:04d}_{m.name}")
        for m in reversed(all_):
            if target < m.version <= current:
                await conn.execute(m.down.encode())
                await conn.execute(
                    f"DELETE FROM {schema}.migrations WHERE version = %s", (m.version,)
                )
                done.append(f"reverted {m.version:04d}_{m.name}")
    return done


# -- the store ------------------------------------------------------------------------------

_URL_OPTIONS = ("schema", "migrate", "pool")


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL without distqueue's own query options (schema, migrate, pool), and them."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, {}
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _URL_OPTIONS:
            ours[key] = value
        else:
            rest.append((key, value))
    return (base + "?" + urlencode(rest) if rest else base), ours


def _redact(url: str) -> str:
    return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", url)


def _store_error(exc: BaseException) -> StoreError:
    text = str(exc).strip().split("\n", 1)[0] or type(exc).__name__
    return StoreError(f"postgres: {text} ({type(exc).__name__})")


_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
#: what PostgreSQL answers a prepared statement whose result's types a migration changed
_STALE_PLAN = "cached plan must not change result type"


@dataclasses.dataclass(slots=True)
class _Row:
    """What an operation needs of a job it moves."""

    id: int
    queue: str
    type: str
    priority: int
    state: int
    has_waiters: bool = False


class PostgresStore:
    """The Store contract on PostgreSQL. Open with ``await PostgresStore.open(url)``."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        retry_policy: RetryPolicy | None = None,
        poison_limit: int = DEFAULT_POISON_LIMIT,
        rng: random.Random | None = None,
        synchronous: str | None = None,
        migrate: bool | None = None,
        pool_size: int | None = None,
    ) -> None:
        url, ours = split_url(url)
        self.url = url
        self.schema = schema or ours.get("schema") or DEFAULT_SCHEMA
        self.sql = sql_for(self.schema)
        self.retry_policy = retry_policy or RetryPolicy()
        self.poison_limit = poison_limit
        self._rng = rng or random.Random()
        if migrate is None:
            migrate = ours.get("migrate", "on").lower() not in ("off", "0", "false", "no")
        self.migrate = migrate
        options = SESSION_OPTIONS
        if synchronous is not None and synchronous.upper() in ("OFF", "NORMAL"):
            # (the server's --durability normal: as the embedded store's, an answered
            # change may be lost to a crash of the machine, never half-applied)
            options += " -c synchronous_commit=off"
        #: what an answered change survives, read from the database at open: "full"
        #: (commits flushed: synchronous_commit on, fsync on), "normal"
        #: (synchronous_commit off) or "off" (the server runs with fsync off)
        self.durability = "full"
        size = pool_size or int(ours.get("pool", POOL_MAX))
        self._pool = AsyncConnectionPool(
            url, min_size=min(POOL_MIN, size), max_size=size, open=False, timeout=POOL_TIMEOUT,
            kwargs={"autocommit": True, "options": options, "application_name": "distqueue"},
            name=f"distqueue-{self.schema}",
        )  # fmt: skip
        self._origin = os.urandom(6).hex()
        self._pending_ready = False
        self._pending_done: list[int] = []
        self._publisher: asyncio.Task[None] | None = None
        self._last_publish = 0.0
        self._closed = False
        self._compact_after = "p:"  # where the next step of the counters' compaction starts
        self._compact_due = 0.0  # (time.monotonic()) when the next pass may start

    @classmethod
    async def open(cls, url: str, **options: Any) -> PostgresStore:
        """Connect, and migrate the schema (unless told not to); StoreError when the
        database cannot be reached or the schema is not there (and not migrated)."""
        store = cls(url, **options)
        try:
            # one connection first, so that a database that refuses or does not
            # resolve says why at once (the pool would retry it until POOL_TIMEOUT)
            probe = await psycopg.AsyncConnection.connect(
                store.url, autocommit=True, connect_timeout=int(POOL_TIMEOUT)
            )
            await probe.close()
            await store._pool.open(wait=True, timeout=POOL_TIMEOUT)
            async with store._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT current_setting('synchronous_commit'), current_setting('fsync')"
                )
                commit, fsync = (await cur.fetchone()) or ("on", "on")
                store.durability = (
                    "off" if fsync != "on" else "normal" if commit == "off" else "full"
                )
                current = await applied_version(conn, store.schema)
                latest = migrations()[-1].version
                if current != latest:  # (no DDL at all when it is up to date)
                    if store.migrate:
                        await migrate(conn, store.schema)
                    else:
                        raise StoreError(
                            f"schema {store.schema} is at version {current}, this distqueue"
                            f" needs {latest}: run distqueue migrate --store ..."
                        )
        except StoreError:
            await store.close()
            raise
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            await store.close()
            raise StoreError(
                f"cannot open the store at PostgreSQL {_redact(url)}: {_store_error(exc)}"
            ) from None
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._publisher is not None and not self._publisher.done():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._publisher)
        with contextlib.suppress(Exception):
            await self._pool.close()

    # -- running operations ---------------------------------------------------------------

    async def _tx(self, make: Callable[[], Step[T]], *, tx: bool = True) -> T:
        """Run the steps ``make()`` gives in one transaction (``tx=False``: a single
        statement, autocommit); a deadlock or serialization failure (PostgreSQL rolled
        the transaction back) runs them again, and so does a prepared statement made
        stale by a migration. Connection errors are StoreError."""
        if self._closed:
            raise StoreError("the store is closed")
        for attempt in range(TX_TRIES):
            try:
                async with self._pool.connection() as conn:
                    cur = conn.cursor(row_factory=tuple_row)
                    try:
                        if tx:
                            async with conn.transaction():
                                return await _drive(cur, make())
                        return await _drive(cur, make())
                    except pg_errors.FeatureNotSupported as exc:
                        if _STALE_PLAN not in str(exc) or attempt == TX_TRIES - 1:
                            raise
                        # a migration changed a column's type (0003: priority) under
                        # this connection's prepared statements, which PostgreSQL
                        # refuses from then on (the statement did nothing): forget
                        # them (psycopg too, seeing DEALLOCATE ALL) and run it again
                        await conn.execute("DEALLOCATE ALL")
            except _RETRYABLE as exc:
                if attempt == TX_TRIES - 1:
                    raise _store_error(exc) from None
                await asyncio.sleep(0.001 * (attempt + 1) * self._rng.random())
            except (psycopg.Error, PoolTimeout, OSError) as exc:
                raise _store_error(exc) from None
        raise AssertionError("unreachable")

    async def _run(self, name: str, *args: Any) -> Any:
        """One bounded step of a batch operation (promote, expire, purge), each its own
        transaction (tests/contract/test_bounded.py counts them here)."""
        if name == "promote":
            return await self._tx(lambda: self._promote_step(*args))
        if name == "expire":
            return await self._tx(lambda: self._expire_step(*args))
        if name == "purge":
            return await self._tx(lambda: self._purge_step(*args))
        if name == "compact":
            return await self._tx(lambda: self._compact_step(*args))
        raise ValueError(name)

    # -- events: NOTIFY after commits, debounced; watch() LISTENs ---------------------------

    def _announce(self, *, ready: bool = False, done: Collection[int] = ()) -> None:
        if self._closed:
            return
        self._pending_ready = self._pending_ready or ready
        self._pending_done.extend(done)
        if not (self._pending_ready or self._pending_done):
            return
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(self._publish())

    async def _publish(self) -> None:
        while self._pending_ready or self._pending_done:
            await asyncio.sleep(max(0.0, self._last_publish + EVENT_GAP - time.monotonic()))
            ready, done = self._pending_ready, self._pending_done[:EVENT_IDS]
            self._pending_ready = False
            del self._pending_done[:EVENT_IDS]
            payload = f"{self._origin} {int(ready)} {','.join(map(str, done))}"
            self._last_publish = time.monotonic()
            try:
                async with self._pool.connection() as conn:
                    params = {"channel": self.sql.channel, "payload": payload}
                    await conn.execute(self.sql["notify"], params)
            except Exception as exc:  # the others find out at their next poll
                log.debug("notifying store events failed: %s", exc)
                self._pending_ready, self._pending_done = False, []
                return

    async def watch(
        self, on_ready: Callable[[], None], on_done: Callable[[Collection[int]], None]
    ) -> None:
        """Report the other processes' events until cancelled; LISTEN again after a
        lost connection (and report "ready" then: something may have been missed)."""
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name="distqueue-watch"
                )
            except (psycopg.Error, OSError) as exc:
                log.warning("store events: %s; listening again in %.1fs", exc, delay)
            else:
                try:
                    await conn.execute(f'LISTEN "{self.sql.channel}"')
                    on_ready()
                    delay = 0.1
                    async for note in conn.notifies():
                        self._dispatch(note.payload, on_ready, on_done)
                except (psycopg.Error, OSError) as exc:
                    log.warning("store events: %s; listening again in %.1fs", exc, delay)
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _dispatch(
        self, data: str, on_ready: Callable[[], None], on_done: Callable[[Collection[int]], None]
    ) -> None:
        origin, _, rest = data.partition(" ")
        if origin == self._origin:
            return
        try:
            ready, _, ids = rest.partition(" ")
            done = [int(i) for i in ids.split(",")] if ids else []
        except ValueError:
            log.debug("ignoring a malformed store event %r", data[:100])
            return
        if ready == "1":
            on_ready()
        if done:
            on_done(done)

    # -- shared pieces of the operations (steps) ----------------------------------------

    def _finish_rows(
        self, rows: list[_Row], new: int, now: float, deltas: Deltas,
        error: bytes | None = None, lost: bool = False,
    ) -> Step[list[tuple[int, bool]]]:  # fmt: skip
        """End these jobs dead or cancelled (counted); returns the (id, ok) of those
        with waiters, for _ended."""
        if not rows:
            return []
        for r in rows:
            check_transition(r.id, STATES[r.state], STATES[new])
            deltas.move(r.queue, r.type, r.priority, r.state, new)
        deltas.total("dead" if new == DEAD else "cancelled", len(rows))
        sets = "state = %(new)s, finished_at = %(now)s::float8, lease_until = NULL, run_at = NULL"
        if error is not None:
            sets += ", error = %(error)s"
        if lost:
            sets += ", lost = lost + 1"
        yield (
            self.sql.text(f"UPDATE {{s}}.jobs SET {sets} WHERE id = ANY(%(ids)s::bigint[])"),
            {"new": new, "now": now, "error": error, "ids": [r.id for r in rows]},
        )
        return [(r.id, False) for r in rows if r.has_waiters]

    def _wake_rows(
        self, rows: list[_Row], now: float, deltas: Deltas, how: str = "wake",
        params: Mapping[str, Any] | None = None,
    ) -> Step[None]:  # fmt: skip
        """Queue these jobs again, in this order (at the back of their priorities);
        ``params``: those of the ``how`` statement beyond ids and now."""
        if not rows:
            return
        for r in rows:
            check_transition(r.id, STATES[r.state], S.QUEUED)
            deltas.move(r.queue, r.type, r.priority, r.state, QUEUED)
        yield self.sql[how], {**(params or {}), "ids": [r.id for r in rows], "now": now}

    def _revive(self, rows: list[_Row], now: float, deltas: Deltas) -> Step[None]:
        """Queue these dead or cancelled jobs again, in this order, their failures and
        lost reset (retry, kick), counted as retried."""
        if not rows:
            return
        # one that ended in a cascade not yet done: its waiters move on as it ended, first
        left = yield (
            self.sql.text(
                "DELETE FROM {s}.cascade WHERE dep = ANY(%(ids)s::bigint[]) RETURNING dep"
            ),
            {"ids": [r.id for r in rows]},
        )
        if left:
            yield from self._ended([(dep, False) for (dep,) in left], now, deltas)
        yield from self._wake_rows(rows, now, deltas, "wake_retry")
        deltas.total("retried", len(rows))

    def _ended(self, ended: list[tuple[int, bool]], now: float, deltas: Deltas) -> Step[list[int]]:
        """Jobs that ended (id, ok: succeeded): their waiters move on in this
        transaction (cancelled when one failed and on_failure is "cancel", and their
        own waiters in turn; queued or scheduled when they wait for nothing more).
        The cascade past CASCADE jobs moved goes to the cascade table, for promote.
        Returns the ids queued."""
        woken: list[int] = []
        level = sorted(set(ended))
        moved = 0
        first = True
        while level:
            if not first and moved >= CASCADE:
                yield (
                    self.sql.text(
                        "INSERT INTO {s}.cascade (dep, ok) SELECT * FROM unnest(%(deps)s::bigint[],"
                        " %(oks)s::bool[]) ON CONFLICT DO NOTHING"
                    ),
                    {"deps": [d for d, _ in level], "oks": [ok for _, ok in level]},
                )
                break
            first = False
            deps = [d for d, _ in level]
            outcome = dict(level)
            pairs = yield (
                self.sql.text(
                    "SELECT dep, waiter FROM {s}.waits WHERE dep = ANY(%(ids)s::bigint[])"
                    " ORDER BY waiter, dep"
                ),
                {"ids": deps},
            )
            yield (
                self.sql.text(
                    "UPDATE {s}.jobs SET has_waiters = false WHERE id = ANY(%(ids)s::bigint[])"
                    " AND has_waiters"
                ),
                {"ids": deps},
            )
            if not pairs:
                break
            by_waiter: dict[int, list[int]] = {}
            for dep, waiter in pairs:
                by_waiter.setdefault(waiter, []).append(dep)
            # the waiters locked first (id order), then their waits rows deleted: a
            # cancel of one of them that got there first is waited for
            rows = yield (
                self.sql.text(
                    "SELECT id, queue, type, priority, state, has_waiters, deps, on_failure,"
                    " run_at, after_ids FROM {s}.jobs WHERE id = ANY(%(ids)s::bigint[])"
                    " ORDER BY id FOR UPDATE"
                ),
                {"ids": sorted(by_waiter)},
            )
            yield (
                self.sql.text("DELETE FROM {s}.waits WHERE dep = ANY(%(ids)s::bigint[])"),
                {"ids": deps},
            )
            cancel: list[_Row] = []
            wake: list[_Row] = []
            schedule: list[_Row] = []
            decrement: list[tuple[int, int]] = []
            for (
                jid,
                queue,
                type_,
                prio,
                state,
                has_waiters,
                ndeps,
                on_failure,
                run_at,
                after,
            ) in rows:
                if state != WAITING:
                    continue
                mine = by_waiter[jid]
                r = _Row(jid, queue, type_, prio, state, has_waiters)
                failed = any(not outcome[d] for d in mine)
                if failed and (on_failure or "cancel") == "cancel":
                    cancel.append(r)
                    others = [d for d in (after or ()) if d not in mine]
                    if others:
                        yield (
                            self.sql.text(
                                "DELETE FROM {s}.waits WHERE waiter = %(w)s"
                                " AND dep = ANY(%(ids)s::bigint[])"
                            ),
                            {"w": jid, "ids": others},
                        )
                elif ndeps - len(mine) <= 0:
                    if run_at is not None and run_at > now:
                        schedule.append(r)
                    else:
                        wake.append(r)
                else:
                    decrement.append((jid, len(mine)))
            moved += len(cancel) + len(wake) + len(schedule)
            nxt = yield from self._finish_rows(cancel, CANCELLED, now, deltas)
            yield from self._wake_rows(wake, now, deltas)
            woken += [r.id for r in wake]
            if schedule:
                for r in schedule:
                    check_transition(r.id, S.WAITING, S.SCHEDULED)
                    deltas.move(r.queue, r.type, r.priority, WAITING, SCHEDULED)
                yield (
                    self.sql.text(
                        "UPDATE {s}.jobs SET state = 1, deps = 0 WHERE id = ANY(%(ids)s::bigint[])"
                    ),
                    {"ids": [r.id for r in schedule]},
                )
            if wake:
                yield (
                    self.sql.text("UPDATE {s}.jobs SET deps = 0 WHERE id = ANY(%(ids)s::bigint[])"),
                    {"ids": [r.id for r in wake]},
                )
            if decrement:
                yield (
                    self.sql.text(
                        "UPDATE {s}.jobs j SET deps = j.deps - d.k FROM unnest(%(ids)s::bigint[],"
                        " %(ks)s::int[]) AS d(id, k) WHERE j.id = d.id"
                    ),
                    {"ids": [i for i, _ in decrement], "ks": [k for _, k in decrement]},
                )
            level = sorted(nxt)
        return woken

    def _lose(
        self, rows: list[tuple[_Row, int, bool]], now: float, deltas: Deltas
    ) -> Step[list[int]]:
        """Leases that ended without an answer ((row, lost so far, cancel asked), in
        order): each queued again, dead (poison) or cancelled. Returns the ids woken."""
        requeue: list[_Row] = []
        cancelled: list[_Row] = []
        poison: dict[int, list[_Row]] = {}
        for r, lost, cancel in rows:
            if cancel:
                cancelled.append(r)
            elif lost + 1 > self.poison_limit:
                poison.setdefault(lost + 1, []).append(r)
            else:
                requeue.append(r)
        deltas.total("lost", len(rows))
        yield from self._wake_rows(requeue, now, deltas, "wake_lost")
        ended = yield from self._finish_rows(cancelled, CANCELLED, now, deltas, lost=True)
        for lost, dead in poison.items():
            message = (
                f"lease lost {lost} times without an answer: workers keep dying or freezing"
                " on this job"
            )
            error = _error_bytes(JobError(kind="poison", message=message))
            ended += yield from self._finish_rows(dead, DEAD, now, deltas, error, lost=True)
        woken = [r.id for r in requeue]
        if ended:
            woken += yield from self._ended(ended, now, deltas)
        return woken

    # -- the Store protocol: enqueue ---------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec], now: float) -> list[Enqueued]:
        items = check_specs(specs)
        if not items:
            return []

        def steps() -> Step[list[Enqueued]]:
            deltas = Deltas()
            out = yield from enqueue_steps(self.sql, items, now, deltas)
            yield from deltas.flush(self.sql)
            return out

        out = await self._tx(steps)
        self._announce(ready=any(e.created and e.state is S.QUEUED for e in out))
        return out

    # -- claim ---------------------------------------------------------------------------------

    def _pairs_cte(
        self, queues: list[str] | None, types: list[str] | None
    ) -> tuple[str, dict[str, Any]]:
        """The pairs CTE of a claim and its parameters."""
        qfilter = "" if queues is None else _QFILTER
        params: dict[str, Any] = {"queues": queues, "types": types}
        if types is not None and queues is not None and len(types) * len(queues) <= 64:
            params["ptypes"] = [t for t in types for _ in queues]
            params["pqueues"] = [q for _ in types for q in queues]
            return _PAIRS_GIVEN, params
        if types is not None:
            return _PAIRS_BY_TYPE.replace("{qfilter}", qfilter), params
        return _PAIRS_ALL.replace("{qfilter}", qfilter), params

    async def claim(
        self,
        worker: str,
        n: int,
        now: float,
        *,
        queues: Collection[str] | None = None,
        types: Collection[str] | None = None,
        lease: float = DEFAULT_LEASE,
        max_bytes: int | None = None,
    ) -> list[Job]:
        if check_claim(worker, n, lease) == 0:
            return []
        if max_bytes is not None:
            check_id("max_bytes", max_bytes)
        qs = None if queues is None else sorted(set(queues))
        ts = None if types is None else sorted(set(types))
        if qs == [] or ts == []:
            return []
        jobs, expired = await self._tx(
            lambda: self._claim_steps(worker, n, now, qs, ts, now + lease, max_bytes)
        )
        if expired:
            self._announce(done=expired)
        return jobs

    def _claim_steps(
        self, worker: str, n: int, now: float, qs: list[str] | None, ts: list[str] | None,
        until: float, max_bytes: int | None,
    ) -> Step[tuple[list[Job], list[int]]]:  # fmt: skip
        pairs, pparams = self._pairs_cte(qs, ts)
        fast = self.sql.text(_CLAIM_FAST.replace("{pairs}", pairs))
        deltas = Deltas()
        jobs: list[Job] = []
        expired: list[int] = []
        ended: list[tuple[int, bool]] = []
        room = MAX_INT if max_bytes is None else max_bytes
        for round_ in range(CLAIM_ROUNDS):
            want = n - len(jobs)
            # each round looks deeper: the rows at the heads may be held by claims
            # running at the same moment (skipped, not waited for), and until those
            # commit every round sees them queued again at the same place
            m = want + min(CLAIM_SLACK << (2 * round_), CLAIM_DEEPEST)
            rows = yield fast, {**pparams, "m": m, "n": want, "now": now, "until": until,
                                "worker": worker, "room": room,
                                "free": 0 if jobs else 1}  # fmt: skip
            gated, ncand, npicked, nchosen, cut = rows[0][:5]
            if gated:
                more, gone = yield from self._claim_gated(
                    worker, n - len(jobs), now, qs, ts, until, room, bool(jobs), deltas
                )
                jobs += more
                expired += gone
                break
            got = 0
            for row in rows:
                if row[5] is None:
                    continue
                data = row[5 : 5 + NCOLS]
                is_expired, has_waiters = row[5 + NCOLS], row[6 + NCOLS]
                job = _job(data)
                if is_expired:
                    deltas.move(job.queue, job.type, job.priority, QUEUED, DEAD)
                    deltas.total("dead")
                    deltas.total("expired")
                    expired.append(job.id)
                    if has_waiters:
                        ended.append((job.id, False))
                else:
                    deltas.move(job.queue, job.type, job.priority, QUEUED, RUNNING)
                    jobs.append(job)
                    room -= (job.payload_size or 0) + _args_size(data[4])
                    got += 1
            # short of n: only because jobs expired or were locked by other claims
            # (then look again), not because the queues ran dry or the budget is spent
            if len(jobs) >= n or cut or not (nchosen > got or ncand > npicked):
                break
        if ended:
            yield from self._ended(ended, now, deltas)
        yield from deltas.flush(self.sql)
        return jobs, expired

    def _claim_gated(
        self, worker: str, n: int, now: float, qs: list[str] | None, ts: list[str] | None,
        until: float, room: int, taken: bool, deltas: Deltas,
    ) -> Step[tuple[list[Job], list[int]]]:  # fmt: skip
        """The claim under flow control: the limits of the candidate pairs locked (one
        such claim at a time per limited queue or type), paused and full pairs left
        out, the jobs chosen here one by one (concurrency slots, rate tokens, the byte
        budget), then leased in one statement."""
        pairs_cte, pparams = self._pairs_cte(qs, ts)
        pairs = yield (
            self.sql.text("WITH RECURSIVE " + pairs_cte + " SELECT type, queue FROM pairs"),
            pparams,
        )
        if not pairs:
            return [], []
        pq = sorted({q for _, q in pairs})
        pt = sorted({t for t, _ in pairs})
        paused = {q for (q,) in (yield (
            self.sql.text("SELECT queue FROM {s}.paused WHERE queue = ANY(%(qs)s::text[])"),
            {"qs": pq},
        ))}  # fmt: skip
        limit_rows = yield (
            self.sql.text(
                "SELECT scope, name, concurrency, rate, period, burst, tokens, tokens_at"
                " FROM {s}.limits WHERE ((scope = 'queue' AND name = ANY(%(qs)s::text[]))"
                " OR (scope = 'type' AND name = ANY(%(ts)s::text[])))"
                " AND (concurrency IS NOT NULL OR rate IS NOT NULL)"
                " ORDER BY scope, name FOR UPDATE"
            ),
            {"qs": pq, "ts": pt},
        )
        gate = _Gate(now)
        keys: list[str] = []
        for scope, name, conc, rate, period, burst, tokens, at in limit_rows:
            gate.limits[(scope, name)] = _Lim(conc, rate, period, burst, tokens, at)
            if conc is not None:
                keys.append(f"q{RUNNING}:{name}" if scope == "queue" else f"r:{name}")
        if keys:
            running: dict[str, int] = dict((yield (
                self.sql.text(
                    "SELECT key, sum(n)::bigint FROM {s}.counts WHERE key = ANY(%(keys)s::text[])"
                    " GROUP BY key"
                ),
                {"keys": sorted(keys)},
            )))  # fmt: skip
            for (scope, name), lim in gate.limits.items():
                key = f"q{RUNNING}:{name}" if scope == "queue" else f"r:{name}"
                lim.running = int(running.get(key, 0))
        jobs: list[Job] = []
        expired: list[int] = []
        ended: list[tuple[int, bool]] = []
        for _ in range(CLAIM_ROUNDS):
            want = n - len(jobs)
            open_pairs: list[tuple[str, str, int]] = []
            for t, q in pairs:
                if q in paused:
                    continue
                cap = gate.cap(q, t, want)
                if cap > 0:
                    open_pairs.append((t, q, cap))
            if not open_pairs:
                break
            cand = yield self.sql["claim_lock"], {
                "ptypes": [t for t, _, _ in open_pairs], "pqueues": [q for _, q, _ in open_pairs],
                "caps": [c for _, _, c in open_pairs], "m": want + CLAIM_SLACK,
            }  # fmt: skip
            chosen: list[tuple[int, bool]] = []
            count = 0
            stopped = False
            for jid, queue, type_, size, deadline in cand:
                if deadline is not None and deadline < now:
                    chosen.append((jid, True))
                    continue
                if not gate.room(queue, type_):
                    continue
                if (taken or count) and size > room:
                    stopped = True
                    break
                gate.took(queue, type_)
                chosen.append((jid, False))
                room -= size
                count += 1
                if count == want:
                    break
            if not chosen:
                break
            rows = yield self.sql["claim_apply"], {
                "ids": [i for i, _ in chosen], "expired": [e for _, e in chosen], "now": now,
                "until": until, "worker": worker,
            }  # fmt: skip
            by_id = {row[0]: row for row in rows}
            for jid, _ in chosen:
                row = by_id[jid]
                job = _job(row[:NCOLS])
                if row[NCOLS]:
                    deltas.move(job.queue, job.type, job.priority, QUEUED, DEAD)
                    deltas.total("dead")
                    deltas.total("expired")
                    expired.append(jid)
                    if row[NCOLS + 1]:
                        ended.append((jid, False))
                else:
                    deltas.move(job.queue, job.type, job.priority, QUEUED, RUNNING)
                    jobs.append(job)
            taken = taken or count > 0
            if stopped or len(jobs) >= n:
                break
        used = gate.used()
        if used:
            yield (
                self.sql.text(
                    "UPDATE {s}.limits l SET tokens = u.tokens, tokens_at = u.at FROM"
                    " unnest(%(scopes)s::text[], %(names)s::text[], %(tokens)s::float8[],"
                    " %(ats)s::float8[]) AS u(scope, name, tokens, at)"
                    " WHERE l.scope = u.scope AND l.name = u.name"
                ),
                {"scopes": [k[0] for k, _ in used], "names": [k[1] for k, _ in used],
                 "tokens": [lim.tokens for _, lim in used], "ats": [lim.at for _, lim in used]},
            )  # fmt: skip
        if ended:
            yield from self._ended(ended, now, deltas)
        return jobs, expired

    # -- acknowledgements ---------------------------------------------------------------------

    async def complete(
        self, job_id: int, token: int, result: Any, now: float, *, worker: str | None = None
    ) -> None:
        [error] = await self.complete_many([(job_id, token, result)], now, worker=worker)
        if error is not None:
            raise error

    async def complete_many(
        self, items: Sequence[tuple[int, int, Any]], now: float, *, worker: str | None = None
    ) -> list[DistQueueError | None]:
        encoded = []
        for job_id, token, result in items:
            check_id("job id", job_id), check_id("token", token)
            data, kind = encode_result(result)
            encoded.append((job_id, token, data, kind))
        if not encoded:
            return []
        out, done, woken = await self._tx(lambda: self._complete_steps(encoded, now, worker))
        self._announce(ready=bool(woken), done=done)
        return out

    def _complete_steps(
        self, items: list[tuple[int, int, bytes, str]], now: float, worker: str | None
    ) -> Step[tuple[list[DistQueueError | None], list[int], list[int]]]:
        out: list[DistQueueError | None] = [None] * len(items)
        # rounds of distinct ids: the k-th item of each id goes in round k, so that the
        # items of one job are answered in order, each as complete would
        rounds: list[list[int]] = []
        seen: dict[int, int] = {}
        for i, (jid, *_) in enumerate(items):
            k = seen.get(jid, 0)
            seen[jid] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        deltas = Deltas()
        done: list[int] = []
        ended: list[tuple[int, bool]] = []
        stmt = self.sql.text(
            "UPDATE {s}.jobs j SET state = 5, result = d.result, result_kind = d.kind,"
            " finished_at = %(now)s::float8, lease_until = NULL FROM unnest(%(ids)s::bigint[],"
            " %(tokens)s::bigint[], %(results)s::bytea[], %(kinds)s::text[])"
            " AS d(id, token, result, kind) WHERE j.id = ANY(%(ids)s::bigint[])"
            " AND j.id = d.id AND j.state = 3"
            " AND j.attempts = d.token AND (%(worker)s::text IS NULL OR j.worker = %(worker)s)"
            " RETURNING j.id, j.queue, j.type, j.priority, j.has_waiters"
        )
        for part in rounds:
            part.sort(key=lambda i: items[i][0])
            rows = yield stmt, {
                "now": now, "worker": worker, "ids": [items[i][0] for i in part],
                "tokens": [items[i][1] for i in part], "results": [items[i][2] for i in part],
                "kinds": [items[i][3] for i in part],
            }  # fmt: skip
            ok = {row[0] for row in rows}
            for jid, queue, type_, prio, has_waiters in rows:
                deltas.move(queue, type_, prio, RUNNING, SUCCEEDED)
                done.append(jid)
                if has_waiters:
                    ended.append((jid, True))
            missing = [items[i][0] for i in part if items[i][0] not in ok]
            exists: set[int] = set()
            if missing:
                exists = {r[0] for r in (yield (
                    self.sql.text("SELECT id FROM {s}.jobs WHERE id = ANY(%(ids)s::bigint[])"),
                    {"ids": missing},
                ))}  # fmt: skip
            for i in part:
                jid, token = items[i][0], items[i][1]
                if jid not in ok:
                    out[i] = LeaseLost(jid, token) if jid in exists else JobNotFound(jid)
        if done:
            deltas.total("succeeded", len(done))
        woken: list[int] = []
        if ended:
            woken = yield from self._ended(ended, now, deltas)
        yield from deltas.flush(self.sql)
        return out, done, woken

    def _holder(
        self, job_id: int, token: int, worker: str | None, cols: str
    ) -> Step[tuple[Any, ...]]:
        """Lock a running job held by ``token`` (and ``worker``); its ``cols``.
        JobNotFound or LeaseLost otherwise."""
        rows = yield (
            self.sql.text(
                f"SELECT state, attempts, worker, {cols} FROM {{s}}.jobs WHERE id = %(id)s"
                " FOR UPDATE"
            ),
            {"id": job_id},
        )
        if not rows:
            raise JobNotFound(job_id)
        state, attempts, holder = rows[0][:3]
        if state != RUNNING or attempts != token or (worker is not None and holder != worker):
            raise LeaseLost(job_id, token)
        return rows[0][3:]

    async def fail(
        self,
        job_id: int,
        token: int,
        error: JobError,
        now: float,
        *,
        retryable: bool = True,
        worker: str | None = None,
        priority: int | None = None,
    ) -> FailOutcome:
        check_id("job id", job_id), check_id("token", token)
        if not isinstance(error, JobError):
            raise InvalidJob("error must be a JobError")
        if priority is not None:
            check_priority(priority)
        data = _error_bytes(error)
        outcome, woken = await self._tx(
            lambda: self._fail_steps(job_id, token, data, now, bool(retryable), worker, priority)
        )
        if outcome.state is not S.RETRYING:
            self._announce(ready=bool(woken), done=[job_id])
        return outcome

    def _fail_steps(
        self, job_id: int, token: int, error: bytes, now: float, retryable: bool,
        worker: str | None, priority: int | None = None,
    ) -> Step[tuple[FailOutcome, list[int]]]:  # fmt: skip
        queue, type_, prio, failures, max_retries, cancel, has_waiters = yield from self._holder(
            job_id, token, worker,
            "queue, type, priority, failures, max_retries, cancel_requested, has_waiters",
        )  # fmt: skip
        if priority is not None:  # (running: no counter is by priority; what follows is)
            prio = priority
        failures += 1
        run_at: float | None = None
        if cancel:
            new = CANCELLED
        elif not retryable or failures > max_retries:
            new = DEAD
        else:
            new = RETRYING
            run_at = now + self.retry_policy.backoff(failures, self._rng)
        deltas = Deltas()
        deltas.total("failed")
        yield (
            self.sql.text(
                "UPDATE {s}.jobs SET failures = %(f)s, error = %(e)s, priority = %(p)s::int8"
                " WHERE id = %(id)s"
            ),
            {"f": failures, "e": error, "p": prio, "id": job_id},
        )
        woken: list[int] = []
        row = _Row(job_id, queue, type_, prio, RUNNING, has_waiters)
        if new == RETRYING:
            check_transition(job_id, S.RUNNING, S.RETRYING)
            yield (
                self.sql.text(
                    "UPDATE {s}.jobs SET state = 4, run_at = %(at)s::float8, lease_until = NULL"
                    " WHERE id = %(id)s"
                ),
                {"at": run_at, "id": job_id},
            )
            deltas.move(queue, type_, prio, RUNNING, RETRYING)
            deltas.total("retried")
        else:
            ended = yield from self._finish_rows([row], new, now, deltas)
            if ended:
                woken = yield from self._ended(ended, now, deltas)
        yield from deltas.flush(self.sql)
        return FailOutcome(state=STATES[new], run_at=run_at), woken

    async def requeue(
        self,
        job_id: int,
        token: int,
        now: float,
        *,
        priority: int | None = None,
        run_at: float | None = None,
        worker: str | None = None,
    ) -> JobState:
        check_id("job id", job_id), check_id("token", token)
        if priority is not None:
            check_priority(priority)
        if run_at is not None:
            check_seconds("run_at", run_at)
        state, woken = await self._tx(
            lambda: self._requeue_steps(job_id, token, now, priority, run_at, worker)
        )
        if state is S.QUEUED:
            self._announce(ready=True)
        elif state is S.CANCELLED:
            self._announce(ready=bool(woken), done=[job_id])
        return state

    def _requeue_steps(
        self, job_id: int, token: int, now: float, priority: int | None, run_at: float | None,
        worker: str | None,
    ) -> Step[tuple[JobState, list[int]]]:  # fmt: skip
        queue, type_, prio, cancel, has_waiters = yield from self._holder(
            job_id, token, worker, "queue, type, priority, cancel_requested, has_waiters"
        )
        if priority is not None:  # (running: no counter is by priority; what follows is)
            prio = priority
        row = _Row(job_id, queue, type_, prio, RUNNING, has_waiters)
        deltas = Deltas()
        woken: list[int] = []
        if cancel:  # a cancel sticks, as in release: cancelled, its waiters move on
            if priority is not None:
                yield (
                    self.sql.text("UPDATE {s}.jobs SET priority = %(p)s::int8 WHERE id = %(id)s"),
                    {"p": prio, "id": job_id},
                )
            new = CANCELLED
            ended = yield from self._finish_rows([row], CANCELLED, now, deltas)
            if ended:
                woken = yield from self._ended(ended, now, deltas)
        elif run_at is not None and run_at > now:
            check_transition(job_id, S.RUNNING, S.SCHEDULED)  # (released with a delay)
            new = SCHEDULED
            yield (
                self.sql.text(
                    "UPDATE {s}.jobs SET state = 1, run_at = %(at)s::float8, lease_until = NULL,"
                    " priority = %(p)s::int8 WHERE id = %(id)s"
                ),
                {"at": run_at, "p": prio, "id": job_id},
            )
            deltas.move(queue, type_, prio, RUNNING, SCHEDULED)
        else:
            new = QUEUED
            yield from self._wake_rows([row], now, deltas, "wake_priority", {"priority": prio})
        yield from deltas.flush(self.sql)
        return STATES[new], woken

    async def progress(
        self,
        job_id: int,
        token: int,
        percent: float,
        message: str,
        now: float,
        *,
        worker: str | None = None,
    ) -> None:
        check_id("job id", job_id), check_id("token", token)
        data = codec.dumps({"percent": percent, "message": message, "at": now}, "progress")

        def steps() -> Step[None]:
            rows = yield (
                self.sql.text(
                    "UPDATE {s}.jobs SET progress = %(p)s WHERE id = %(id)s AND state = 3"
                    " AND attempts = %(token)s"
                    " AND (%(worker)s::text IS NULL OR worker = %(worker)s)"
                    " RETURNING id"
                ),
                {"p": data, "id": job_id, "token": token, "worker": worker},
            )
            if not rows:
                found = yield (
                    self.sql.text("SELECT 1 FROM {s}.jobs WHERE id = %(id)s"),
                    {"id": job_id},
                )
                raise LeaseLost(job_id, token) if found else JobNotFound(job_id)

        await self._tx(steps, tx=False)

    # -- leases ------------------------------------------------------------------------------

    async def heartbeat(self, worker: str, now: float, lease: float = DEFAULT_LEASE) -> Heartbeat:
        # One row, not every job: the worker's lease row (written only while it runs
        # something) covers the jobs it was given up to now.
        def steps() -> Step[list[tuple[Any, ...]]]:
            rows = yield (
                self.sql.text(
                    "WITH beat AS (INSERT INTO {s}.leases (worker, beat_at, until)"
                    " SELECT %(w)s, %(now)s::float8, %(until)s::float8 WHERE EXISTS"
                    " (SELECT 1 FROM {s}.jobs WHERE worker = %(w)s AND state = 3)"
                    " ON CONFLICT (worker) DO UPDATE SET"
                    " beat_at = greatest({s}.leases.beat_at, excluded.beat_at),"
                    " until = greatest({s}.leases.until, excluded.until))"
                    " SELECT id, attempts, cancel_requested FROM {s}.jobs"
                    " WHERE worker = %(w)s AND state = 3 ORDER BY id"
                ),
                {"now": now, "until": now + lease, "w": worker},
            )
            return rows

        rows = await self._tx(steps, tx=False)
        return Heartbeat(held={r[0]: r[1] for r in rows},
                         cancel=sorted(r[0] for r in rows if r[2]))  # fmt: skip

    async def touch(
        self, job_id: int, token: int, now: float, lease: float, *, worker: str | None = None
    ) -> float:
        check_id("job id", job_id), check_id("token", token)
        check_seconds("lease", lease, positive=True)

        # The job's own lease, and the time of the touch (run_at, _COVERED): its
        # worker's row covers it again from the next heartbeat on, not by the beats
        # before; handed over to the row (lease_until NULL), it is its own again (the
        # lease scan of expire sees it). Read back as get reads it.
        def steps() -> Step[float]:
            rows = yield (
                self.sql.text(
                    "UPDATE {s}.jobs j SET lease_until = %(until)s::float8,"
                    " run_at = %(now)s::float8 WHERE j.id = %(id)s AND j.state = 3"
                    " AND j.attempts = %(token)s"
                    " AND (%(worker)s::text IS NULL OR j.worker = %(worker)s)"
                    " RETURNING " + _LEASE
                ),
                {"until": now + lease, "now": now, "id": job_id, "token": token,
                 "worker": worker},
            )  # fmt: skip
            if not rows:
                found = yield (
                    self.sql.text("SELECT 1 FROM {s}.jobs WHERE id = %(id)s"),
                    {"id": job_id},
                )
                raise LeaseLost(job_id, token) if found else JobNotFound(job_id)
            return float(rows[0][0])

        return await self._tx(steps, tx=False)

    async def expire(self, now: float) -> list[int]:
        out: list[int] = []
        while True:
            ids, more = await self._run("expire", now, BATCH)
            self._announce(ready=bool(ids), done=ids)  # some may have ended (poison)
            out += ids
            if not more:
                return out

    def _expire_step(self, now: float, batch: int) -> Step[tuple[list[int], bool]]:
        # Jobs whose own lease ran out: lost, unless their worker's row covers them
        # and still runs (then handed over to it, once: lease_until NULL) ...
        rows = yield (
            self.sql.text(
                "SELECT j.id, j.queue, j.type, j.priority, j.has_waiters, j.lost,"
                " j.cancel_requested, j.lease_until, (SELECT l.until FROM {s}.leases l"
                "  WHERE " + _COVERED + ")"
                " FROM {s}.jobs j WHERE j.state = 3 AND j.lease_until <= %(now)s::float8"
                " ORDER BY j.lease_until, j.id LIMIT %(batch)s FOR UPDATE OF j SKIP LOCKED"
            ),
            {"now": now, "batch": batch},
        )
        due: list[tuple[float, tuple[Any, ...]]] = []
        kept: list[int] = []
        for r in rows:
            covered = r[8]
            if covered is not None and covered > now:
                kept.append(r[0])
            else:
                due.append((r[7] if covered is None else max(r[7], covered), r))
        if kept:
            yield (
                self.sql.text(
                    "UPDATE {s}.jobs SET lease_until = NULL WHERE id = ANY(%(ids)s::bigint[])"
                ),
                {"ids": kept},
            )
        # ... and the rows of workers that stopped beating: deleted, and the jobs
        # handed over to them lost (a job a concurrent expire is handing over is
        # locked: waited for, then seen handed over)
        gone = yield (
            self.sql.text(
                "WITH old AS MATERIALIZED (SELECT worker FROM {s}.leases"
                " WHERE until <= %(now)s::float8 ORDER BY until LIMIT %(workers)s"
                " FOR UPDATE SKIP LOCKED)"
                " DELETE FROM {s}.leases l USING old WHERE l.worker = old.worker"
                " RETURNING l.worker, l.until"
            ),
            {"now": now, "workers": LEASE_ROWS},
        )
        if gone:
            until = {w: u for w, u in gone}
            held = yield (
                self.sql.text(
                    "SELECT id, queue, type, priority, has_waiters, lost, cancel_requested,"
                    " lease_until, worker FROM {s}.jobs WHERE worker = ANY(%(ws)s::text[])"
                    " AND state = 3 ORDER BY id FOR UPDATE"
                ),
                {"ws": list(until)},
            )
            seen = {r[1][0] for r in due}
            for r in held:
                if r[7] is None:
                    due.append((until[r[8]], r))
                elif r[7] <= now and r[0] not in seen:
                    due.append((r[7], r))  # (skipped above: it was locked then)
        due.sort(key=lambda d: (d[0], d[1][0]))
        deltas = Deltas()
        lost = [(_Row(r[0], r[1], r[2], r[3], RUNNING, r[4]), r[5], r[6]) for _, r in due]
        yield from self._lose(lost, now, deltas)
        yield from deltas.flush(self.sql)
        return [r[0] for _, r in due], len(rows) == batch or len(gone) == LEASE_ROWS

    async def release(
        self,
        worker: str,
        now: float,
        *,
        ids: Collection[int] | None = None,
        vanished: bool = False,
    ) -> list[int]:
        only = None if ids is None else sorted({check_id("job id", i) for i in ids})

        def steps() -> Step[list[int]]:
            rows = yield (
                self.sql.text(
                    "SELECT id, queue, type, priority, has_waiters, lost, cancel_requested"
                    " FROM {s}.jobs WHERE worker = %(w)s AND state = 3"
                    " AND (%(only)s::bigint[] IS NULL OR id = ANY(%(only)s::bigint[]))"
                    " ORDER BY id FOR UPDATE"
                ),
                {"w": worker, "only": only},
            )
            if only is None:  # all it holds: its lease row goes with them
                yield (self.sql.text("DELETE FROM {s}.leases WHERE worker = %(w)s"),
                       {"w": worker})  # fmt: skip
            deltas = Deltas()
            taken = [(_Row(r[0], r[1], r[2], r[3], RUNNING, r[4]), r[5], r[6]) for r in rows]
            if vanished:
                yield from self._lose(taken, now, deltas)
            else:
                back = [r for r, _, cancel in taken if not cancel]
                stop = [r for r, _, cancel in taken if cancel]
                yield from self._wake_rows(back, now, deltas)
                ended = yield from self._finish_rows(stop, CANCELLED, now, deltas)
                if ended:
                    yield from self._ended(ended, now, deltas)
            yield from deltas.flush(self.sql)
            return [r[0] for r in rows]

        released = await self._tx(steps)
        self._announce(ready=bool(released), done=released)
        return released

    async def promote(self, now: float) -> list[int]:
        out: list[int] = []
        while True:
            ids = await self._run("promote", now, BATCH)
            self._announce(ready=bool(ids))
            out += ids
            if len(ids) < BATCH:
                break
        await self._compact()
        return out

    async def _compact(self) -> None:
        """Delete the counters of priorities with no queued job left (housekeeping,
        with promote): at most COMPACT_STEPS bounded steps."""
        if time.monotonic() < self._compact_due:
            return
        try:
            for _ in range(COMPACT_STEPS):
                after = self._compact_after
                self._compact_after = await self._run("compact", after, COMPACT_ROWS)
                if self._compact_after == "p:":  # a pass over them all ended
                    self._compact_due = time.monotonic() + COMPACT_EVERY
                    return
        except StoreError as exc:  # (the next promote goes on with it)
            log.warning("compacting the store's counters failed: %s", exc)

    def _compact_step(self, after: str, limit: int) -> Step[str]:
        """The 'p:<priority>' counters after ``after`` (in key order, at most ``limit``
        rows): those whose shards sum to 0 are deleted. Returns where the next step
        starts ("p:": from the first again, this pass is over)."""
        found = yield (
            self.sql.text(
                "SELECT key, sum(n), count(*) FROM (SELECT key, n FROM {s}.counts"
                " WHERE key > %(after)s AND key < 'p;' ORDER BY key LIMIT %(limit)s) r"
                " GROUP BY key ORDER BY key"
            ),
            {"after": after, "limit": limit},
        )
        if sum(rows for _, _, rows in found) < limit:
            nxt = "p:"
        else:  # its last key's shards may go on past the window: seen again next time
            found = found[:-1]
            nxt = found[-1][0] if found else after
        zero = [key for key, total, _ in found if total == 0]
        if not zero:
            return nxt
        # their rows locked, as they are now (a row another transaction is changing is
        # left out); rows of one key that sum to 0 go, the key's sum stays as it is
        held = yield (
            self.sql.text(
                "SELECT key, shard, n FROM {s}.counts WHERE key = ANY(%(keys)s::text[])"
                " ORDER BY key, shard FOR UPDATE SKIP LOCKED"
            ),
            {"keys": zero},
        )
        totals: dict[str, int] = {}
        for key, _, n in held:
            totals[key] = totals.get(key, 0) + n
        gone = [(key, shard) for key, shard, _ in held if totals[key] == 0]
        if gone:
            yield (
                self.sql.text(
                    "DELETE FROM {s}.counts c USING unnest(%(keys)s::text[], %(shards)s::int2[])"
                    " AS g(key, shard) WHERE c.key = g.key AND c.shard = g.shard"
                ),
                {"keys": [k for k, _ in gone], "shards": [sh for _, sh in gone]},
            )
        return nxt

    def _promote_step(self, now: float, batch: int) -> Step[list[int]]:
        out: list[int] = []
        deltas = Deltas()
        # a cascade of dependencies left by an earlier operation goes on first
        cascade = yield (
            self.sql.text(
                "DELETE FROM {s}.cascade WHERE dep IN (SELECT dep FROM {s}.cascade ORDER BY dep"
                " LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING dep, ok"
            ),
            {},
        )
        if cascade:
            out += yield from self._ended([(d, ok) for d, ok in cascade], now, deltas)
        rows = yield (
            self.sql.text(
                "SELECT id, queue, type, priority, state FROM {s}.jobs WHERE state IN (1, 4)"
                " AND run_at <= %(now)s::float8 ORDER BY run_at, id LIMIT %(batch)s"
                " FOR UPDATE SKIP LOCKED"
            ),
            {"now": now, "batch": max(0, batch - len(out))},
        )
        due = [_Row(*r) for r in rows]
        yield from self._wake_rows(due, now, deltas)
        out += [r.id for r in due]
        yield from deltas.flush(self.sql)
        return out

    async def next_wakeup(self) -> float | None:
        def steps() -> Step[tuple[Any, ...]]:
            rows = yield (
                self.sql.text(
                    "SELECT least((SELECT min(run_at) FROM {s}.jobs WHERE state IN (1, 4)),"
                    " (SELECT min(lease_until) FROM {s}.jobs WHERE state = 3),"
                    " (SELECT min(until) FROM {s}.leases),"
                    " (SELECT min(next_at) FROM {s}.periodics),"
                    " (SELECT min(until) FROM {s}.paused WHERE until IS NOT NULL)),"
                    " EXISTS (SELECT 1 FROM {s}.cascade)"
                ),
                {},
            )
            return rows[0]

        at, cascade = await self._tx(steps, tx=False)
        if cascade:
            return 0.0
        return None if at is None else float(at)

    # -- cancel, retry -----------------------------------------------------------------------

    async def cancel(self, job_id: int, now: float, *, running: bool = True) -> JobState:
        check_id("job id", job_id)
        state, woken = await self._tx(lambda: self._cancel_steps(job_id, now, bool(running)))
        if state is S.CANCELLED:
            self._announce(ready=bool(woken), done=[job_id])
        return state

    def _cancel_steps(
        self, job_id: int, now: float, running: bool = True
    ) -> Step[tuple[JobState, list[int]]]:
        rows = yield (
            self.sql.text(
                "SELECT queue, type, priority, state, has_waiters, after_ids FROM {s}.jobs"
                " WHERE id = %(id)s FOR UPDATE"
            ),
            {"id": job_id},
        )
        if not rows:
            raise JobNotFound(job_id)
        queue, type_, prio, state, has_waiters, after = rows[0]
        if state == RUNNING:
            if not running:  # (the row is locked: no claim or finish in between)
                raise IllegalTransition(f"job {job_id} is running: not cancelled")
            yield (
                self.sql.text("UPDATE {s}.jobs SET cancel_requested = true WHERE id = %(id)s"),
                {"id": job_id},
            )
            return S.RUNNING, []
        check_transition(job_id, STATES[state], S.CANCELLED)
        deltas = Deltas()
        if state == WAITING and after:
            yield (
                self.sql.text(
                    "DELETE FROM {s}.waits WHERE waiter = %(w)s AND dep = ANY(%(ids)s::bigint[])"
                ),
                {"w": job_id, "ids": list(after)},
            )
        ended = yield from self._finish_rows(
            [_Row(job_id, queue, type_, prio, state, has_waiters)], CANCELLED, now, deltas
        )
        woken: list[int] = []
        if ended:
            woken = yield from self._ended(ended, now, deltas)
        yield from deltas.flush(self.sql)
        return S.CANCELLED, woken

    async def retry(self, job_id: int, now: float) -> None:
        check_id("job id", job_id)

        def steps() -> Step[None]:
            rows = yield (
                self.sql.text(
                    "SELECT queue, type, priority, state FROM {s}.jobs WHERE id = %(id)s FOR UPDATE"
                ),
                {"id": job_id},
            )
            if not rows:
                raise JobNotFound(job_id)
            queue, type_, prio, state = rows[0]
            if state not in (DEAD, CANCELLED):
                raise IllegalTransition(
                    f"job {job_id} is {STATES[state].value}: only dead or cancelled jobs can be"
                    " retried"
                )
            deltas = Deltas()
            yield from self._revive([_Row(job_id, queue, type_, prio, state)], now, deltas)
            yield from deltas.flush(self.sql)

        await self._tx(steps)
        self._announce(ready=True)

    # -- kick, kick_job (beanstalk) ------------------------------------------------------------

    async def kick(
        self, queue: str, n: int, now: float, *, type: str | None = None
    ) -> builtins.list[int]:
        check_name("queue", queue)
        if type is not None:
            check_name("job type", type)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_KICK:
            raise InvalidJob(f"n must be an integer 1-{MAX_KICK}, not {n!r}")
        ids = await self._tx(lambda: self._kick_steps(queue, n, now, type))
        self._announce(ready=bool(ids))
        return ids

    def _kick_steps(self, queue: str, n: int, now: float, type_: str | None) -> Step[list[int]]:
        # At most n jobs read: the queue's dead ones by (finished_at, id), else its
        # scheduled and retrying ones by (run_at, id), of every type (jobs_dead_queue,
        # jobs_due_queue) or of one (jobs_dead_type, jobs_due_type). Locked as they
        # are read (waiting for a retry, delete or promote of one: a row it changed
        # is read again, and left out when it is no longer dead, or due).
        where = "queue = %(queue)s" + ("" if type_ is None else " AND type = %(type)s")
        params = {"queue": queue, "type": type_, "n": n}
        rows = yield (
            self.sql.text(
                "SELECT id, queue, type, priority, state, finished_at FROM {s}.jobs"
                " WHERE state = 6 AND " + where + " ORDER BY finished_at, id LIMIT %(n)s"
                " FOR UPDATE"
            ),
            params,
        )
        dead = bool(rows)
        if not dead:
            rows = yield (
                self.sql.text(
                    "SELECT id, queue, type, priority, state, run_at FROM {s}.jobs"
                    " WHERE state IN (1, 4) AND " + where + " ORDER BY run_at, id LIMIT %(n)s"
                    " FOR UPDATE"
                ),
                params,
            )
        # (in the order of the rows as locked: one changed meanwhile may sort elsewhere)
        rows = sorted(rows, key=lambda r: (r[5] is None, r[5] or 0.0, r[0]))
        jobs = [_Row(*r[:5]) for r in rows]
        deltas = Deltas()
        if dead:
            yield from self._revive(jobs, now, deltas)
        else:
            yield from self._wake_rows(jobs, now, deltas)
        yield from deltas.flush(self.sql)
        return [r.id for r in jobs]

    async def kick_job(self, job_id: int, now: float) -> JobState:
        check_id("job id", job_id)

        def steps() -> Step[JobState]:
            rows = yield (
                self.sql.text(
                    "SELECT queue, type, priority, state FROM {s}.jobs WHERE id = %(id)s FOR UPDATE"
                ),
                {"id": job_id},
            )
            if not rows:
                raise JobNotFound(job_id)
            queue, type_, prio, state = rows[0]
            row = _Row(job_id, queue, type_, prio, state)
            deltas = Deltas()
            if state == DEAD:
                yield from self._revive([row], now, deltas)
            elif state in (SCHEDULED, RETRYING):
                yield from self._wake_rows([row], now, deltas)
            else:
                raise IllegalTransition(
                    f"job {job_id} is {STATES[state].value}: only dead, scheduled or retrying"
                    " jobs can be kicked"
                )
            yield from deltas.flush(self.sql)
            return STATES[state]

        state = await self._tx(steps)
        self._announce(ready=True)
        return state

    async def claim_job(
        self, worker: str, job_id: int, now: float, *, lease: float = DEFAULT_LEASE
    ) -> Job:
        check_claim(worker, 1, lease)
        check_id("job id", job_id)
        job, woken = await self._tx(lambda: self._claim_job_steps(worker, job_id, now, now + lease))
        if job.state is not S.RUNNING:
            # past its deadline: ended dead as a claim ends it (committed), not leased
            self._announce(ready=bool(woken), done=[job_id])
            raise IllegalTransition(f"job {job_id} expired before it started")
        return job

    def _claim_job_steps(
        self, worker: str, job_id: int, now: float, until: float
    ) -> Step[tuple[Job, list[int]]]:
        # The row locked (a claim racing this one skips it, or finds it running once
        # this commits), then leased by the claim's own statement (_CLAIM_SET): a new
        # token, the job out of the ready index (state and seq), counted as a claim
        # counts it (q2 -> q3 of its queue, p:<priority> down, r:<type> up: the
        # running counts a gated claim reads for concurrency limits). Pauses and
        # limits aside: no limit row is locked, no rate token taken.
        rows = yield (
            self.sql.text("SELECT state, deadline FROM {s}.jobs WHERE id = %(id)s FOR UPDATE"),
            {"id": job_id},
        )
        if not rows:
            raise JobNotFound(job_id)
        state, deadline = rows[0]
        if state != QUEUED:
            raise IllegalTransition(
                f"job {job_id} is {STATES[state].value}: only a queued job can be claimed"
            )
        expired = deadline is not None and deadline < now
        [row] = yield self.sql["claim_apply"], {
            "ids": [job_id], "expired": [expired], "now": now, "until": until, "worker": worker,
        }  # fmt: skip
        job = _job(row[:NCOLS])
        deltas = Deltas()
        woken: list[int] = []
        if expired:
            deltas.move(job.queue, job.type, job.priority, QUEUED, DEAD)
            deltas.total("dead")
            deltas.total("expired")
            if row[NCOLS + 1]:
                woken = yield from self._ended([(job_id, False)], now, deltas)
        else:
            deltas.move(job.queue, job.type, job.priority, QUEUED, RUNNING)
        yield from deltas.flush(self.sql)
        return job, woken

    # -- reads ---------------------------------------------------------------------------------

    async def _read(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """A read (one statement): sent again once after a dropped connection."""

        def steps() -> Step[list[tuple[Any, ...]]]:
            return (yield sql, params)

        try:
            return await self._tx(steps, tx=False)
        except StoreError:
            return await self._tx(steps, tx=False)

    async def get(self, job_id: int) -> Job | None:
        rows = await self._read(self.sql["get"], {"id": check_id("job id", job_id)})
        return _job(rows[0]) if rows else None

    async def peek(self, queue: str, state: JobState, *, type: str | None = None) -> Job | None:
        check_name("queue", queue)
        if type is not None:
            check_name("job type", type)
        state = JobState(state)
        if state is S.QUEUED:
            sql = _PEEK_READY if type is None else _PEEK_READY_TYPE
        elif state is S.SCHEDULED:
            sql = _peek_sql("IN (1, 4)", "run_at", type is not None)
        elif state is S.DEAD:
            sql = _peek_sql("= 6", "finished_at", type is not None)
        else:
            raise ValueError(f"peek shows queued, scheduled or dead jobs, not {state.value}")
        rows = await self._read(self.sql.text(sql), {"queue": queue, "type": type})
        return _job(rows[0]) if rows else None

    async def list(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        type: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[Job]:
        name = check_list(state, limit, before)
        where = []
        if name is not None:
            code = CODE[JobState(name)]
            where.append(f"j.state = {code}")  # a constant: the planner can use jobs_listing
        if queue is not None:
            where.append("j.queue = %(queue)s")
        if type is not None:
            where.append("j.type = %(type)s")
        if before is not None:
            where.append("j.id < %(before)s")
        sql = f"SELECT {SUMMARY} FROM {{s}}.jobs j"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY j.id DESC LIMIT %(limit)s"
        rows = await self._read(
            self.sql.text(sql), {"queue": queue, "type": type, "before": before, "limit": limit}
        )
        return [_job(r) for r in rows]

    async def stats(self) -> Stats:
        rows = await self._read(
            self.sql.text(
                "WITH RECURSIVE "
                + _HEADS
                + " SELECT key, sum(n)::bigint, NULL::float8 FROM {s}.counts GROUP BY key"
                " HAVING sum(n) <> 0"
                " UNION ALL SELECT NULL, NULL, (SELECT min(at) FROM heads)"
                " UNION ALL SELECT '', NULL, (" + _OLDEST_XACT + ")"
            ),
            {},
        )
        by_state = {s.value: 0 for s in JobState}
        by_queue: dict[str, dict[str, int]] = {}
        prio: dict[int, int] = {}
        totals = dict.fromkeys(TOTALS, 0)
        oldest: float | None = None
        xact_age: float | None = None
        for key, n, at in rows:
            if key is None:
                oldest = at
                continue
            if key == "":
                xact_age = None if at is None else max(0.0, float(at))
                continue
            n = int(n)
            kind, _, name = key.partition(":")
            if kind == "p":
                prio[int(name)] = n
            elif kind == "t":
                totals[name] = n
            elif kind.startswith("q"):
                state = STATES[int(kind[1:])].value
                by_state[state] += n
                by_queue.setdefault(name, {})[state] = n
        return Stats(by_state=by_state, by_queue=by_queue, queued_by_priority=prio,
                     totals=totals, oldest_queued_at=oldest,
                     oldest_transaction_age=xact_age)  # fmt: skip

    # -- purge ---------------------------------------------------------------------------------

    async def sweep(self, now: float, retention: Retention | None = None) -> int:
        r = retention or Retention()
        total = 0
        while True:
            n: int = await self._run("purge", now - r.succeeded, now - r.failed, BATCH)
            total += n
            if n < BATCH:
                return total

    def _purge_step(self, ok_before: float, failed_before: float, batch: int) -> Step[int]:
        deleted: list[tuple[str, int]] = []
        for state, cut in ((SUCCEEDED, ok_before), (DEAD, failed_before),
                           (CANCELLED, failed_before)):  # fmt: skip
            if len(deleted) >= batch:
                break
            deleted += yield (
                self.sql.text(
                    "WITH d AS MATERIALIZED (SELECT id FROM {s}.jobs WHERE state = "
                    + str(state)
                    + " AND finished_at <= %(cut)s::float8 ORDER BY finished_at, id"
                    " LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                    " DELETE FROM {s}.jobs j USING d WHERE j.id = d.id RETURNING j.queue, j.state"
                ),
                {"cut": cut, "limit": batch - len(deleted)},
            )
        if deleted:
            deltas = Deltas()
            for queue, state in deleted:
                deltas.add(f"q{state}:{queue}", -1)
            deltas.total("purged", len(deleted))
            yield from deltas.flush(self.sql)
        return len(deleted)

    async def delete(self, job_id: int) -> None:
        check_id("job id", job_id)

        def steps() -> Step[None]:
            rows = yield (
                self.sql.text("SELECT state, queue FROM {s}.jobs WHERE id = %(id)s FOR UPDATE"),
                {"id": job_id},
            )
            if not rows:
                raise JobNotFound(job_id)
            state, queue = rows[0]
            if state not in (SUCCEEDED, DEAD, CANCELLED):
                raise IllegalTransition(
                    f"job {job_id} is {STATES[state].value}: only finished jobs can be deleted"
                )
            yield self.sql.text("DELETE FROM {s}.jobs WHERE id = %(id)s"), {"id": job_id}
            deltas = Deltas()
            deltas.add(f"q{state}:{queue}", -1)
            deltas.total("purged")
            yield from deltas.flush(self.sql)

        await self._tx(steps)

    # -- types and the worker registry ----------------------------------------------------------

    async def note_types(self, types: Collection[str], now: float) -> None:
        names = sorted({check_name("job type", t) for t in types})
        if not names:
            return

        def steps() -> Step[None]:
            yield (
                self.sql.text(
                    "INSERT INTO {s}.types AS t (name, last_seen) SELECT n, %(now)s::float8"
                    " FROM unnest(%(names)s::text[]) AS u(n) ON CONFLICT (name) DO UPDATE"
                    " SET last_seen = greatest(t.last_seen, excluded.last_seen)"
                ),
                {"names": names, "now": now},
            )

        await self._tx(steps, tx=False)

    async def known_types(self) -> dict[str, float]:
        rows = await self._read(self.sql.text("SELECT name, last_seen FROM {s}.types"), {})
        return {name: float(at) for name, at in rows}

    async def note_worker(self, worker: str, info: Mapping[str, Any], now: float) -> None:
        data = check_worker_info(info)
        check_worker(worker)
        cap = MAX_WORKERS

        def steps() -> Step[None]:
            rows = yield (
                self.sql.text(
                    "INSERT INTO {s}.workers AS w (id, seen, info)"
                    " VALUES (%(id)s, %(seen)s, %(info)s)"
                    " ON CONFLICT (id) DO UPDATE SET seen = excluded.seen, info = excluded.info"
                    " RETURNING (xmax = 0)"
                ),
                {"id": worker, "seen": now, "info": data},
            )
            if rows and rows[0][0]:  # a new record: the registry stays within its cap
                yield (
                    self.sql.text(
                        "DELETE FROM {s}.workers WHERE id IN (SELECT id FROM {s}.workers"
                        " WHERE id <> %(id)s ORDER BY seen, id"
                        " LIMIT greatest(0, (SELECT count(*) FROM {s}.workers) - %(cap)s))"
                    ),
                    {"id": worker, "cap": cap},
                )

        await self._tx(steps)

    async def workers(
        self, now: float, *, max_age: float, limit: int = 1000
    ) -> builtins.list[WorkerRecord]:  # (``list`` is the method above, in here)
        check_workers(max_age, limit)
        cutoff = now - max_age
        purge = WORKERS_PURGE

        def steps() -> Step[list[tuple[Any, ...]]]:
            yield (
                self.sql.text(
                    "DELETE FROM {s}.workers WHERE id IN (SELECT id FROM {s}.workers"
                    " WHERE seen < %(cutoff)s::float8 ORDER BY seen, id LIMIT %(purge)s"
                    " FOR UPDATE SKIP LOCKED)"
                ),
                {"cutoff": cutoff, "purge": purge},
            )
            rows = yield (
                self.sql.text(
                    "SELECT w.id, w.seen, w.info, array(SELECT j.id FROM {s}.jobs j"
                    " WHERE j.worker = w.id AND j.state = 3 ORDER BY j.id LIMIT %(jobs)s)"
                    " FROM {s}.workers w WHERE w.seen >= %(cutoff)s::float8 ORDER BY w.id"
                    " LIMIT %(limit)s"
                ),
                {"cutoff": cutoff, "jobs": WORKER_JOBS, "limit": limit},
            )
            return rows

        rows = await self._tx(steps)
        return [
            WorkerRecord(id=r[0], seen=float(r[1]), info=codec.loads(bytes(r[2])), jobs=list(r[3]))
            for r in rows
        ]

    async def forget_worker(self, worker: str) -> None:
        check_worker(worker)

        def steps() -> Step[None]:
            yield self.sql.text("DELETE FROM {s}.workers WHERE id = %(id)s"), {"id": worker}

        await self._tx(steps, tx=False)

    # -- flow control ------------------------------------------------------------------------

    async def set_limit(self, limit: Limit) -> None:
        limit = check_limit(limit)

        def steps() -> Step[None]:
            key = {"scope": limit.scope, "name": limit.name}
            if limit.empty:
                yield (
                    self.sql.text(
                        "DELETE FROM {s}.limits WHERE scope = %(scope)s AND name = %(name)s"
                    ),
                    key,
                )
                return
            rows = yield (
                self.sql.text(
                    "SELECT rate, period, burst, tokens, tokens_at FROM {s}.limits"
                    " WHERE scope = %(scope)s AND name = %(name)s FOR UPDATE"
                ),
                key,
            )
            tokens = at = None
            if rows:
                rate, period, burst, old_tokens, old_at = rows[0]
                if (rate, period, burst) == (limit.rate, float(limit.period), limit.burst):
                    tokens, at = old_tokens, old_at  # the same rate: its bucket goes on
            else:
                [(count,)] = yield self.sql.text("SELECT count(*) FROM {s}.limits"), {}
                if count >= MAX_LIMITS:
                    raise InvalidJob(
                        f"there are {MAX_LIMITS} limits already (at most {MAX_LIMITS})"
                    )
            yield (
                self.sql.text(
                    "INSERT INTO {s}.limits (scope, name, concurrency, rate, period, burst,"
                    " max_depth, tokens, tokens_at) VALUES (%(scope)s, %(name)s, %(c)s, %(r)s,"
                    " %(p)s, %(b)s, %(d)s, %(t)s, %(at)s) ON CONFLICT (scope, name) DO UPDATE SET"
                    " concurrency = excluded.concurrency, rate = excluded.rate,"
                    " period = excluded.period, burst = excluded.burst,"
                    " max_depth = excluded.max_depth, tokens = excluded.tokens,"
                    " tokens_at = excluded.tokens_at"
                ),
                {**key, "c": limit.concurrency, "r": limit.rate, "p": float(limit.period),
                 "b": limit.burst, "d": limit.max_depth, "t": tokens, "at": at},
            )  # fmt: skip

        await self._tx(steps)
        self._announce(ready=True)  # a looser limit may let queued jobs go

    async def limits(self) -> builtins.list[Limit]:
        rows = await self._read(
            self.sql.text(
                "SELECT scope, name, concurrency, rate, period, burst, max_depth FROM {s}.limits"
            ),
            {},
        )
        found = [
            Limit(
                scope=r[0],
                name=r[1],
                concurrency=r[2],
                rate=r[3],
                period=r[4],
                burst=r[5],
                max_depth=r[6],
            )
            for r in rows
        ]
        return sorted(found, key=lambda x: (x.scope, x.name))

    async def pause(self, queue: str, paused: bool, *, until: float | None = None) -> None:
        until = check_pause(queue, paused, until)

        def steps() -> Step[None]:
            if paused:
                yield (
                    self.sql.text(
                        "INSERT INTO {s}.paused (queue, until) VALUES (%(q)s, %(u)s)"
                        " ON CONFLICT (queue) DO UPDATE SET until = EXCLUDED.until"
                        " WHERE paused.until IS DISTINCT FROM EXCLUDED.until"
                    ),
                    {"q": queue, "u": until},
                )
            else:
                yield self.sql.text("DELETE FROM {s}.paused WHERE queue = %(q)s"), {"q": queue}

        await self._tx(steps, tx=False)
        if not paused:
            self._announce(ready=True)

    async def paused(self) -> builtins.list[str]:
        rows = await self._read(self.sql.text("SELECT queue FROM {s}.paused"), {})
        return sorted(q for (q,) in rows)

    async def pauses(self) -> dict[str, float | None]:
        rows = await self._read(self.sql.text("SELECT queue, until FROM {s}.paused"), {})
        return {q: None if u is None else float(u) for q, u in sorted(rows)}

    async def resume_due(self, now: float) -> builtins.list[str]:
        check_seconds("now", now)

        def steps() -> Step[list[Any]]:
            rows = yield (
                self.sql.text(
                    "DELETE FROM {s}.paused WHERE queue IN (SELECT queue FROM {s}.paused"
                    " WHERE until IS NOT NULL AND until <= %(now)s ORDER BY until"
                    " LIMIT %(n)s FOR UPDATE SKIP LOCKED) RETURNING queue"
                ),
                {"now": now, "n": MAX_RESUME},
            )
            return rows

        rows = await self._tx(steps, tx=False)
        if rows:
            self._announce(ready=True)
        return sorted(q for (q,) in rows)

    # -- periodic schedules --------------------------------------------------------------------

    _PCOLS = "name, cron, every, timezone, spec, catch_up, paused, next_at"

    async def set_periodic(self, periodic: Periodic) -> Periodic:
        p = check_periodic(periodic)
        spec = codec.dumps(p.spec, "schedule spec")
        definition = p.definition

        def steps() -> Step[Periodic]:
            rows = yield (
                self.sql.text(
                    f"SELECT {self._PCOLS}, definition FROM {{s}}.periodics WHERE name = %(n)s"
                    " FOR UPDATE"
                ),
                {"n": p.name},
            )
            if rows and rows[0][-1] == definition:
                return _periodic(rows[0])  # kept as it is: its ticks do not move
            if not rows:
                [(count,)] = yield self.sql.text("SELECT count(*) FROM {s}.periodics"), {}
                if count >= MAX_PERIODICS:
                    raise InvalidJob(
                        f"there are {MAX_PERIODICS} schedules already (at most {MAX_PERIODICS})"
                    )
            stored = yield (
                self.sql.text(
                    f"INSERT INTO {{s}}.periodics ({self._PCOLS}, definition) VALUES (%(n)s,"
                    " %(cron)s, %(every)s, %(tz)s, %(spec)s, %(cu)s, %(paused)s, %(next)s, %(def)s)"
                    " ON CONFLICT (name) DO UPDATE SET cron = excluded.cron,"
                    " every = excluded.every,"
                    " timezone = excluded.timezone, spec = excluded.spec,"
                    " catch_up = excluded.catch_up, paused = excluded.paused,"
                    f" next_at = excluded.next_at, definition = excluded.definition"
                    f" RETURNING {self._PCOLS}"
                ),
                {"n": p.name, "cron": p.cron, "every": p.every, "tz": p.timezone, "spec": spec,
                 "cu": p.catch_up, "paused": p.paused, "next": float(p.next_at),
                 "def": definition},
            )  # fmt: skip
            return _periodic(stored[0])

        return await self._tx(steps)

    async def periodics(self) -> builtins.list[Periodic]:
        rows = await self._read(self.sql.text(f"SELECT {self._PCOLS} FROM {{s}}.periodics"), {})
        return sorted((_periodic(r) for r in rows), key=lambda p: p.name)

    async def remove_periodic(self, name: str) -> bool:
        check_name("schedule name", name)

        def steps() -> Step[bool]:
            rows = yield (
                self.sql.text("DELETE FROM {s}.periodics WHERE name = %(n)s RETURNING 1"),
                {"n": name},
            )
            return bool(rows)

        return await self._tx(steps, tx=False)

    async def pause_periodic(self, name: str, paused: bool) -> None:
        check_name("schedule name", name)

        def steps() -> Step[None]:
            rows = yield (
                self.sql.text(
                    "UPDATE {s}.periodics SET paused = %(p)s WHERE name = %(n)s RETURNING 1"
                ),
                {"p": bool(paused), "n": name},
            )
            if not rows:
                raise InvalidJob(f"no schedule named {name!r}")

        await self._tx(steps, tx=False)

    async def due_periodics(self, now: float, limit: int = 100) -> builtins.list[Periodic]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidJob("limit must be 1-10000")
        rows = await self._read(
            self.sql.text(
                f"SELECT {self._PCOLS} FROM {{s}}.periodics WHERE next_at <= %(now)s::float8"
                " ORDER BY next_at, name LIMIT %(limit)s"
            ),
            {"now": now, "limit": limit},
        )
        return [_periodic(r) for r in rows]

    async def fire_periodic(
        self, name: str, tick: float, next_at: float, spec: JobSpec | None, now: float
    ) -> Enqueued | None:
        check_name("schedule name", name)
        if not next_at > tick:
            raise InvalidJob(f"the next tick ({next_at}) must come after this one ({tick})")
        items = None
        if spec is not None:
            if not isinstance(spec, JobSpec):
                raise InvalidJob("job 0: not a JobSpec")
            items = check_specs([dataclasses.replace(spec, unique_key=periodic_key(name, tick))])

        def steps() -> Step[Enqueued | None]:
            rows = yield (
                self.sql.text("SELECT next_at FROM {s}.periodics WHERE name = %(n)s FOR UPDATE"),
                {"n": name},
            )
            if not rows or rows[0][0] != tick:
                return None  # fired already (or changed, or gone): nothing to do
            answer = None
            if items:
                deltas = Deltas()
                [answer] = yield from enqueue_steps(self.sql, items, now, deltas)
                yield from deltas.flush(self.sql)
            yield (
                self.sql.text("UPDATE {s}.periodics SET next_at = %(at)s WHERE name = %(n)s"),
                {"at": float(next_at), "n": name},
            )
            return answer

        answer = await self._tx(steps)
        if answer is not None:
            self._announce(ready=answer.created and answer.state is S.QUEUED)
        return answer

    # -- health ----------------------------------------------------------------------------------

    async def oldest_transaction_age(self) -> float | None:
        """Seconds the oldest open transaction of another client of the database has
        been running, or None when there is none (also in ``stats()``)."""
        rows = await self._read(_OLDEST_XACT, {})
        age = rows[0][0] if rows else None
        return None if age is None else max(0.0, float(age))


def _args_size(args: Any) -> int:
    return 0 if args is None else len(args)


def _periodic(row: Sequence[Any]) -> Periodic:
    return Periodic(
        name=row[0], cron=row[1], every=row[2], timezone=row[3],
        spec=codec.loads(bytes(row[4])), catch_up=row[5], paused=bool(row[6]),
        next_at=float(row[7]),
    )  # fmt: skip


async def _drive(cur: psycopg.AsyncCursor[tuple[Any, ...]], steps: Step[T]) -> T:
    """Run the statements ``steps`` yields on ``cur``, sending each one's rows back."""
    rows: Any = None
    while True:
        try:
            sql, params = steps.send(rows)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        await cur.execute(sql, params)
        rows = await cur.fetchall() if cur.description is not None else []


class _Lim(Bucket):
    """A limit as a gated claim sees it: its running jobs, and its rate's bucket."""

    __slots__ = ("conc", "rate", "running", "used")

    def __init__(self, conc: int | None, rate: int | None, period: float, burst: int,
                 tokens: float | None, at: float | None) -> None:  # fmt: skip
        super().__init__(rate, period, burst, tokens, at)
        self.conc = conc
        self.rate = rate
        self.running = 0
        self.used = False

    def room(self, now: float) -> float:
        """Jobs it lets through now (inf: no limit of that kind)."""
        out = float("inf")
        if self.conc is not None:
            out = self.conc - self.running
        if self.rate is not None:
            tokens = self.refill(now)
            out = min(out, float(int(tokens + TOKEN_EPS)))
        return max(out, 0.0)


class _Gate:
    """A gated claim's limits: (scope, name) -> _Lim, consumed job by job."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.limits: dict[tuple[str, str], _Lim] = {}

    def _two(self, queue: str, type_: str) -> list[_Lim]:
        return [x for x in (self.limits.get(("queue", queue)), self.limits.get(("type", type_)))
                if x is not None]  # fmt: skip

    def cap(self, queue: str, type_: str, want: int) -> int:
        room = float(want)
        for lim in self._two(queue, type_):
            room = min(room, lim.room(self.now))
        return int(room)

    def room(self, queue: str, type_: str) -> bool:
        return all(lim.room(self.now) >= 1 for lim in self._two(queue, type_))

    def took(self, queue: str, type_: str) -> None:
        for lim in self._two(queue, type_):
            if lim.conc is not None:
                lim.running += 1
            if lim.rate is not None:
                lim.refill(self.now)
                lim.tokens -= 1.0
                lim.used = True

    def used(self) -> list[tuple[tuple[str, str], _Lim]]:
        return [(key, lim) for key, lim in sorted(self.limits.items()) if lim.used]
