"""Every default distqueue has, in one place: the server's, the worker's, a job's.

Code, CLI options and docs read them from here; a setting's value comes from a
flag, then the environment, then a config file (docs/configuration.md), then here.
"""

from __future__ import annotations

import os

# -- where ---------------------------------------------------------------------------------

#: the protocol port, and the address clients and workers use when told none
PORT = 7700
HOST = "127.0.0.1"
SERVER = f"{HOST}:{PORT}"
#: the admin port (dashboard, /metrics, /health)
HTTP = "127.0.0.1:7701"
#: the embedded store's data directory
DATA = "./distqueue-data"
#: the config file read from the working directory when --config names none
CONFIG_FILE = "distqueue.toml"

# -- a job ---------------------------------------------------------------------------------

QUEUE = "default"
#: 0 most urgent; distqueue's own scale is 0..10 (the range goes on to 2**32-1)
PRIORITY = 5
#: retryable failures allowed before a job is dead
MAX_RETRIES = 3

# -- leases, retries, retention --------------------------------------------------------------

#: seconds a claim holds a job unless a heartbeat renews it
LEASE = 30.0
#: a job whose lease is lost without an answer more than this many times is dead (poison)
POISON_LIMIT = 3
#: retry backoff: the n-th failure waits min(cap, base * factor**(n-1)) seconds, less up
#: to ``jitter`` of it at random
RETRY_BASE = 2.0
RETRY_FACTOR = 2.0
RETRY_CAP = 3600.0
RETRY_JITTER = 0.5
#: seconds a succeeded job is kept; a dead or cancelled one
RETAIN_SUCCEEDED = 86_400.0
RETAIN_FAILED = 7 * 86_400.0

# -- the server's limits ---------------------------------------------------------------------

#: the largest argument of a request (a payload, a spec, a result), in bytes
MAX_PAYLOAD = 64 * 1024 * 1024
#: a connection whose unread replies pass this is dropped at once ...
MAX_OUTPUT = 256 * 1024 * 1024
#: ... or when they stay above this many bytes for OUTPUT_SOFT_SECONDS
OUTPUT_SOFT = 32 * 1024 * 1024
OUTPUT_SOFT_SECONDS = 30.0
#: the most bytes of jobs one FETCH answer carries
MAX_FETCH_BYTES = 16 * 1024 * 1024
#: seconds a worker-declared type is still accepted after its last worker left
TYPE_MEMORY = 7 * 86_400.0
#: seconds a connection has to authenticate; a half-sent request may stall
AUTH_TIMEOUT = 10.0
FRAME_TIMEOUT = 30.0
#: seconds between a blocked FETCH's or WAIT's own looks at the store
POLL = 1.0
#: /health: seconds of no progress with jobs queued and workers idle = stuck
STUCK_AFTER = 60.0
#: /health (PostgreSQL store): seconds a transaction on the database may stay open
#: before it is named in ``warnings``
LONG_TRANSACTION = 300.0
#: "full" (fsync every commit) or "normal"
DURABILITY = "full"

# -- the worker -------------------------------------------------------------------------------

#: jobs a worker runs at once, from the machine: 32 a core (16 to 256) on the thread
#: pool — threads start only as jobs need them, so short jobs keep a few busy and
#: slow (I/O) ones get many; with --pool process, a child process a core
CONCURRENCY = min(256, max(16, 32 * (os.cpu_count() or 1)))
PROCESSES = max(1, os.cpu_count() or 1)
POOL = "thread"
#: seconds running jobs get to finish on a graceful stop
GRACE = 30.0
#: bytes of a shell job's stdout, and of its stderr, kept
SHELL_OUTPUT_LIMIT = 16 * 1024 * 1024
