"""The JSON shapes that travel in bulk strings: job specs in, job statuses out."""

from __future__ import annotations

from typing import Any

from distqueue import codec, defaults
from distqueue.errors import InvalidJob
from distqueue.jobs import MAX_PRIORITY, Job, JobError, JobSpec, JobState, parse_priority

__all__ = ["SPEC_FIELDS", "job_from_wire", "job_to_wire", "spec_from_wire"]

#: the fields a SUBMIT spec object may have (anything else is refused as a typo)
SPEC_FIELDS = frozenset({
    "type", "args", "queue", "priority", "retries", "timeout", "delay", "run_at",
    "deadline", "deadline_in", "unique_key", "payload", "check_type", "after",
    "on_failure", "pass_results",
})  # fmt: skip


def _number(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJob(f"{key} must be a number of seconds, not {value!r}")
    return float(value)


def spec_from_wire(obj: Any, now: float, payload: bytes | None = None) -> tuple[JobSpec, bool]:
    """A SUBMIT spec object -> (JobSpec, check_type). Relative times (``delay``,
    ``deadline_in``) are turned into absolute ones with the server's ``now``.
    Raises InvalidJob naming the bad field."""
    if not isinstance(obj, dict):
        raise InvalidJob("a job spec must be a JSON object")
    if not SPEC_FIELDS.issuperset(obj):
        unknown = set(obj) - SPEC_FIELDS
        raise InvalidJob(f"unknown field(s) in job spec: {', '.join(sorted(unknown))}")
    if "type" not in obj:
        raise InvalidJob("a job spec needs a type")
    get = obj.get
    # the optional times, looked at only when given (most specs have none)
    run_at = deadline = timeout = None
    if get("run_at") is not None:
        run_at = _number(obj, "run_at")
    if get("delay") is not None:
        delay = _number(obj, "delay")
        assert delay is not None
        if run_at is not None:
            raise InvalidJob("give delay or run_at, not both")
        if delay < 0:
            raise InvalidJob("delay must not be negative")
        run_at = now + delay if delay > 0 else None
    if get("deadline") is not None:
        deadline = _number(obj, "deadline")
    if get("deadline_in") is not None:
        deadline_in = _number(obj, "deadline_in")
        assert deadline_in is not None
        if deadline is not None:
            raise InvalidJob("give deadline or deadline_in, not both")
        deadline = now + deadline_in
    if get("timeout") is not None:
        timeout = _number(obj, "timeout")
    retries = get("retries", 3)
    priority = get("priority", 5)
    if priority.__class__ is not int or not 0 <= priority <= MAX_PRIORITY:  # names, checks
        if isinstance(priority, bool) or not isinstance(priority, int | str):
            raise InvalidJob(
                f"priority must be high, normal, low or 0-{MAX_PRIORITY}, not {priority!r}"
            )
        priority = parse_priority(priority)
    check_type = get("check_type", True)
    if not isinstance(check_type, bool):
        raise InvalidJob("check_type must be true or false")
    after: tuple[int, ...] = ()
    on_failure, pass_results = "cancel", False
    if get("after") is not None:  # a workflow's job (most specs have none)
        ids = get("after")
        if isinstance(ids, int) and not isinstance(ids, bool):
            ids = [ids]
        if not isinstance(ids, list):
            raise InvalidJob("after must be a job id or a list of job ids")
        after = tuple(ids)
        on_failure = get("on_failure", "cancel")
        pass_results = get("pass_results", False)
    elif get("on_failure") is not None or get("pass_results"):
        raise InvalidJob("on_failure and pass_results go with after (the jobs to wait for)")
    spec = JobSpec(
        type=obj["type"], args=get("args"), payload=payload, queue=get("queue", defaults.QUEUE),
        priority=priority, max_retries=retries, timeout=timeout, deadline=deadline,
        run_at=run_at, unique_key=get("unique_key"), after=after, on_failure=on_failure,
        pass_results=pass_results,
    )  # fmt: skip
    spec.validate()
    return spec, check_type


def job_to_wire(job: Job) -> dict[str, Any]:
    """A job as STATUS, WAIT and LIST show it: every field but the payload bytes; the
    result itself when it is JSON, its size when it is bytes."""
    out: dict[str, Any] = {
        "id": job.id, "type": job.type, "state": job.state.value, "args": job.args,
        "queue": job.queue, "priority": job.priority, "retries": job.max_retries,
        "timeout": job.timeout, "deadline": job.deadline, "run_at": job.run_at,
        "unique_key": job.unique_key, "attempts": job.attempts, "token": job.token,
        "failures": job.failures,
        "lost": job.lost, "worker": job.worker, "lease_until": job.lease_until,
        "cancel_requested": job.cancel_requested, "payload_size": job.payload_size,
        "error": None if job.error is None else job.error.to_dict(),
        "progress": job.progress, "created_at": job.created_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
    }  # fmt: skip
    if job.after:
        out["after"], out["on_failure"] = list(job.after), job.on_failure
        out["pass_results"] = job.pass_results
    if isinstance(job.result, bytes):
        out["result_kind"], out["result_size"] = "bytes", len(job.result)
    elif job.state is JobState.SUCCEEDED and job.result is not None:
        out["result_kind"], out["result"] = "json", job.result
    return out


def job_from_wire(data: bytes | dict[str, Any]) -> Job:
    """The client's view of a job from STATUS/WAIT/LIST JSON (payload not included)."""
    obj = codec.loads(data, "job") if isinstance(data, bytes) else data
    error = obj.get("error")
    return Job(
        id=obj["id"], type=obj["type"], args=obj.get("args"), payload=None,
        payload_size=obj.get("payload_size", 0), queue=obj["queue"],
        priority=obj["priority"], max_retries=obj["retries"], timeout=obj.get("timeout"),
        deadline=obj.get("deadline"), run_at=obj.get("run_at"),
        unique_key=obj.get("unique_key"), state=JobState(obj["state"]),
        attempts=obj["attempts"], token=obj.get("token", obj["attempts"]),
        failures=obj["failures"], lost=obj["lost"],
        worker=obj.get("worker"), lease_until=obj.get("lease_until"),
        cancel_requested=obj.get("cancel_requested", False), result=obj.get("result"),
        error=None if error is None else JobError.from_dict(error),
        progress=obj.get("progress"), created_at=obj["created_at"],
        started_at=obj.get("started_at"), finished_at=obj.get("finished_at"),
        after=tuple(obj.get("after") or ()), on_failure=obj.get("on_failure", "cancel"),
        pass_results=obj.get("pass_results", False),
    )  # fmt: skip
