-- distqueue's PostgreSQL schema, version 4: what beanstalkd's protocol needs (#16):
-- kick, peek-delayed and peek-buried by queue (and type). Indexes only: a store of
-- this distqueue open on a schema brought down to version 3 keeps working (those
-- reads then go through the older indexes).
--
-- kick and peek read a queue's dead jobs by (finished_at, id) and its scheduled and
-- retrying jobs by (run_at, id), of one type or of every type: four partial indexes,
-- so that each reads the jobs it returns and no others, whatever the number of jobs
-- stored (the queue's other jobs, other queues', other types'). They cover dead,
-- scheduled and retrying jobs only: the hot path (queued, running, succeeded) writes
-- no entry in them; and every column they name is in an index already, so an
-- update that was HOT (a progress report) stays HOT.
--
-- (touch, the lease of one running job, needs no column: a running job has no
-- run-at, and its run_at keeps the time of its last touch, after which alone its
-- worker's lease row covers it; see _COVERED in distqueue/store/postgres.py.)
--
-- Building an index takes a SHARE lock on jobs, held until the migration's
-- transaction ends: changes of jobs (enqueues, claims, ACKs) wait meanwhile, reads
-- do not; each build reads the table once.

-- distqueue:up
CREATE INDEX jobs_dead_queue ON jobs (queue, finished_at, id) WHERE state = 6;
CREATE INDEX jobs_dead_type ON jobs (queue, type, finished_at, id) WHERE state = 6;
CREATE INDEX jobs_due_queue ON jobs (queue, run_at, id) WHERE state IN (1, 4);
CREATE INDEX jobs_due_type ON jobs (queue, type, run_at, id) WHERE state IN (1, 4);

-- distqueue:down
DROP INDEX jobs_due_type;
DROP INDEX jobs_due_queue;
DROP INDEX jobs_dead_type;
DROP INDEX jobs_dead_queue;
