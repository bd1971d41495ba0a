"""import_tasks: the forms --tasks takes, and what it says when they serve nothing;
the sleep built-in's seconds."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distqueue.errors import InvalidJob
from distqueue.worker.builtins import sleep_seconds
from distqueue.worker.registry import REGISTRY, TaskImportError, import_tasks

TASK = "import distqueue\n\n\n@distqueue.task\ndef {name}(x):\n    return x\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory, the current one, whose imports and tasks are forgotten after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules, registry = set(sys.modules), dict(REGISTRY)
    yield tmp_path
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    REGISTRY.clear()
    REGISTRY.update(registry)


def package(root: Path, name: str, files: dict[str, str]) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(files.pop("__init__", ""))
    for module, text in files.items():
        (root / name / f"{module}.py").write_text(text)


def test_a_module_a_package_and_a_file_serve_the_same_types(project: Path) -> None:
    package(project, "rega", {"tasks": TASK.format(name="one")})
    assert list(import_tasks(["rega.tasks"])) == ["rega.tasks.one"]
    assert list(import_tasks(["rega"])) == ["rega.tasks.one"]  # its tasks module
    assert list(import_tasks(["rega/tasks.py"])) == ["rega.tasks.one"]
    assert list(import_tasks([str(project / "rega")])) == ["rega.tasks.one"]


def test_a_file_outside_the_import_path_joins_it_under_its_package_name(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    package(elsewhere / "src", "regb", {"jobs": TASK.format(name="two")})
    assert list(import_tasks([str(elsewhere / "src" / "regb" / "jobs.py")])) == ["regb.jobs.two"]
    assert str(elsewhere / "src") in sys.path


def test_a_namespace_package_under_the_current_directory(project: Path) -> None:
    (project / "regc").mkdir()
    (project / "regc" / "tasks.py").write_text(TASK.format(name="three"))
    assert list(import_tasks(["regc/tasks.py"])) == ["regc.tasks.three"]


def test_a_package_that_registers_nothing_is_one_clear_error(project: Path) -> None:
    package(project, "regd", {"util": "X = 1\n"})
    with pytest.raises(TaskImportError) as err:
        import_tasks(["regd"])
    assert str(err.value) == (
        "regd registers no @distqueue.task: point --tasks at the module that defines them,"
        " e.g. regd.tasks"
    )


def test_an_import_error_is_its_own_message(project: Path) -> None:
    (project / "rege.py").write_text("import distqueue\nraise RuntimeError('no config')\n")
    with pytest.raises(TaskImportError) as err:
        import_tasks(["rege"])
    assert str(err.value) == (
        "--tasks rege does not import: RuntimeError: no config (at rege.py:2)"
    )
    with pytest.raises(TaskImportError, match=r"^--tasks regf\.py: no such file$"):
        import_tasks(["regf.py"])
    (project / "my-tasks.py").write_text(TASK.format(name="four"))
    with pytest.raises(TaskImportError, match=r"'my-tasks' is not a module name"):
        import_tasks(["my-tasks.py"])


@pytest.mark.parametrize(
    ("args", "seconds"),
    [(5, 5.0), (0.5, 0.5), ("5", 5.0), ("0.5", 0.5), (" 2 ", 2.0), (["3"], 3.0), (".5", 0.5)],
)
def test_sleep_takes_a_number_or_a_numeric_string(args: object, seconds: float) -> None:
    assert sleep_seconds(args) == seconds


@pytest.mark.parametrize(
    "args", ["soon", "", "nan", "inf", "1e3", "-1", "86401", "1_0", "5 6", True, None, ["1", "2"]]
)
def test_sleep_refuses_anything_else(args: object) -> None:
    with pytest.raises(InvalidJob, match=r"^sleep takes a number of seconds \(0-86400\)"):
        sleep_seconds(args)


def test_call_args_decides_as_inspect_bind_does() -> None:
    """The per-function shape cache (no inspect per job) accepts and refuses exactly
    what Signature.bind does, over signatures and argument shapes of every kind."""
    import inspect
    import itertools

    from distqueue.errors import InvalidJob
    from distqueue.worker.registry import call_args

    def f0() -> None: ...
    def f1(a): ...  # type: ignore[no-untyped-def]
    def f2(a, b=1): ...  # type: ignore[no-untyped-def]
    def f3(a, b, c=1, d=2): ...  # type: ignore[no-untyped-def]
    def f4(a, *rest): ...  # type: ignore[no-untyped-def]
    def f5(a, *, k): ...  # type: ignore[no-untyped-def]
    def f6(a, /, b): ...  # type: ignore[no-untyped-def]
    def f7(**kw): ...  # type: ignore[no-untyped-def]

    argses = [None, [], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4, 5], 7, "x",
              {"a": 1}, {"b": 1}, {"a": 1, "b": 2}, {"a": 1, "k": 2}, {"a": 1, "z": 2},
              {"args": [1], "kwargs": {"b": 2}}, {"args": [1], "kwargs": {"a": 2}},
              {"args": [], "kwargs": {"a": 1, "c": 3}}]  # fmt: skip
    checked = 0
    for fn, args in itertools.product([f0, f1, f2, f3, f4, f5, f6, f7], argses):
        try:
            call_args(fn, args)
            ours = True
        except InvalidJob:
            ours = False
        try:
            if args is None:
                inspect.signature(fn).bind()
            elif isinstance(args, list):
                inspect.signature(fn).bind(*args)
            elif isinstance(args, dict) and set(args) <= {"args", "kwargs"}:
                inspect.signature(fn).bind(*args["args"], **args["kwargs"])
            elif isinstance(args, dict):
                inspect.signature(fn).bind(**args)
            else:
                inspect.signature(fn).bind(args)
            theirs = True
        except TypeError:
            theirs = False
        assert ours == theirs, (fn.__name__, args)
        checked += 1
    assert checked == 8 * 16
