from __future__ import annotations

import re
from pathlib import Path

import pytest

from distqueue.errors import IllegalTransition
from distqueue.jobs import TERMINAL_STATES, JobState
from distqueue.lifecycle import TRANSITIONS, check_transition

DOC = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"


def _doc_edges() -> dict[tuple[JobState | None, JobState], str]:
    # Given the transitions table of docs/lifecycle.md
    text = DOC.read_text()
    section = text.split("## Transitions", 1)[1].split("\n## ", 1)[0]
    edges: dict[tuple[JobState | None, JobState], str] = {}
    for line in section.splitlines():
        m = re.match(r"^\|\s*([a-z]*)\s*\|\s*([a-z]+)\s*\|\s*(.+?)\s*\|$", line)
        if m and m.group(2) != "to":
            old = JobState(m.group(1)) if m.group(1) else None
            edges[(old, JobState(m.group(2)))] = m.group(3)
    return edges


def test_doc_and_code_have_the_same_edges() -> None:
    # Then the doc's table and lifecycle.TRANSITIONS are the same graph, same words
    assert _doc_edges() == TRANSITIONS


def test_doc_lists_every_state() -> None:
    text = DOC.read_text()
    for state in JobState:
        assert f"`{state.value}`" in text


@pytest.mark.parametrize("old", [None, *JobState])
@pytest.mark.parametrize("new", list(JobState))
def test_check_transition_allows_exactly_the_table(old: JobState | None, new: JobState) -> None:
    if (old, new) in TRANSITIONS:
        check_transition(1, old, new)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(1, old, new)


def test_terminal_states_only_leave_by_retry() -> None:
    for (old, _new), event in TRANSITIONS.items():
        if old in TERMINAL_STATES:
            assert event == "retry"
    assert (JobState.SUCCEEDED, JobState.QUEUED) not in TRANSITIONS
