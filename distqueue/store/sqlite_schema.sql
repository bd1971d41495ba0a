-- The embedded store's schema (PRAGMA user_version = 2; sqlite.py migrates version 1).
-- One row per job; the state machine lives in distqueue/lifecycle.py.
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY,      -- assigned by the store, never reused
    type             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,         -- 0 most urgent .. 10
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
-- retrying, scheduled and cancelled jobs are found without a scan.
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id)
    WHERE state IN ('scheduled', 'retrying', 'dead', 'cancelled');
-- Finished jobs by state and finish time: purge deletes old ones in small batches
-- through it instead of scanning the table.
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- job types workers declared, and when one last did (SUBMIT checks types against it)
CREATE TABLE IF NOT EXISTS types (
    name      TEXT PRIMARY KEY,
    last_seen REAL NOT NULL
);
