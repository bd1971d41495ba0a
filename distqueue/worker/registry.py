"""Tasks: Python functions workers run, registered with ``@distqueue.task``.

    # myapp/tasks.py
    import distqueue

    @distqueue.task
    def add(a, b):
        return a + b

    @distqueue.task(name="resize")
    async def resize(path, width=100):
        distqueue.current_job().progress(50, "halfway")
        ...

A task's type name is its import path (``myapp.tasks.add``) unless the decorator
names it. A worker started with ``--tasks myapp.tasks`` imports the module and
serves every task registered in it.

Arguments travel as JSON: a job's ``args`` list is passed positionally, an object
by keyword, and an object of exactly ``{"args": [...], "kwargs": {...}}`` both
ways (what ``Client.submit(add, 2, b=3)`` sends). Arguments that do not fit the
function's signature fail the job at once, for good (retrying cannot help).
"""

from __future__ import annotations

import contextvars
import importlib
import inspect
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from distqueue.errors import InvalidJob
from distqueue.jobs import check_name
from distqueue.names import task_name

__all__ = [
    "REGISTRY",
    "FileResult",
    "JobContext",
    "Task",
    "call_args",
    "current_job",
    "import_tasks",
    "task",
    "task_name",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Task:
    #: the job type it serves
    name: str
    #: the function
    fn: Callable[..., Any]

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


#: every task registered in this process, by name
REGISTRY: dict[str, Task] = {}


@overload
def task(fn: F, /) -> F: ...
@overload
def task(*, name: str | None = None) -> Callable[[F], F]: ...
def task(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Register a function (sync or async) as a task; it stays callable as before."""

    def register(f: F) -> F:
        type_name = check_name("task name", name or f"{f.__module__}.{f.__qualname__}")
        known = REGISTRY.get(type_name)
        if known is not None and known.fn is not f:
            raise ValueError(f"two tasks named {type_name!r}: {known.fn} and {f}")
        REGISTRY[type_name] = Task(type_name, f)
        f.__distqueue_task__ = type_name  # type: ignore[attr-defined]
        return f

    return register(fn) if fn is not None else register


def import_tasks(modules: list[str]) -> dict[str, Task]:
    """Import the modules (``myapp.tasks``) and return the tasks they registered.
    The current directory is on the import path, as for ``python -m``."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        importlib.import_module(module)
    return {n: t for n, t in REGISTRY.items() if t.fn.__module__ in modules}


def call_args(fn: Callable[..., Any], args: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments a job's JSON args stand for, checked
    against the function's signature (InvalidJob if they do not fit)."""
    if args is None:
        pos: tuple[Any, ...] = ()
        kw: dict[str, Any] = {}
    elif isinstance(args, list):
        pos, kw = tuple(args), {}
    elif isinstance(args, dict) and args and set(args) <= {"args", "kwargs"}:
        inner_pos, inner_kw = args.get("args", []), args.get("kwargs", {})
        if not isinstance(inner_pos, list) or not isinstance(inner_kw, dict):
            raise InvalidJob('{"args": ..., "kwargs": ...} needs a list and an object')
        pos, kw = tuple(inner_pos), dict(inner_kw)
    elif isinstance(args, dict):
        pos, kw = (), dict(args)
    else:
        pos, kw = (args,), {}
    try:
        inspect.signature(fn).bind(*pos, **kw)
    except TypeError as exc:
        raise InvalidJob(f"arguments do not fit {task_name(fn)}: {exc}") from None
    return pos, kw


@dataclass(frozen=True)
class FileResult:
    """Return this from a task to send a file back as the job's (bytes) result."""

    path: Path | str
    #: delete the file once it has been read
    delete: bool = False


@dataclass(eq=False)
class JobContext:
    """What a running task can learn and say about its job: ``current_job()``."""

    #: the job's id
    id: int
    #: which attempt this is (1 = the first)
    attempts: int
    #: the job type
    type: str
    #: the payload bytes travelling with the job, or None
    payload: bytes | None
    #: called with (percent, message) to report progress
    report: Callable[[float, str], None] = field(repr=False, default=lambda p, m: None)
    #: this claim's fencing token (different for every attempt, never reused)
    token: int = 0
    _files: list[Path] = field(default_factory=list, repr=False)

    def progress(self, percent: float, message: str = "") -> None:
        """Report progress (0-100) and a message; ``distqueue status`` shows it."""
        self.report(max(0.0, min(100.0, float(percent))), str(message))

    def payload_file(self) -> Path:
        """The payload written to a temporary file (deleted when the job ends)."""
        fd, name = tempfile.mkstemp(prefix=f"distqueue-{self.id}-")
        with os.fdopen(fd, "wb") as f:
            f.write(self.payload or b"")
        path = Path(name)
        self._files.append(path)
        return path

    def cleanup(self) -> None:
        for path in self._files:
            path.unlink(missing_ok=True)
        self._files.clear()


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("distqueue_job")


def current_job() -> JobContext:
    """The job the calling task is running (LookupError outside a task)."""
    return _current.get()


def run_with_context(ctx: JobContext, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    """Call ``fn`` with ``current_job()`` returning ``ctx`` (for threads and children)."""
    token = _current.set(ctx)
    try:
        return fn(*a, **kw)
    finally:
        _current.reset(token)


def set_context(ctx: JobContext) -> contextvars.Token[JobContext]:
    return _current.set(ctx)


def reset_context(token: contextvars.Token[JobContext]) -> None:
    _current.reset(token)
