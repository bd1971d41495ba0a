"""Limits as people write them (distqueue/limits.py): rates, --limit text."""

from __future__ import annotations

import pytest

from distqueue.errors import InvalidJob
from distqueue.limits import format_rate, limit_from_text, limit_to_wire, merge_limit, parse_rate
from distqueue.store.base import Limit


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100/m", (100, 60.0)), ("5/s", (5, 1.0)), ("5/S", (5, 1.0)), ("1000/h", (1000, 3600.0)),
     ("2/d", (2, 86400.0)), ("10/30s", (10, 30.0)), ("3/1.5", (3, 1.5)), (" 7 / min ", (7, 60.0))],
)  # fmt: skip
def test_rates(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected
    assert parse_rate(format_rate(*expected)) == expected


@pytest.mark.parametrize("text", ["", "100", "x/m", "5/y", "0/s", "-1/s", "5/0s", "1/2/3"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(InvalidJob):
        parse_rate(text)


def test_limit_text_takes_names_with_colons() -> None:
    assert limit_from_text("type:myapp.tasks:resize:concurrency=5,rate=100/m") == Limit(
        scope="type", name="myapp.tasks:resize", concurrency=5, rate=100, period=60.0
    )
    assert limit_to_wire(limit_from_text("queue:*:max_depth=10")) == {
        "scope": "queue", "name": "*", "max_depth": 10}  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["type", "type:a", "tube:a:concurrency=1", "type::concurrency=1", "type:a:concurrency",
     "type:a:speed=3", "type:a:max_depth=3", "queue:*:rate=1/s", "type:a:concurrency=0"],
)  # fmt: skip
def test_bad_limit_text(text: str) -> None:
    with pytest.raises(InvalidJob):
        limit_from_text(text)


def test_merge_keeps_what_is_not_given_and_none_removes() -> None:
    old = Limit(scope="type", name="t", concurrency=5, rate=100, period=60.0, burst=3)
    assert merge_limit(old, "type", "t", {"rate": "10/s"}) == Limit(
        scope="type", name="t", concurrency=5, rate=10, period=1.0, burst=3)  # fmt: skip
    assert merge_limit(old, "type", "t", {"concurrency": "none", "rate": None}) == Limit(
        scope="type", name="t", burst=3)  # fmt: skip
