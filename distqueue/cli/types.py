"""Option types for settings people write by hand (flags, env vars, distqueue.toml):
durations (``30``, ``500ms``, ``30s``, ``5m``, ``2h``, ``7d``) and sizes (``1048576``,
``512KiB``, ``64MiB``, ``1GiB``, ``10MB``)."""

from __future__ import annotations

import math
import re
from typing import Any

import click

__all__ = ["DURATION", "SIZE", "Duration", "Size"]

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)?\s*", re.I)
_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_SIZE = re.compile(r"\s*([0-9]+)\s*(b|kb|mb|gb|kib|mib|gib)?\s*", re.I)
_BYTES = {None: 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024,
          "mib": 1024**2, "gib": 1024**3}  # fmt: skip


class Duration(click.ParamType):  # type: ignore[type-arg]  # (generic since click 8.2)
    """Seconds, as a float: a number, or a number with ms, s, m, h or d."""

    name = "duration"

    def __init__(self, min: float = 0.0) -> None:
        self.min = min

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, bool):
            self.fail(f"{value!r} is not a duration", param, ctx)
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            m = _DURATION.fullmatch(str(value))
            if m is None:
                self.fail(f"{value!r} is not a duration (e.g. 30, 30s, 5m, 2h, 7d)", param, ctx)
            unit = m.group(2).lower() if m.group(2) else None
            seconds = float(m.group(1)) * _SECONDS[unit]
        if not math.isfinite(seconds) or seconds < self.min:
            self.fail(f"{value!r} is below {self.min:g} seconds", param, ctx)
        return seconds


class Size(click.ParamType):  # type: ignore[type-arg]
    """Bytes, as an int: a number, or a number with KiB, MiB, GiB (or kB, MB, GB)."""

    name = "size"

    def __init__(self, min: int = 0) -> None:
        self.min = min

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, bool):
            self.fail(f"{value!r} is not a size", param, ctx)
        if isinstance(value, int):
            size = value
        else:
            m = _SIZE.fullmatch(str(value))
            if m is None:
                self.fail(f"{value!r} is not a size (e.g. 1048576, 512KiB, 64MiB)", param, ctx)
            unit = m.group(2).lower() if m.group(2) else None
            size = int(m.group(1)) * _BYTES[unit]
        if size < self.min:
            self.fail(f"{value!r} is below {self.min} bytes", param, ctx)
        return size


DURATION = Duration()
SIZE = Size()
