-- distqueue's PostgreSQL schema, version 3: priorities 0 .. 2^32-1.
--
-- JobSpec.priority goes from 0 (most urgent) to 4294967295 (distqueue.jobs.MAX_PRIORITY;
-- it was 0..10). jobs.priority was a smallint (up to 32767); it becomes a bigint
-- (integer would stop at 2^31-1), with a CHECK for the range. The ready index
-- (jobs_ready: type, queue, priority, seq) is rebuilt with the column, and stays what
-- the claim reads: per (type, queue) pair, most urgent first, FIFO within a priority.
-- The counters' 'p:<priority>' keys are text: nothing to change there.
--
-- Changing the column's type rewrites the table and its indexes, under an ACCESS
-- EXCLUSIVE lock: every store call waits for it (seconds per million jobs). ANALYZE
-- after, as the rewrite leaves the column without statistics.
--
-- Down: refused (an error, nothing changed) while a job not finished yet (waiting,
-- scheduled, queued, running or retrying) has a priority above 32767. Clamping those
-- would silently put jobs of different priorities into one FIFO, in an order nobody
-- asked for; so they are left to finish (or be cancelled) first. The priorities of
-- finished jobs (succeeded, dead, cancelled) order nothing any more: those above
-- 32767 are clamped to 32767 (a dead job retried later comes back behind every
-- priority the older distqueue accepts, as it was).

-- distqueue:up
ALTER TABLE jobs
    ALTER COLUMN priority TYPE bigint,
    ADD CONSTRAINT jobs_priority_range CHECK (priority BETWEEN 0 AND 4294967295);
ANALYZE jobs;

-- distqueue:down
LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE;  -- (no job changes between the check and the change)
DO $$
DECLARE
    found text;
BEGIN
    SELECT string_agg(n || ' ' || s, ', ' ORDER BY st) INTO found FROM (
        SELECT state AS st, count(*) AS n,
               (ARRAY['waiting', 'scheduled', 'queued', 'running', 'retrying'])[state + 1] AS s
          FROM jobs WHERE priority > 32767 AND state IN (0, 1, 2, 3, 4) GROUP BY state) c;
    IF found IS NOT NULL THEN
        -- (all on one line: distqueue migrate shows the error's first line)
        RAISE EXCEPTION 'cannot go below schema version 3: jobs not finished yet have'
            ' priorities above 32767, which version 2 cannot hold (%); let them finish,'
            ' or cancel them, then migrate down again', found;
    END IF;
END
$$;
-- (only finished jobs are above 32767 now: clamped, in the rewrite itself)
ALTER TABLE jobs
    DROP CONSTRAINT jobs_priority_range,
    ALTER COLUMN priority TYPE smallint USING least(priority, 32767);
ANALYZE jobs;
