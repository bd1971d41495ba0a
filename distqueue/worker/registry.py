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
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, overload

from distqueue.errors import InvalidJob
from distqueue.jobs import check_name
from distqueue.names import task_name

__all__ = [
    "PERIODIC",
    "REGISTRY",
    "FileResult",
    "JobContext",
    "PeriodicTask",
    "Task",
    "TaskImportError",
    "call_args",
    "current_job",
    "import_tasks",
    "periodic",
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
        implicit = getattr(f, "__distqueue_implicit__", None)
        if implicit is not None and implicit != type_name:
            # @periodic below this decorator registered it by its import path first:
            # the name given here is its one name, its schedules' job type too
            REGISTRY.pop(implicit, None)
            for key, p in list(PERIODIC.items()):
                if p.task == implicit:
                    renamed = dataclasses.replace(
                        p, task=type_name, name=type_name if p.name == implicit else p.name
                    )
                    del PERIODIC[key]
                    PERIODIC[renamed.name] = renamed
        REGISTRY[type_name] = Task(type_name, f)
        f.__distqueue_task__ = type_name  # type: ignore[attr-defined]
        f.__distqueue_implicit__ = None  # type: ignore[attr-defined]
        return f

    return register(fn) if fn is not None else register


@dataclass(frozen=True)
class PeriodicTask:
    """A task a schedule submits (``@distqueue.periodic``): every worker serving the
    task sets the schedule on the server when it connects; one with the same
    definition keeps its ticks, so many workers, or restarts, change nothing."""

    #: the schedule's name (the task's type unless given)
    name: str
    #: the task's type
    task: str
    cron: str | None
    every: float | None
    timezone: str
    catch_up: str
    #: the job's arguments and options (queue, priority, retries, timeout)
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]


#: every periodic task of this process, by schedule name
PERIODIC: dict[str, PeriodicTask] = {}


def periodic(
    cron: str | None = None,
    /,
    *,
    every: float | None = None,
    timezone: str = "UTC",
    catch_up: str = "once",
    name: str | None = None,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
) -> Callable[[F], F]:
    """Run a task on a schedule: ``@distqueue.periodic("*/5 * * * *")`` (a cron
    expression, 5 fields or 6 with seconds first, in ``timezone``) or
    ``@distqueue.periodic(every=30)``; the function is registered as a task too
    (put it above or below ``@distqueue.task``). ``catch_up``: a tick missed while
    nothing ran is submitted once on recovery ("once") or skipped ("skip")."""
    if (cron is None) == (every is None):
        raise ValueError("give a cron expression or every=seconds, one of them")

    def register(f: F) -> F:
        type_name = getattr(f, "__distqueue_task__", None)
        if type_name is None:  # not a task yet: one by its import path (a @task above
            type_name = task(f).__distqueue_task__  # type: ignore[attr-defined]
            f.__distqueue_implicit__ = type_name  # type: ignore[attr-defined]  # renames it)
        schedule = check_name("schedule name", name or type_name)
        options = {k: v for k, v in (("queue", queue), ("priority", priority),
                   ("retries", retries), ("timeout", timeout)) if v is not None}  # fmt: skip
        PERIODIC[schedule] = PeriodicTask(
            schedule, type_name, cron, every, timezone, catch_up, tuple(args), dict(kwargs or {}),
            options,
        )  # fmt: skip
        return f

    return register


class TaskImportError(ImportError):
    """``--tasks`` names nothing a worker can serve: a module that does not import, or
    one that registers no task (the CLI prints the message as its one line, exit 2)."""


def import_tasks(modules: list[str]) -> dict[str, Task]:
    """Import the modules and return the tasks they registered. Each may be a module
    (``myapp.tasks``), a package (``myapp``: its own tasks, else those of its ``tasks``
    submodule) or a file or package directory (``myapp/tasks.py``, imported under the
    module name its place on the import path gives it, so its types are the same).
    The current directory is on the import path, as for ``python -m``.

    Raises TaskImportError, with the import's own error, or when one of them
    registers no ``@distqueue.task``."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    tasks: dict[str, Task] = {}
    for spec in modules:
        tasks.update(_import_one(spec))
    return tasks


def _import_one(spec: str) -> dict[str, Task]:
    name = _module_of_path(spec) if spec.endswith(".py") or os.sep in spec else spec
    before = set(REGISTRY)
    module = _import(spec, name)
    found = _registered(name, before)
    if not found and hasattr(module, "__path__"):  # a package: look in its tasks module
        sub = f"{name}.tasks"
        try:
            has_tasks = importlib.util.find_spec(sub) is not None
        except (ImportError, ValueError):
            has_tasks = False
        if has_tasks:
            _import(spec, sub)
            found = _registered(name, before)
    if not found:
        example = f"{name}.tasks" if hasattr(module, "__path__") else "myapp.tasks"
        raise TaskImportError(
            f"{spec} registers no @distqueue.task: point --tasks at the module that"
            f" defines them, e.g. {example}"
        )
    return found


def _registered(name: str, before: set[str]) -> dict[str, Task]:
    """The tasks the import registered, and those already registered in the module
    or under it (a module imported before)."""
    return {
        n: t
        for n, t in REGISTRY.items()
        if n not in before or t.fn.__module__ == name or t.fn.__module__.startswith(name + ".")
    }


def _import(spec: str, name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # its own error, in one line: it is the user's code
        what = spec if spec == name else f"{spec} (as {name})"
        raise TaskImportError(
            f"--tasks {what} does not import: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc


def _where(exc: BaseException) -> str:
    """`` (at FILE:LINE)``: the innermost line of the user's code that raised ``exc``."""
    if isinstance(exc, SyntaxError):
        return ""  # its message says where
    skip = (os.path.dirname(importlib.__file__ or ""), __file__)
    tb, where = exc.__traceback__, ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith("<") and not filename.startswith(skip):
            where = f" (at {os.path.relpath(filename)}:{tb.tb_lineno})"
        tb = tb.tb_next
    return where


def _module_of_path(spec: str) -> str:
    """The module name a file (``myapp/tasks.py``) or package directory has: in a
    package (``__init__.py`` files), relative to the directory above its topmost
    package, which joins the import path; else relative to the deepest entry of the
    import path that holds it (the current directory: namespace packages), else its
    own name, its directory joining the import path."""
    path = Path(spec).absolute()
    if path.is_dir():
        if not (path / "__init__.py").is_file() and not any(path.glob("*.py")):
            raise TaskImportError(f"--tasks {spec}: a directory without Python modules")
    elif not path.is_file():
        raise TaskImportError(f"--tasks {spec}: no such file")
    elif path.suffix != ".py":
        raise TaskImportError(f"--tasks {spec}: not a Python file (.py) or package directory")
    stem = path if path.is_dir() else path.with_suffix("")
    if stem.name == "__init__":
        stem = stem.parent
    root = stem.parent
    in_package = (root / "__init__.py").is_file() or (stem / "__init__.py").is_file()
    while (root / "__init__.py").is_file():
        root = root.parent
    if not in_package:  # a module or a namespace package
        entries = [Path(p or os.getcwd()).absolute() for p in sys.path if isinstance(p, str)]
        for entry in sorted(entries, key=lambda e: len(e.parts), reverse=True):
            if stem.is_relative_to(entry) and stem != entry:
                parts = stem.relative_to(entry).parts
                if all(part.isidentifier() for part in parts):
                    return ".".join(parts)
    parts = stem.relative_to(root).parts
    if not all(part.isidentifier() for part in parts):
        raise TaskImportError(
            f"--tasks {spec}: {'.'.join(parts)!r} is not a module name (letters, digits and _)"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return ".".join(parts)


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
    shape = _shape(fn)
    if shape is not None and _fits(shape, pos, kw):
        return pos, kw
    try:
        inspect.signature(fn).bind(*pos, **kw)
    except TypeError as exc:
        raise InvalidJob(f"arguments do not fit {task_name(fn)}: {exc}") from None
    return pos, kw


class _Shape(NamedTuple):
    """A plain signature (parameters by position or keyword, no *args, **kwargs or
    keyword-only ones), checked without ``inspect`` on every job."""

    names: tuple[str, ...]
    #: how many of the first parameters have no default
    required: int


@functools.lru_cache(maxsize=4096)
def _shape(fn: Callable[..., Any]) -> _Shape | None:
    """``fn``'s shape, once per function (None: not plain, bind() decides each time)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD,)
    if any(p.kind not in plain for p in params):
        return None
    required = 0
    for p in params:
        if p.default is not inspect.Parameter.empty:
            break
        required += 1
    if any(p.default is inspect.Parameter.empty for p in params[required:]):
        return None
    return _Shape(tuple(p.name for p in params), required)


def _fits(shape: _Shape, pos: tuple[Any, ...], kw: dict[str, Any]) -> bool:
    """Whether bind() would take these (False: let it say why, or that they do)."""
    n = len(pos)
    if n > len(shape.names):
        return False
    if not kw:
        return n >= shape.required
    names = shape.names
    if any(name not in names[n:] for name in kw):
        return False
    return all(name in kw for name in names[n : shape.required])


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
