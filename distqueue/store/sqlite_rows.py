"""How the embedded store's rows become values, and values rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distqueue import codec
from distqueue.jobs import Job, JobError, JobState

__all__ = [
    "FULL_COLS", "SMALL_COLS", "SMALL_READ", "SUMMARY_COLS", "Running", "Waiting", "job_from_row",
]  # fmt: skip

_COLS = (
    "id, type, queue, priority, args, {payload}, length(payload), state, max_retries, timeout,"
    " deadline, run_at, unique_key, attempts, failures, lost, worker, lease_until,"
    " cancel_requested, {result}, result_kind, error, progress, created_at, started_at,"
    " finished_at, coalesce(token, attempts), after_ids, on_failure, pass_results"
)
FULL_COLS = _COLS.format(payload="payload", result="result")
SUMMARY_COLS = _COLS.format(payload="NULL", result="NULL")
#: the largest payload or result read on the server's loop (SQLiteStore.get); a
#: job with a bigger one is read on a reader thread
SMALL_READ = 64 * 1024
#: the columns of such a read: payload and result only when within SMALL_READ
SMALL_COLS = _COLS.format(
    payload=f"CASE WHEN length(payload) <= {SMALL_READ} THEN payload END",
    result=f"CASE WHEN length(result) <= {SMALL_READ} THEN result END",
)


def job_from_row(row: Sequence[Any]) -> Job:
    kind = row[20]
    result = row[19]
    if result is not None and kind == "json":
        result = codec.loads(result)
    return Job(
        id=row[0], type=row[1], queue=row[2], priority=row[3],
        args=None if row[4] is None else codec.loads(row[4]),
        payload=row[5], payload_size=row[6] or 0, state=JobState(row[7]),
        max_retries=row[8], timeout=row[9], deadline=row[10], run_at=row[11],
        unique_key=row[12], attempts=row[13], failures=row[14], lost=row[15],
        worker=row[16], lease_until=row[17], cancel_requested=bool(row[18]),
        result=result, error=None if row[21] is None else JobError.from_dict(codec.loads(row[21])),
        progress=None if row[22] is None else codec.loads(row[22]),
        created_at=row[23], started_at=row[24], finished_at=row[25], token=row[26],
        after=() if row[27] is None else tuple(codec.loads(row[27])),
        on_failure=row[28] or "cancel", pass_results=bool(row[29]),
    )  # fmt: skip


class Running:
    """What the store keeps in memory about a running job."""

    __slots__ = (
        "cancel", "failures", "lease_until", "lost", "max_retries", "priority", "queue",
        "token", "type", "worker",
    )  # fmt: skip

    def __init__(self, row: Sequence[Any]) -> None:
        # row: worker, attempts, lease_until, cancel_requested, queue, type, priority,
        #      failures, max_retries, lost
        self.worker: str = row[0]
        self.token: int = row[1]
        self.lease_until: float = row[2]
        self.cancel: bool = bool(row[3])
        self.queue: str = row[4]
        self.type: str = row[5]
        self.priority: int = row[6]
        self.failures: int = row[7]
        self.max_retries: int = row[8]
        self.lost: int = row[9]


class Waiting:
    """What the store keeps in memory about a waiting job (JobSpec.after)."""

    __slots__ = ("on_failure", "pending", "queue")

    def __init__(self, queue: str, on_failure: str, pending: set[int]) -> None:
        self.queue = queue
        #: "cancel" or "run" (JobSpec.on_failure)
        self.on_failure = on_failure
        #: the ids of the jobs it still waits for (one of them ending dead or
        #: cancelled cancels it at once, with on_failure "cancel")
        self.pending = pending
