-- distqueue's PostgreSQL schema, version 1. Applied by distqueue/store/postgres.py
-- (``distqueue migrate``) inside the store's own schema (search_path set to it), in
-- one transaction under an advisory lock, and recorded in <schema>.migrations.
-- The part after "distqueue:down" undoes it (``distqueue migrate --to 0``).
--
-- States are smallints, in distqueue.jobs.JobState's order: 0 waiting, 1 scheduled,
-- 2 queued, 3 running, 4 retrying, 5 succeeded, 6 dead, 7 cancelled. Times are epoch
-- seconds (float8), as the Store contract passes them (``now``).
--
-- Every state change of a job moves it out of one partial index into another, so it
-- is never a HOT update: each index below costs a write per state change of the jobs
-- it covers, which is why they are few and partial.

-- distqueue:up
CREATE SEQUENCE jobs_id;                 -- job ids, never reused
CREATE SEQUENCE seq;                     -- FIFO order: taken each time a job becomes queued

CREATE TABLE jobs (
    id               bigint   PRIMARY KEY DEFAULT nextval('jobs_id'),
    seq              bigint,             -- queued: FIFO order within a priority
    run_at           float8,             -- scheduled/retrying (and waiting): when due
    deadline         float8,
    timeout          float8,
    lease_until      float8,             -- running: when the lease ends
    created_at       float8   NOT NULL,
    queued_at        float8,             -- when it last became queued
    started_at       float8,
    finished_at      float8,
    state            smallint NOT NULL,
    priority         smallint NOT NULL,  -- 0 most urgent .. 10
    attempts         integer  NOT NULL DEFAULT 0,  -- claims so far: the fencing token
    failures         integer  NOT NULL DEFAULT 0,
    lost             integer  NOT NULL DEFAULT 0,
    max_retries      integer  NOT NULL,
    deps             integer  NOT NULL DEFAULT 0,  -- waiting: jobs of after not ended yet
    size             integer  NOT NULL DEFAULT 0,  -- args + payload bytes (claim budgets)
    cancel_requested boolean  NOT NULL DEFAULT false,
    has_waiters      boolean  NOT NULL DEFAULT false,  -- jobs may wait for it (waits)
    pass_results     boolean  NOT NULL DEFAULT false,
    type             text     COLLATE "C" NOT NULL,
    queue            text     COLLATE "C" NOT NULL,
    worker           text     COLLATE "C",
    unique_key       text,
    on_failure       text,               -- JobSpec.on_failure (NULL: cancel)
    result_kind      text,               -- 'json' | 'bytes'
    after_ids        bigint[],           -- JobSpec.after (NULL: none)
    args             bytea,              -- JSON
    payload          bytea,
    result           bytea,
    error            bytea,              -- JSON {kind, message, traceback}
    progress         bytea               -- JSON {percent, message, at}
) WITH (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1,
    autovacuum_vacuum_cost_limit = 2000
);
-- payloads and results are stored out of line uncompressed (they are often
-- compressed already; a claim reads them whole)
ALTER TABLE jobs ALTER COLUMN payload SET STORAGE EXTERNAL;
ALTER TABLE jobs ALTER COLUMN result SET STORAGE EXTERNAL;

-- the claim: per (type, queue) pair, most urgent first, FIFO
CREATE INDEX jobs_ready ON jobs (type, queue, priority, seq) WHERE state = 2;
-- promote: scheduled and retrying jobs by when they are due
CREATE INDEX jobs_due ON jobs (run_at, id) WHERE state IN (1, 4);
-- expire: running jobs by lease; heartbeat, release, the worker registry: by worker
CREATE INDEX jobs_lease ON jobs (lease_until, id) WHERE state = 3;
CREATE INDEX jobs_worker ON jobs (worker, id) WHERE state = 3;
-- sweep: finished jobs by state and finish time
CREATE INDEX jobs_finished ON jobs (state, finished_at, id) WHERE state IN (5, 6, 7);
-- LIST by state of the states off the hot path (waiting, scheduled, retrying, dead,
-- cancelled): dead letters are found without a scan
CREATE INDEX jobs_listing ON jobs (state, id) WHERE state IN (0, 1, 4, 6, 7);
CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key) WHERE unique_key IS NOT NULL;

-- Dependencies (JobSpec.after): one row per (job waited for, waiting job) while the
-- waiting job still waits for it; deleted when that job ends (its waiters move on in
-- the same transaction) or the waiting job is cancelled.
CREATE TABLE waits (
    dep    bigint NOT NULL,
    waiter bigint NOT NULL,
    PRIMARY KEY (dep, waiter)
);
-- jobs that ended whose waiters are still to move on: a cascade of cancellations
-- longer than one operation does, finished by the next promotes
CREATE TABLE cascade (
    dep bigint  PRIMARY KEY,
    ok  boolean NOT NULL
);

-- Counters, so that stats never counts jobs: 'q<state>:<queue>' jobs in a state,
-- 'p:<priority>' queued jobs, 'r:<type>' running jobs, 't:<total>' running totals.
-- Updated in the transaction that changes the jobs, on one of 16 shards per key
-- (the backend's pid picks it) so that concurrent transactions seldom wait for
-- each other's row locks; a read sums the shards.
CREATE TABLE counts (
    key   text     COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    n     bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (key, shard)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.0,
        autovacuum_vacuum_threshold = 500);

-- job types workers declared, and when one last did
CREATE TABLE types (
    name      text   COLLATE "C" PRIMARY KEY,
    last_seen float8 NOT NULL
);

-- the worker registry (Store.note_worker): shared by every process on the database
CREATE TABLE workers (
    id   text   COLLATE "C" PRIMARY KEY,
    seen float8 NOT NULL,
    info bytea  NOT NULL                 -- JSON object
) WITH (fillfactor = 70);
CREATE INDEX workers_seen ON workers (seen, id);

-- flow control (Store.set_limit): one row per (scope, name) with any limit; a rate's
-- token bucket as the last claim left it (NULL: full). Claims of a limited queue or
-- type lock its row, so they count running jobs and take tokens one at a time.
CREATE TABLE limits (
    scope       text    COLLATE "C" NOT NULL,
    name        text    COLLATE "C" NOT NULL,
    concurrency bigint,
    rate        bigint,
    period      float8  NOT NULL,
    burst       bigint  NOT NULL,
    max_depth   bigint,
    tokens      float8,
    tokens_at   float8,
    PRIMARY KEY (scope, name)
) WITH (fillfactor = 50);
CREATE TABLE paused (
    queue text COLLATE "C" PRIMARY KEY
);

-- periodic schedules (Store.set_periodic); distqueue/schedules.py computes the ticks
CREATE TABLE periodics (
    name       text    COLLATE "C" PRIMARY KEY,
    cron       text,
    every      float8,
    timezone   text    NOT NULL,
    spec       bytea   NOT NULL,         -- JSON object
    catch_up   text    NOT NULL,
    paused     boolean NOT NULL DEFAULT false,
    next_at    float8  NOT NULL,
    definition text    NOT NULL          -- Periodic.definition
);
CREATE INDEX periodics_next ON periodics (next_at, name);

-- distqueue:down
DROP TABLE periodics;
DROP TABLE paused;
DROP TABLE limits;
DROP TABLE workers;
DROP TABLE types;
DROP TABLE counts;
DROP TABLE cascade;
DROP TABLE waits;
DROP TABLE jobs;
DROP SEQUENCE seq;
DROP SEQUENCE jobs_id;
