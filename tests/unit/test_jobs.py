from __future__ import annotations

import math
import types

import pytest

import distqueue
from distqueue.errors import InvalidJob
from distqueue.jobs import JobSpec, parse_priority


@pytest.mark.parametrize(
    ("given", "expected"),
    [("high", 0), ("normal", 5), ("low", 10), ("HIGH", 0), (" low ", 10), ("0", 0), ("7", 7),
     (0, 0), (10, 10), ("4294967295", 2**32 - 1), (1024, 1024)],
)  # fmt: skip
def test_parse_priority(given: int | str, expected: int) -> None:
    assert parse_priority(given) == expected


@pytest.mark.parametrize("bad", ["urgent", "4294967296", "-1", 2**32, -1, True, 2.5, "", "1e3"])
def test_parse_priority_refuses(bad: object) -> None:
    with pytest.raises(InvalidJob):
        parse_priority(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        JobSpec(type=""),
        JobSpec(type="has space"),
        JobSpec(type="x" * 201),
        JobSpec(type="ok", queue=""),
        JobSpec(type="ok", queue="a\nb"),
        JobSpec(type="ok", priority=2**32),
        JobSpec(type="ok", priority=-1),
        JobSpec(type="ok", priority=True),
        JobSpec(type="ok", max_retries=-1),
        JobSpec(type="ok", max_retries=1001),
        JobSpec(type="ok", timeout=0),
        JobSpec(type="ok", timeout=math.inf),
        JobSpec(type="ok", deadline=math.nan),
        JobSpec(type="ok", run_at="soon"),  # type: ignore[arg-type]
        JobSpec(type="ok", unique_key=""),
        JobSpec(type="ok", payload="text"),  # type: ignore[arg-type]
    ],
)
def test_spec_validation_refuses(spec: JobSpec) -> None:
    with pytest.raises(InvalidJob):
        spec.validate()


def test_valid_spec_passes() -> None:
    JobSpec(
        type="myapp.tasks.resize", args={"w": 200}, payload=b"\x00", queue="images",
        priority=0, max_retries=0, timeout=1.5, deadline=10, run_at=5, unique_key="k",
    ).validate()  # fmt: skip


def test_public_api_is_exactly_all() -> None:
    # every public, non-module name of the package is in __all__, and nothing else
    public = {
        name
        for name, value in vars(distqueue).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(distqueue.__all__) - {"__version__"}
