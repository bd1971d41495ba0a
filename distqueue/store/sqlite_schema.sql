-- The embedded store's schema (PRAGMA user_version = 2; sqlite.py migrates version 1).
-- Columns added later as nullable (queued_at, after_ids, on_failure, pass_results)
-- are added by sqlite.py with ALTER TABLE, in place: a file stays readable by the
-- version before them.
-- One row per job; the state machine lives in distqueue/lifecycle.py.
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY,      -- assigned by the store, never reused
    type             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,         -- 0 most urgent .. 2**32-1 (distqueue's own scale 0..10)
    args             BLOB,                     -- JSON
    payload          BLOB,                     -- raw bytes or NULL
    state            TEXT    NOT NULL,         -- JobState value
    max_retries      INTEGER NOT NULL,
    timeout          REAL,
    deadline         REAL,
    run_at           REAL,                     -- scheduled/retrying: when it is due
    unique_key       TEXT,
    seq              INTEGER,                  -- queued: FIFO order within a priority
    attempts         INTEGER NOT NULL DEFAULT 0,  -- claims so far = fencing token
    failures         INTEGER NOT NULL DEFAULT 0,
    lost             INTEGER NOT NULL DEFAULT 0,
    worker           TEXT,
    lease_until      REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result           BLOB,
    result_kind      TEXT,                     -- 'json' | 'bytes' | NULL
    error            BLOB,                     -- JSON {kind, message, traceback}
    progress         BLOB,                     -- JSON {percent, message}
    created_at       REAL    NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    token            INTEGER                   -- the current claim's fencing token:
                                               -- (epoch - 1) << 32 | attempts (NULL: = attempts)
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL;
-- Listing by state. Partial on purpose: a job's hot path (queued -> running ->
-- succeeded) never touches it, so it costs nothing per job; dead letters,
-- retrying, scheduled, waiting and cancelled jobs are found without a scan.
-- (sqlite.py drops an older definition without 'waiting' so this one replaces it,
-- and its queries repeat this WHERE word for word: INDEXED_STATES.)
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id)
    WHERE state IN ('waiting', 'scheduled', 'retrying', 'dead', 'cancelled');
-- Finished jobs by state and finish time: purge deletes old ones in small batches
-- through it instead of scanning the table.
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, finished_at)
    WHERE finished_at IS NOT NULL;
-- beanstalk's kick and peek (Store.kick, Store.peek): a queue's dead jobs by finish
-- time, its scheduled and retrying jobs by run-at, each also by type (the id, the
-- rowid, orders ties). Partial: only jobs in those states are in them, so the hot
-- path never touches them. Their queries name them (INDEXED BY) and repeat their
-- WHERE word for word (sqlite.py: DEAD_WHERE, DUE_WHERE). Made at open on an older
-- file too (IF NOT EXISTS): a file with them stays readable by the version before.
CREATE INDEX IF NOT EXISTS jobs_dead_queue ON jobs (queue, finished_at)
    WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS jobs_dead_queue_type ON jobs (queue, type, finished_at)
    WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS jobs_due_queue ON jobs (queue, run_at)
    WHERE state IN ('scheduled', 'retrying');
CREATE INDEX IF NOT EXISTS jobs_due_queue_type ON jobs (queue, type, run_at)
    WHERE state IN ('scheduled', 'retrying');
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- job types workers declared, and when one last did (SUBMIT checks types against it)
CREATE TABLE IF NOT EXISTS types (
    name      TEXT PRIMARY KEY,
    last_seen REAL NOT NULL
);
-- Dependencies (JobSpec.after): one row per (job waited for, waiting job) while the
-- waiting job still waits for it. The row goes when that job ends and its waiters
-- move on (in the same transaction), or the waiting job is cancelled; rows whose
-- job already ended are a cascade left for later operations (sqlite.py, CASCADE).
CREATE TABLE IF NOT EXISTS waits (
    dep    INTEGER NOT NULL,   -- the job waited for
    waiter INTEGER NOT NULL,   -- the waiting job
    PRIMARY KEY (dep, waiter)
) WITHOUT ROWID;
-- Flow control (Store.set_limit): one row per (scope, name) with any limit set.
CREATE TABLE IF NOT EXISTS limits (
    scope       TEXT    NOT NULL,   -- 'queue' | 'type'
    name        TEXT    NOT NULL,   -- the queue's or type's name ('*': every queue)
    concurrency INTEGER,
    rate        INTEGER,
    period      REAL    NOT NULL,
    burst       INTEGER NOT NULL,
    max_depth   INTEGER,
    tokens      REAL,               -- the rate's token bucket as the last claim left it
    tokens_at   REAL,               -- ... and when (NULL: full, never used)
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
-- paused queues (Store.pause); until: when the pause ends (NULL: when resumed;
-- added in place to files made before it, see sqlite.py)
CREATE TABLE IF NOT EXISTS paused (
    queue TEXT PRIMARY KEY,
    until REAL
) WITHOUT ROWID;
-- periodic schedules (Store.set_periodic); their ticks are computed by
-- distqueue/periodic.py, the store keeps each one's next tick
CREATE TABLE IF NOT EXISTS periodics (
    name       TEXT PRIMARY KEY,
    cron       TEXT,
    every      REAL,
    timezone   TEXT    NOT NULL,
    spec       BLOB    NOT NULL,   -- JSON object
    catch_up   TEXT    NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    next_at    REAL    NOT NULL,
    definition TEXT    NOT NULL    -- Periodic.definition
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS periodics_next ON periodics (next_at);
