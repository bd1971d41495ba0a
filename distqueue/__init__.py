"""distqueue: a distributed job queue with a durable embedded store.

The public API is what ``__all__`` lists; everything else may change.
"""

from __future__ import annotations

from distqueue._version import __version__
from distqueue.errors import (
    DistQueueError,
    IllegalTransition,
    InvalidJob,
    JobNotFound,
    LeaseLost,
    QueueFull,
    StoreError,
)
from distqueue.jobs import Job, JobError, JobSpec, JobState, parse_priority
from distqueue.policy import Retention, RetryPolicy
from distqueue.store import Store, open_store
from distqueue.worker.registry import FileResult, JobContext, current_job, periodic, task

__all__ = [
    "DistQueueError",
    "FileResult",
    "IllegalTransition",
    "InvalidJob",
    "Job",
    "JobContext",
    "JobError",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "LeaseLost",
    "QueueFull",
    "Retention",
    "RetryPolicy",
    "Store",
    "StoreError",
    "__version__",
    "current_job",
    "open_store",
    "parse_priority",
    "periodic",
    "task",
]
