"""JSON for job arguments, results, errors and progress: data, never code (no pickle)."""

from __future__ import annotations

from typing import Any

import orjson

from distqueue.errors import InvalidJob

__all__ = ["dumps", "loads"]


def dumps(value: Any, what: str = "value") -> bytes:
    """Encode a JSON value; raise InvalidJob naming ``what`` if it is not JSON-able."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidJob(f"{what} is not JSON-serializable: {exc}") from None


def loads(data: bytes | str, what: str = "value") -> Any:
    """Decode JSON; raise InvalidJob naming ``what`` if it is not valid JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidJob(f"{what} is not valid JSON: {exc}") from None
