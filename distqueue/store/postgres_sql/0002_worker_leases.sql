-- distqueue's PostgreSQL schema, version 2: a lease row per worker.
--
-- A heartbeat writes its worker's row, not every job the worker runs: at a few
-- hundred slots per worker, rewriting each running job every few seconds was most of
-- the table's churn (each such update is a new row version and an index entry).
--
-- How a running job's lease is read (PostgresStore, ``expire`` and ``get``): the
-- claim sets jobs.lease_until; a job claimed at or before its worker's last beat
-- (started_at <= beat_at) is covered by the row, and its lease is the later of its
-- own and the row's ``until``. A covered job that outlives its own lease is handed
-- over to the row by the next expire (jobs.lease_until set to NULL, once), so expire's
-- scan of jobs by lease never meets it again; when the row's ``until`` passes (the
-- worker stopped beating), expire deletes the row and takes back its handed-over jobs.
-- Written only while the worker runs something; a few rows, so no index but the key
-- (updates stay HOT).

-- distqueue:up
CREATE TABLE leases (
    worker  text   COLLATE "C" PRIMARY KEY,
    beat_at float8 NOT NULL,             -- the last heartbeat
    until   float8 NOT NULL              -- the lease it gave
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.0,
        autovacuum_vacuum_threshold = 200);

-- distqueue:down
-- (jobs handed over to a worker's row get its lease back on the job itself)
UPDATE jobs j SET lease_until = l.until FROM leases l
 WHERE j.state = 3 AND j.lease_until IS NULL AND l.worker = j.worker;
UPDATE jobs SET lease_until = 0 WHERE state = 3 AND lease_until IS NULL;
DROP TABLE leases;
