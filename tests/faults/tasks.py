"""The task the fault suite's workers run (``--tasks tests.faults.tasks``).

``record`` appends one line per execution to the file named by ``$DQ_FAULT_LOG``
(opened with O_APPEND and written with one ``os.write``, so lines of concurrent
executions, even in different processes, never interleave), then sleeps, then
returns what the history checker needs to tell which execution's result the
store accepted: the client's tag, the fencing token of the claim it ran under,
and the worker process.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import distqueue

#: the environment variable naming the execution log
LOG_ENV = "DQ_FAULT_LOG"
#: the job type of ``record``
RECORD = "tests.faults.tasks.record"


def _token(ctx: distqueue.JobContext) -> int:
    # the claim's fencing token; before contexts carried it, ``attempts`` was the token
    return int(getattr(ctx, "token", None) or ctx.attempts)


@distqueue.task
def record(tag: str, seconds: float = 0.0) -> dict[str, Any]:
    ctx = distqueue.current_job()
    token = _token(ctx)
    pid = os.getpid()
    path = os.environ.get(LOG_ENV)
    if path:
        line = f"{tag} {ctx.id} {token} {pid} {time.time():.6f}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    if seconds > 0:
        # not time.sleep: under libfaketime (the clock-jump nemesis) its absolute
        # monotonic clock_nanosleep fails with EINVAL; a timed wait does not
        threading.Event().wait(seconds)
    return {"tag": tag, "token": token, "pid": pid}
