"""The built-in text job types. Each takes the job's args: a string, or a list of
strings joined by spaces (so ``submit wordcount hello world`` works either way)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from distqueue.errors import InvalidJob
from distqueue.names import BUILTIN_TEXT, BUILTIN_TYPES, FILE_BUILTINS, SHELL, SLEEP

__all__ = ["ALL_BUILTINS", "BUILTINS", "FILE_BUILTINS", "SHELL", "SLEEP", "text_of"]


def text_of(args: Any) -> str:
    """The text a built-in job works on; raise InvalidJob (permanent) for other shapes."""
    if isinstance(args, str):
        return args
    if isinstance(args, list) and all(isinstance(a, str) for a in args):
        return " ".join(args)
    raise InvalidJob(f"expected text or a list of strings, not {type(args).__name__}")


def echo(args: Any) -> str:
    """The text itself."""
    return text_of(args)


def wordcount(args: Any) -> int:
    """The number of words (runs of non-space characters)."""
    return len(text_of(args).split())


def charcount(args: Any) -> int:
    """The number of non-space characters."""
    return sum(1 for ch in text_of(args) if not ch.isspace())


def capitalize(args: Any) -> str:
    """The text in upper case."""
    return text_of(args).upper()


def noop(args: Any) -> None:
    """Nothing: the job benchmarks measure the queue with."""
    return None


#: a plain decimal number (no nan, inf, exponent or underscores)
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def sleep_seconds(args: Any) -> float:
    """The seconds a ``sleep`` job waits: a number, a string of one (``"5"``, ``"0.5"``:
    what ``distqueue submit sleep 5`` sends), or a list holding either; 0-86400."""
    value = args[0] if isinstance(args, list) and len(args) == 1 else args
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        raise InvalidJob(f"sleep takes a number of seconds (0-86400), not {args!r}")
    return float(value)


BUILTINS: dict[str, Callable[[Any], Any]] = {
    "echo": echo,
    "wordcount": wordcount,
    "charcount": charcount,
    "capitalize": capitalize,
    "noop": noop,
}

assert frozenset(BUILTINS) == BUILTIN_TEXT, "distqueue.names lists the text built-ins"
#: every type a standard worker serves without --tasks (shell is separate)
ALL_BUILTINS = BUILTIN_TYPES
