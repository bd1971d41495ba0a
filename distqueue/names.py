"""Names both sides of the queue agree on, importable by either without the other:
the job type of a Python task, and the built-in types every standard worker serves.
(The client and the service never import the worker, nor the worker the service.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["BUILTIN_TEXT", "BUILTIN_TYPES", "FILE_BUILTINS", "SHELL", "SLEEP", "task_name"]

#: built-in types that work on the job's args as text
BUILTIN_TEXT = frozenset({"echo", "wordcount", "charcount", "capitalize", "noop"})
#: built-in types that work on the job's payload bytes and return bytes
FILE_BUILTINS = frozenset({"gzip", "gunzip"})
#: the built-in that waits (asynchronously) for its args seconds
SLEEP = "sleep"
#: the built-in type that runs a shell command (served only with --allow-shell)
SHELL = "shell"
#: every type a standard worker serves without --tasks (shell is separate)
BUILTIN_TYPES = BUILTIN_TEXT | FILE_BUILTINS | {SLEEP}


def task_name(fn: Callable[..., Any]) -> str:
    """The job type of a function: its decorator's name, else its import path."""
    name = getattr(fn, "__distqueue_task__", None)
    if isinstance(name, str):
        return name
    return f"{fn.__module__}.{fn.__qualname__}"
