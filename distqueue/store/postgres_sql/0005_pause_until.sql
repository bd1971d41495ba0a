-- distqueue's PostgreSQL schema, version 5: pauses that end by themselves (#16,
-- beanstalk's pause-tube; `distqueue pause QUEUE --for 10m`). A pause with an end
-- has it in paused.until (epoch seconds); every process's housekeeping tick ends the
-- due ones (Store.resume_due), reading them through paused_until, so a pause outlives
-- the process that asked for it. A nullable column (no rewrite of a table that holds
-- one row per paused queue anyway); a store of version 4 open on this schema treats
-- a timed pause as one without an end.

-- distqueue:up
ALTER TABLE paused ADD COLUMN until float8;
CREATE INDEX paused_until ON paused (until) WHERE until IS NOT NULL;

-- distqueue:down
DROP INDEX paused_until;
ALTER TABLE paused DROP COLUMN until;
