"""Limits as people write them: ``100/m``, ``type:email.send:concurrency=5,rate=100/m``.

The store keeps limits as ``Limit`` records (distqueue/store/base.py); this module
turns the text of the CLI, the config file and the protocol into them and back.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from distqueue.errors import InvalidJob
from distqueue.store.base import Limit

__all__ = [
    "LIMIT_FIELDS", "format_rate", "limit_from_text", "limit_to_wire", "merge_limit",
    "parse_rate",
]  # fmt: skip

#: the fields a limit sets, as the CLI, config and protocol name them
LIMIT_FIELDS = ("concurrency", "rate", "burst", "max_depth")
_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_rate(text: str) -> tuple[int, float]:
    """``100/m`` -> (100, 60.0); also ``5/s``, ``1000/h``, ``10/30s``, ``2/1.5``."""
    m = _RATE.match(text.lower())
    if m is None or (not m.group(2) and not m.group(3)):
        raise InvalidJob(f"a rate is N/PERIOD such as 100/m, 5/s or 10/30s, not {text!r}")
    count, number, unit = int(m.group(1)), m.group(2), m.group(3) or "s"
    if unit not in _UNITS:
        raise InvalidJob(f"a rate's unit is s, m, h or d, not {unit!r} (in {text!r})")
    period = (float(number) if number else 1.0) * _UNITS[unit]
    if count < 1 or period <= 0:
        raise InvalidJob(f"a rate needs at least 1 start per a period > 0, not {text!r}")
    return count, period


def format_rate(rate: int, period: float) -> str:
    for unit, seconds in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if period == seconds:
            return f"{rate}/{unit}"
    return f"{rate}/{period:g}s"


def limit_to_wire(limit: Limit) -> dict[str, Any]:
    out: dict[str, Any] = {"scope": limit.scope, "name": limit.name}
    if limit.concurrency is not None:
        out["concurrency"] = limit.concurrency
    if limit.rate is not None:
        out["rate"] = format_rate(limit.rate, limit.period)
        out["burst"] = limit.burst
    if limit.max_depth is not None:
        out["max_depth"] = limit.max_depth
    return out


def _count(name: str, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidJob(
            f"{name} must be a whole number 1 or more (or none), not {value!r}"
        ) from None
    if number < 1:
        raise InvalidJob(f"{name} must be 1 or more (or none to remove it), not {number}")
    return number


def merge_limit(old: Limit | None, scope: str, name: str, changes: dict[str, Any]) -> Limit:
    """The limit ``old`` (or none) with ``changes`` applied: each of LIMIT_FIELDS
    given is set, ``None``/``"none"`` removing it; ``rate`` as text (``100/m``)."""
    unknown = set(changes) - set(LIMIT_FIELDS)
    if unknown:
        fields = ", ".join(LIMIT_FIELDS)
        raise InvalidJob(f"a limit has no {sorted(unknown)[0]!r}: it sets {fields}")
    limit = old if old is not None else Limit(scope=scope, name=name)
    if "concurrency" in changes:
        limit = replace(limit, concurrency=_count("concurrency", changes["concurrency"]))
    if "max_depth" in changes:
        limit = replace(limit, max_depth=_count("max_depth", changes["max_depth"]))
    if "burst" in changes:
        limit = replace(limit, burst=_count("burst", changes["burst"]) or 1)
    if "rate" in changes:
        rate = changes["rate"]
        if rate is None or (isinstance(rate, str) and rate.lower() in ("none", "")):
            limit = replace(limit, rate=None, period=1.0)
        else:
            count, period = parse_rate(str(rate))
            limit = replace(limit, rate=count, period=period)
    return limit


def limit_from_text(text: str) -> Limit:
    """``SCOPE:NAME:field=value,...`` (the server's ``--limit``), e.g.
    ``type:email.send:concurrency=5,rate=100/m`` or ``queue:bulk:max_depth=100000``;
    ``queue:*:max_depth=N`` bounds every queue together."""
    scope, _, rest = text.partition(":")
    name, _, body = rest.rpartition(":")  # (a type's name may hold a ':' itself)
    if scope not in ("type", "queue") or not name:
        raise InvalidJob(
            f"a limit is type:NAME:field=value,... or queue:NAME:field=value,..., not {text!r}"
        )
    changes: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidJob(f"{item!r} in limit {text!r}: write field=value")
        changes[key.strip().replace("-", "_")] = value.strip()
    if not changes:
        raise InvalidJob(f"limit {text!r} sets nothing: {', '.join(LIMIT_FIELDS)}")
    limit = merge_limit(None, scope, name, changes)
    from distqueue.store.checks import check_limit

    return check_limit(limit)
