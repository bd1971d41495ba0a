"""The sdist and the wheel as ``python -m build`` makes them (the sdist first, the
wheel from the sdist, as a user or PyPI would): the sdist holds the project and
nothing else of a working copy, the wheel holds the package's data files, the
metadata says what pyproject.toml says. And the shell completion click offers.

Needs the package ``build``: skipped, with the reason, without it, unless
DISTQUEUE_REQUIRE_BUILD=1 (as .ci/run sets), which makes that a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: what the sdist may hold at its top (hatch adds PKG-INFO and keeps .gitignore)
SDIST_TOP = {"distqueue", "docs", "tests", "benchmarks", "deploy", "README.md", "LICENSE",
             "pyproject.toml", "Makefile", "PKG-INFO", ".gitignore"}  # fmt: skip
#: never in an archive, at any depth
JUNK_PARTS = {".venv", "venv", "distqueue-data", "node_modules", "__pycache__", ".git",
              ".hypothesis", ".pytest_cache", ".mypy_cache", ".ruff_cache", "dist",
              "build"}  # fmt: skip
#: the package's files that are not Python, which the wheel must carry
DATA_SUFFIXES = {".sql", ".lua", ".html", ".css", ".js", ".svg", ".typed"}


def need_build() -> None:
    if importlib.util.find_spec("build") is None:
        message = "the package 'build' is not installed (pip install build): cannot build"
        if os.environ.get("DISTQUEUE_REQUIRE_BUILD") == "1":
            pytest.fail(message + " (DISTQUEUE_REQUIRE_BUILD=1)")
        pytest.skip(message)


def run_build(source: Path, out: Path, *what: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "build", *what, "--outdir", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def sdist_names(sdist: Path) -> list[str]:
    """The sdist's member files, without the distqueue-VERSION/ directory."""
    with tarfile.open(sdist) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    top = {n.split("/", 1)[0] for n in names}
    assert len(top) == 1 and top.pop().startswith("distqueue-"), names[:5]
    return [n.split("/", 1)[1] for n in names]


def assert_no_junk(names: list[str]) -> None:
    for name in names:
        parts = name.split("/")
        assert not JUNK_PARTS & set(parts[:-1]), f"{name} should not be in the archive"
        assert not name.endswith((".pyc", ".pyo")), name
        assert not name.endswith(".png") or name == "docs/dashboard.png", name
        assert name != "deploy/.env", "a deployment's token file went into the sdist"


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) of this working copy; the wheel built from the sdist."""
    need_build()
    out = tmp_path_factory.mktemp("dist")
    run_build(ROOT, out)
    (sdist,) = out.glob("distqueue-*.tar.gz")
    (wheel,) = out.glob("distqueue-*.whl")
    return sdist, wheel


def test_the_sdist_holds_the_project_and_nothing_else(archives: tuple[Path, Path]) -> None:
    sdist, _ = archives
    names = sdist_names(sdist)
    assert {n.split("/", 1)[0] for n in names} <= SDIST_TOP
    assert_no_junk(names)
    for needed in ("LICENSE", "README.md", "pyproject.toml", "Makefile", "PKG-INFO",
                   "distqueue/cli/__init__.py", "distqueue/store/sqlite_schema.sql",
                   "tests/conftest.py", "docs/dashboard.png", "deploy/compose.yaml",
                   "deploy/Dockerfile", "deploy/systemd/distqueue-worker@.service"):  # fmt: skip
        assert needed in names, f"{needed} is missing from the sdist"
    # every file git tracks in those directories (and still on disk) is there
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True,
                             text=True)  # fmt: skip
    if tracked.returncode == 0:
        missing = [
            f for f in tracked.stdout.splitlines()
            if f.split("/", 1)[0] in SDIST_TOP and (ROOT / f).is_file() and f not in names
            and not (f.endswith(".png") and f != "docs/dashboard.png")
        ]  # fmt: skip
        assert not missing, f"tracked files missing from the sdist: {missing}"


def test_the_sdist_leaves_out_what_lies_around_a_working_copy(
    archives: tuple[Path, Path], tmp_path: Path
) -> None:
    """The project unpacked from the sdist, with the junk of a working copy planted
    in it and no .gitignore (so pyproject.toml's rules alone decide): a new sdist of
    it holds none of the junk."""
    sdist, _ = archives
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (tree,) = tmp_path.glob("distqueue-*")
    (tree / ".gitignore").unlink()
    (tree / "PKG-INFO").unlink()  # a working copy, not an unpacked sdist
    junk = [".venv/lib/python3.11/site-packages/x.py", "distqueue-data/jobs.sqlite3",
            "tests/distqueue-data/jobs.sqlite3", "node_modules/x/index.js",
            "tests/protocol/node/node_modules/redis/index.js", "distqueue/__pycache__/x.pyc",
            "tests/.pytest_cache/v/x", ".hypothesis/examples/x", "shot.png",
            "docs/screenshot.png", "tests/web/failure.png", "deploy/.env", "notes/todo.txt",
            "dist/distqueue-0.0.1.tar.gz", ".mypy_cache/x.json"]  # fmt: skip
    for name in junk:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("junk\n")
    out = tmp_path / "out"
    run_build(tree, out, "--sdist")
    (again,) = out.glob("distqueue-*.tar.gz")
    names = sdist_names(again)
    assert_no_junk(names)
    assert not set(junk) & set(names)
    assert "docs/dashboard.png" in names and "distqueue/web/static/dashboard.js" in names


def test_the_wheel_holds_the_package_and_its_data_files(archives: tuple[Path, Path]) -> None:
    _, wheel = archives
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(z.read(f"{dist_info}/METADATA").decode())
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
    assert_no_junk(names)
    assert {n.split("/", 1)[0] for n in names} == {"distqueue", dist_info}
    # every data file of the package's source, by kind, and at least these
    source = ROOT / "distqueue"
    data = sorted(
        p.relative_to(ROOT).as_posix()
        for p in source.rglob("*")
        if p.is_file() and p.suffix in DATA_SUFFIXES and "__pycache__" not in p.parts
    )
    for needed in ("distqueue/store/sqlite_schema.sql", "distqueue/store/redis_scripts/claim.lua",
                   "distqueue/store/postgres_sql/0001_initial.sql",
                   "distqueue/store/redis_scripts/_lib.lua", "distqueue/web/templates/base.html",
                   "distqueue/web/static/dashboard.js", "distqueue/web/static/dashboard.css",
                   "distqueue/py.typed"):  # fmt: skip
        assert needed in data
    missing = [d for d in data if d not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert any(n.startswith("distqueue/web/templates/") for n in names)
    assert any(n.startswith("distqueue/web/static/") for n in names)
    assert f"{dist_info}/licenses/LICENSE" in names
    # the metadata
    assert metadata["Name"] == "distqueue"
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["License"] == "MIT"
    classifiers = metadata.get_all("Classifier") or []
    for wanted in ("License :: OSI Approved :: MIT License", "Framework :: AsyncIO",
                   "Typing :: Typed", "Topic :: System :: Distributed Computing",
                   "Programming Language :: Python :: 3.11"):  # fmt: skip
        assert wanted in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert any(c.startswith("Operating System ::") for c in classifiers)
    urls = {u.split(",")[0] for u in metadata.get_all("Project-URL") or []}
    assert {"Homepage", "Documentation", "Issues"} <= urls
    assert metadata["Keywords"]
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"all", "web", "redis", "fast", "postgres", "test"} <= extras
    requires = metadata.get_all("Requires-Dist") or []

    def of(extra: str) -> set[str]:
        return {r.split(";")[0].strip() for r in requires if f"extra == '{extra}'" in r
                or f'extra == "{extra}"' in r}  # fmt: skip

    # hatch spells distqueue[web,redis,fast,postgres] out: the four extras' requirements
    assert of("all") == of("web") | of("redis") | of("fast") | of("postgres") != set(), requires
    assert "distqueue = distqueue.cli:main" in entry_points


def test_the_all_extra_is_web_redis_fast_and_postgres() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (everything,) = extras["all"]
    assert everything.replace(" ", "") == "distqueue[web,redis,fast,postgres]"
    assert "build>=1.0" in extras["test"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "the distqueue authors" in (ROOT / "LICENSE").read_text()


def distqueue_script() -> str:
    """The console script ``distqueue`` of this Python (completion keys on its name)."""
    script = Path(sys.executable).parent / "distqueue"
    found = str(script) if script.exists() else shutil.which("distqueue")
    if found is None:
        pytest.fail("no distqueue console script beside this Python: pip install -e .")
    return found


def test_shell_completion_as_docs_deploy_md_says(tmp_path: Path) -> None:
    script = distqueue_script()
    env = {**os.environ, "_DISTQUEUE_COMPLETE": "bash_source"}
    out = subprocess.run([script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "complete -o nosort -F _distqueue_completion distqueue" in out.stdout
    # the script works in bash: sourced, then asked to complete "distqueue wor"
    if shutil.which("bash"):
        completion = tmp_path / "distqueue-complete.bash"
        completion.write_text(out.stdout)
        probe = (f'source {completion}; COMP_WORDS=(distqueue wor); COMP_CWORD=1; '
                 f'_distqueue_completion {script}; printf "%s\\n" "${{COMPREPLY[@]}}"')  # fmt: skip
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["worker", "workers"]
    for shell, marker in (("zsh_source", "#compdef distqueue"),
                          ("fish_source", "complete --no-files --command distqueue")):  # fmt: skip
        env = {**os.environ, "_DISTQUEUE_COMPLETE": shell}
        out = subprocess.run([script], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0 and marker in out.stdout, (shell, out.stdout[:300])
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert "_DISTQUEUE_COMPLETE=bash_source distqueue > ~/.distqueue-complete.bash" in docs
