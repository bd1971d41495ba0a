"""The legal state transitions, as one table; docs/lifecycle.md draws the same graph.

Stores call ``check_transition`` before every state change, so an edge that is
not in the table raises IllegalTransition instead of being applied.
"""

from __future__ import annotations

from distqueue.errors import IllegalTransition
from distqueue.jobs import JobState

__all__ = ["TRANSITIONS", "check_transition"]

S = JobState

#: (from, to) -> the event that takes that edge
TRANSITIONS: dict[tuple[JobState | None, JobState], str] = {
    (None, S.QUEUED): "enqueue",
    (None, S.SCHEDULED): "enqueue with a delay",
    (None, S.WAITING): "enqueue after jobs not yet finished",
    (None, S.CANCELLED): "enqueue after a job already dead or cancelled (on_failure cancel)",
    (S.WAITING, S.QUEUED): "the last job it waits for succeeded (or ended, on_failure run)",
    (S.WAITING, S.SCHEDULED): "the same, its run-at still ahead",
    (S.WAITING, S.CANCELLED): "cancel; a job it waits for ended dead or cancelled",
    (S.SCHEDULED, S.QUEUED): "promote (run-at reached); kick",
    (S.SCHEDULED, S.CANCELLED): "cancel",
    (S.QUEUED, S.RUNNING): "claim",
    (S.QUEUED, S.DEAD): "claim after the deadline (expired)",
    (S.QUEUED, S.CANCELLED): "cancel",
    (S.RUNNING, S.SUCCEEDED): "complete",
    (S.RUNNING, S.RETRYING): "fail, retryable, retries left",
    (S.RUNNING, S.DEAD): "fail permanent or retries exhausted; lease lost too often (poison)",
    (S.RUNNING, S.QUEUED): "lease expired or released",
    (S.RUNNING, S.SCHEDULED): "released with a delay (requeue)",
    (S.RUNNING, S.CANCELLED): "worker stopped it after a cancel; lease lost after a cancel",
    (S.RETRYING, S.QUEUED): "promote (backoff over); kick",
    (S.RETRYING, S.CANCELLED): "cancel",
    (S.DEAD, S.QUEUED): "retry",
    (S.CANCELLED, S.QUEUED): "retry",
}


def check_transition(job_id: int, old: JobState | None, new: JobState) -> None:
    """Raise IllegalTransition unless ``old -> new`` is an edge of the state machine."""
    if (old, new) not in TRANSITIONS:
        where = "a new job" if old is None else f"job {job_id} is {old.value}"
        raise IllegalTransition(f"{where}: cannot become {new.value}")
