"""The history checker itself, on made-up histories: each counter fires on the
anomaly it names and stays 0 otherwise, so a green fault run means something."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distqueue.errors import InvalidJob, ServerUnavailable, StoreError
from distqueue.jobs import Job
from distqueue.protocol.messages import job_from_wire
from tests.faults.history import History, Report, check
from tests.faults.tasks import RECORD

pytestmark = pytest.mark.faults

PID = 4242


def job(job_id: int, tag: str, *, state: str = "succeeded", token: int = 1,
        result: Any = "auto", worker: str = "w1", lost: int = 0, **extra: Any) -> Job:  # fmt: skip
    if result == "auto":
        result = {"tag": tag, "token": token, "pid": PID} if state == "succeeded" else None
    wire = {
        "id": job_id, "type": RECORD, "args": [tag, 0.0], "state": state, "queue": "default",
        "priority": 5, "retries": 10, "attempts": token, "token": token, "failures": 0,
        "lost": lost, "worker": worker, "created_at": 1.0, "result": result, **extra,
    }  # fmt: skip
    return job_from_wire(wire)


def run(history: History, jobs: list[Job], succeeded_total: int | None = None) -> Report:
    by_id = {j.id: j for j in jobs}
    total = sum(1 for j in jobs if j.state.value == "succeeded")
    stats = {"totals": {"succeeded": total if succeeded_total is None else succeeded_total}}
    return check(history, by_id, stats, quiet=True)


@pytest.fixture
def history(tmp_path: Path) -> History:
    h = History(tmp_path / "log")
    h.worker("w1", PID)
    return h


def acked(history: History, n: int) -> list[str]:
    tags = [history.tag() for _ in range(n)]
    history.sent(tags)
    history.ok(tags, list(range(1, n + 1)))
    lines = "".join(f"{t} {i} 1 {PID} 1.0\n" for i, t in enumerate(tags, 1))
    history.log_path.write_text(lines)
    return tags


def test_a_clean_history_is_valid(history: History) -> None:
    tags = acked(history, 3)
    report = run(history, [job(i, t) for i, t in enumerate(tags, 1)])
    assert report.valid, report.summary()
    assert report.acknowledged == report.acknowledged_succeeded == 3


def test_lost_missing_or_not_succeeded(history: History) -> None:
    tags = acked(history, 3)
    report = run(history, [job(1, tags[0]), job(2, tags[1], state="dead")])
    assert report.lost == [2, 3] and report.acknowledged_succeeded == 1 and not report.valid


def test_unexpected_and_duplicated(history: History) -> None:
    tags = acked(history, 2)
    stranger = job(9, "nobody-0000001")
    twin = job(3, tags[1])  # the same tag under a second id
    report = run(history, [job(1, tags[0]), job(2, tags[1]), stranger, twin])
    assert report.unexpected == [9] and report.duplicated == [tags[1]]


def test_maybe_submits_that_landed_are_recovered_not_unexpected(history: History) -> None:
    tags = acked(history, 1)
    maybe = history.tag()
    history.sent([maybe])
    assert history.failed([maybe], ServerUnavailable("lost the connection")) == "maybe"
    with history.log_path.open("a") as log:
        log.write(f"{maybe} 2 1 {PID} 1.0\n")
    report = run(history, [job(1, tags[0]), job(2, maybe)])
    assert report.valid and report.recovered == 1


def test_refused_submits_must_not_be_stored(history: History) -> None:
    tags = acked(history, 1)
    refused = [history.tag(), history.tag()]
    history.sent(refused)
    assert history.failed(refused[:1], StoreError("disk full: nothing was changed")) == "refused"
    assert history.failed(refused[1:], InvalidJob("bad spec")) == "refused"
    report = run(history, [job(1, tags[0]), job(2, refused[0])])
    assert report.refused_but_stored == [2] and not report.valid


@pytest.mark.parametrize(
    "result",
    [
        pytest.param({"token": 1, "pid": PID}, id="older-token"),
        pytest.param({"token": 2, "pid": PID + 1}, id="another-process"),
        pytest.param({"token": 2, "pid": PID, "tag": "other-0000001"}, id="another-job"),
    ],
)
def test_stale_results_are_caught(history: History, result: dict[str, Any]) -> None:
    tags = acked(history, 1)
    history.log_path.write_text(f"{tags[0]} 1 1 {PID} 1.0\n{tags[0]} 1 2 {PID} 2.0\n")
    result = {"tag": tags[0], **result}
    report = run(history, [job(1, tags[0], token=2, lost=1, result=result)])
    assert report.stale_accepted == [1] and not report.valid, report.summary()


def test_inconsistent_counts_and_phantom_results(history: History) -> None:
    tags = acked(history, 2)
    finished_after_loss = job(1, tags[0], lost=1)  # lost once, yet one claim only
    no_execution = job(2, tags[1], result={"tag": tags[1], "token": 1, "pid": PID + 7})
    history.worker("w1", PID + 7)
    report = run(history, [finished_after_loss, no_execution])
    assert report.inconsistent == [1, 2], report.summary()


def test_a_finish_applied_twice(history: History) -> None:
    tags = acked(history, 2)
    report = run(history, [job(1, tags[0]), job(2, tags[1])], succeeded_total=3)
    assert report.finished_twice == 1 and not report.valid


def test_one_id_answered_to_two_submits(history: History) -> None:
    a, b = history.tag(), history.tag()
    history.sent([a, b])
    history.ok([a], [1])
    history.ok([b], [1])
    history.log_path.write_text(f"{a} 1 1 {PID} 1.0\n")
    report = run(history, [job(1, a)])
    assert report.unexpected == [1] and not report.valid


def test_pending_jobs_are_stuck(history: History) -> None:
    tags = acked(history, 1)
    report = run(history, [job(1, tags[0], state="running", result=None)])
    assert report.stuck == [1] and report.lost == [1]
