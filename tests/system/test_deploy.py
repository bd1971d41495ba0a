"""deploy/: the compose file, the Dockerfile and the systemd units, checked by
running what they run.

No container engine is needed: the commands of deploy/compose.yaml's services
(read from the file, with their environment) run here as plain processes — a real
redis-server started as the compose file starts it, the server, as many workers as
it asks for — with the service names turned into 127.0.0.1 and the ports into free
ones; a job submitted from "the host" must succeed, the healthchecks must pass.
The Dockerfile's command and health check run the same way; the systemd units'
ExecStart lines run with the real CLI, and `systemd-analyze verify` checks the
units where it exists.

With DISTQUEUE_CONTAINERS=1 (and podman, podman-compose and, to make a base image
without a registry, debootstrap), test_compose_in_podman builds the image from the
Dockerfile offline and runs compose.yaml itself; see its docstring and
docs/deploy.md.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.procs import CLI, Proc, cli, wait_until
from tests.redis_server import free_port, redis_command, start_redis

yaml = pytest.importorskip("yaml", reason="PyYAML is missing: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
INSTALLED = "/opt/distqueue/bin/distqueue"  # where the units expect the CLI


# -- reading the files --------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} in every string of value."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = env.get(name)
        if op and op.startswith(":") and not got:
            got = None
        if got is not None:
            return got
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return _VAR.sub(one, value)


def service_env(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    environment = interpolate(service.get("environment", {}), env)
    if isinstance(environment, list):  # KEY=VALUE items
        environment = dict(item.split("=", 1) for item in environment)
    return {k: str(v) for k, v in environment.items()}


def seconds(duration: str) -> float:
    """Compose and systemd durations: 45s, 1m30s, 90."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|min)?", str(duration)):
        total += float(number) * {"ms": 0.001, "": 1, "s": 1, "m": 60, "min": 60,
                                  "h": 3600}[unit]  # fmt: skip
    return total


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file: section -> key -> values (a key may repeat), lines continued with
    a backslash joined, comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    for line in logical:
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def specifiers(text: str, instance: str, runtime: Path) -> str:
    return (text.replace("%i", instance).replace("%H", socket.gethostname())
            .replace("%t", str(runtime)).replace("%%", "%"))  # fmt: skip


# -- running them ---------------------------------------------------------------------


def need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed: the compose set-up cannot run"
        if os.environ.get("DISTQUEUE_REQUIRE_REDIS") == "1":
            pytest.fail(message + " (DISTQUEUE_REQUIRE_REDIS=1)")
        pytest.skip(message)


def localize(argv: list[str], mapping: dict[str, str], port: int | None = None) -> list[str]:
    """A container's command for this machine: each ``old`` substring of mapping
    becomes ``new``, a lone 0.0.0.0 becomes 127.0.0.1, --port takes ``port``."""
    out = []
    for i, arg in enumerate(argv):
        for old, new in mapping.items():
            arg = arg.replace(old, new)
        if arg == "0.0.0.0":
            arg = "127.0.0.1"
        if port is not None and i > 0 and argv[i - 1] == "--port":
            arg = str(port)
        out.append(arg)
    left = [a for a in out if re.search(r"0\.0\.0\.0|redis:\d|server:\d|:770[01]\b", a)]
    assert not left, f"not turned into this machine's addresses: {left}"
    return out


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stop_all(procs: list[Proc]) -> list[int]:
    return [proc.stop() for proc in reversed(procs)]


def round_trip(address: str, token: str) -> str:
    """Submit from the host, wait, return the job's id (it succeeded with 4)."""
    env = {"DISTQUEUE_TOKEN": token}
    submitted = cli("submit", "wordcount", "hello", "from", "the", "host", "--server", address,
                    env=env)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    waited = cli("wait", job_id, "--server", address, env=env)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    result = cli("result", job_id, "--server", address, env=env)
    assert result.stdout.strip() == "4", result.stdout + result.stderr
    return job_id


def stats(address: str, token: str) -> dict[str, Any]:
    out = cli("stats", "--json", "--server", address, env={"DISTQUEUE_TOKEN": token})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert isinstance(data, dict)
    return data


# -- the compose file -----------------------------------------------------------------


def test_compose_declares_redis_a_server_three_workers_and_prometheus() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {"redis", "server", "worker", "prometheus"}
    env = {"DISTQUEUE_TOKEN": "t"}
    redis = interpolate(services["redis"], env)
    assert redis["image"] == "redis:7"
    assert redis["command"][0] == "redis-server"
    assert option(redis["command"], "--appendonly") == "yes"
    assert "ports" not in redis  # the compose network alone reaches it

    server = interpolate(services["server"], env)
    command = server["command"]
    assert command[0] == "server"
    assert option(command, "--store") == "redis://redis:6379/0"
    assert option(command, "--host") == "0.0.0.0"
    assert option(command, "--http") == "0.0.0.0:7701"
    assert not {"--token", "--insecure"} & set(command)  # the token: environment only
    assert service_env(server, env)["DISTQUEUE_TOKEN"] == "t"
    with pytest.raises(KeyError, match="DISTQUEUE_TOKEN"):  # compose refuses to start
        service_env(services["server"], {})
    assert all(p.startswith("127.0.0.1:") for p in server["ports"])
    assert "/livez" in " ".join(server["healthcheck"]["test"])

    worker = interpolate(services["worker"], env)
    command = worker["command"]
    assert command[:3] == ["worker", "--server", "server:7700"]
    assert worker["deploy"]["replicas"] == 3
    assert service_env(worker, env)["DISTQUEUE_TOKEN"] == "t"
    # the engine waits longer than the worker's --grace before it kills
    assert seconds(worker["stop_grace_period"]) > float(option(command, "--grace"))
    health = option(command, "--health-file")
    assert worker["healthcheck"]["test"][1:] == ["distqueue", "worker", "--check",
                                                 "--health-file", health]  # fmt: skip
    # both build the same image from the wheel, never pulled under a made-up name
    assert server["image"] == worker["image"] == "distqueue:latest"
    assert server["build"] == worker["build"]
    dockerfile = (DEPLOY / server["build"]["context"] / server["build"]["dockerfile"]).resolve()
    assert dockerfile == DEPLOY / "Dockerfile"

    prometheus = interpolate(services["prometheus"], env)
    assert prometheus["profiles"] == ["monitoring"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    (secret,) = prometheus["secrets"]
    assert spec["secrets"][secret] == {"environment": "DISTQUEUE_TOKEN"}
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    (job,) = scrape
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["server:7701"]
    assert job["authorization"]["credentials_file"] == f"/run/secrets/{secret}"


def compose_tools() -> list[list[str]]:
    tools = []
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode == 0:  # fmt: skip
        tools.append(["docker", "compose"])
    for name in ("podman-compose", "docker-compose"):
        # on PATH, or beside this Python (the test extra's podman-compose, in a venv
        # not activated)
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if found:
            tools.append([found])
    return tools


def test_compose_config_where_a_compose_tool_exists() -> None:
    tools = compose_tools()
    if not tools:
        message = "no docker compose, podman-compose or docker-compose here"
        if os.environ.get("DISTQUEUE_REQUIRE_COMPOSE") == "1":
            pytest.fail(message + " (DISTQUEUE_REQUIRE_COMPOSE=1)")
        pytest.skip(message)
    env = {**os.environ, "DISTQUEUE_TOKEN": "t"}
    for tool in tools:
        out = subprocess.run([*tool, "-f", str(DEPLOY / "compose.yaml"), "config"],
                             capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert out.returncode == 0, (tool, out.stderr)
        assert "redis://redis:6379/0" in out.stdout


def test_the_compose_services_commands_run_as_processes(tmp_path: Path) -> None:
    """redis, the server and its workers exactly as compose.yaml starts them, here."""
    need_redis_server()
    services = compose()["services"]
    token = secrets.token_urlsafe(24)
    env = {"DISTQUEUE_TOKEN": token}
    redis_port, port, http = free_port(), free_port(), free_port()
    mapping = {"redis:6379": f"127.0.0.1:{redis_port}", "server:7700": f"127.0.0.1:{port}",
               "0.0.0.0:7701": f"127.0.0.1:{http}"}  # fmt: skip
    procs: list[Proc] = []
    redis_dir = tmp_path / "redis-data"
    redis_dir.mkdir()
    redis_argv = interpolate(services["redis"]["command"], env)
    assert redis_argv[0] == "redis-server"
    redis = start_redis(redis_port, str(tmp_path), *[
        str(redis_dir) if a == "/data" else a for a in redis_argv[1:]
    ])  # fmt: skip
    try:
        assert redis_command(redis_port, "CONFIG", "GET", "appendonly") == {"appendonly": "yes"}
        assert redis_command(redis_port, "CONFIG", "GET", "dir") == {"dir": str(redis_dir)}

        server = services["server"]
        argv = localize(interpolate(server["command"], env), mapping, port)
        procs.append(Proc([*CLI, *argv], env=service_env(server, env)))
        procs[0].wait_for(r"listening on 127\.0\.0\.1:\d+")
        procs[0].wait_for(rf"distqueue admin on http://127\.0\.0\.1:{http}/")
        assert "redis://127.0.0.1" in procs[0].output

        worker = services["worker"]
        health_files = []
        for n in range(worker["deploy"]["replicas"]):  # each container has its own /tmp
            health = str(tmp_path / f"worker-{n}.health")
            health_files.append(health)
            wmapping = {**mapping, option(worker["command"], "--health-file"): health}
            argv = localize(interpolate(worker["command"], env), wmapping)
            procs.append(Proc([*CLI, *argv], env=service_env(worker, env)))
        for proc in procs[1:]:
            proc.wait_for("connected to")
        assert '"level"' in procs[1].output  # DISTQUEUE_LOG_FORMAT=json from the file

        # the services' healthchecks, as the engine would run them inside each one
        test = interpolate(server["healthcheck"]["test"], env)
        assert test[:2] == ["CMD", "python"]
        inside = {**mapping, "127.0.0.1:7701": f"127.0.0.1:{http}"}
        done = subprocess.run([sys.executable, *localize(test[2:], inside)], timeout=30)
        assert done.returncode == 0
        for health in health_files:
            check = localize(interpolate(worker["healthcheck"]["test"], env)[2:],
                             {"/tmp/distqueue-worker.health": health})  # fmt: skip
            wait_until(lambda check=check: cli(*check).returncode == 0, 20, "healthy worker")

        # from the host: a job, its result; every worker there; the token enforced
        address = f"127.0.0.1:{port}"
        round_trip(address, token)
        assert stats(address, token)["workers"]["connected"] == worker["deploy"]["replicas"]
        refused = cli("stats", "--server", address, env={"DISTQUEUE_TOKEN": ""})
        assert refused.returncode != 0 and "token" in refused.stderr
        assert http_get(f"http://127.0.0.1:{http}/livez")[0] == 200
        assert http_get(f"http://127.0.0.1:{http}/metrics")[0] == 401
        status, body = http_get(f"http://127.0.0.1:{http}/metrics", token)
        assert status == 200 and b"distqueue_" in body
    finally:
        codes = stop_all(procs)
        redis.kill()
        redis.wait(10)
    assert codes == [0] * len(procs), [p.output[-2000:] for p in procs]


# -- the Dockerfile -------------------------------------------------------------------


def dockerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments (lines continued with a backslash joined)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def test_the_dockerfile_and_its_command_and_health_check(tmp_path: Path) -> None:
    spec = dockerfile()
    assert "PYTHON_IMAGE=python:3.11-slim" in spec["ARG"]
    assert spec["FROM"] == ["${PYTHON_IMAGE}"]
    (run,) = spec["RUN"]
    assert '"${wheel}[web,redis,fast]"' in run
    assert "useradd --system" in run
    (user,) = spec["USER"]
    assert user not in ("root", "0")
    assert spec["EXPOSE"] == ["7700 7701"]
    assert json.loads(spec["ENTRYPOINT"][0]) == ["distqueue"]
    (healthcheck,) = spec["HEALTHCHECK"]
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe[0] == "python" and "http://127.0.0.1:7701/livez" in probe[2]
    assert "curl" not in healthcheck

    # the default command: refused without a token (its --host is 0.0.0.0: the
    # server refuses before it binds anything), serving with one
    command = json.loads(spec["CMD"][0])
    assert command[0] == "server" and option(command, "--host") == "0.0.0.0"
    port, http = free_port(), free_port()
    extra = ["--port", str(port), "--no-console"]
    data = {"/var/lib/distqueue": str(tmp_path / "data")}
    as_is = [data.get(a, a) for a in command] + extra
    refused = cli(*as_is, env={"DISTQUEUE_TOKEN": ""}, timeout=30)
    assert refused.returncode != 0
    assert "without a token" in refused.stderr
    argv = localize(command, {"0.0.0.0:7701": f"127.0.0.1:{http}", **data}, port) + extra
    token = secrets.token_urlsafe(16)
    procs = [Proc([*CLI, *argv], env={"DISTQUEUE_TOKEN": token})]
    try:
        procs[0].wait_for(r"listening on")
        procs[0].wait_for(r"distqueue admin on")
        probe_code = probe[2].replace("127.0.0.1:7701", f"127.0.0.1:{http}")
        assert subprocess.run([sys.executable, "-c", probe_code], timeout=30).returncode == 0
        # and the image as a worker: `docker run ... distqueue:0.1.0 worker --server ...`
        procs.append(Proc([*CLI, "worker", "--server", f"127.0.0.1:{port}"],
                          env={"DISTQUEUE_TOKEN": token}))  # fmt: skip
        procs[1].wait_for("connected to")
        round_trip(f"127.0.0.1:{port}", token)
    finally:
        codes = stop_all(procs)
    assert codes == [0] * len(procs), [p.output[-2000:] for p in procs]


# -- the systemd units ----------------------------------------------------------------


def exec_start(path: Path) -> list[str]:
    import shlex

    (line,) = unit(path)["Service"]["ExecStart"]
    argv = shlex.split(line)
    assert argv[0] == INSTALLED
    return argv[1:]


def test_the_units_say_what_a_service_needs() -> None:
    server = unit(UNITS / "distqueue-server.service")
    worker = unit(UNITS / "distqueue-worker@.service")
    for u in (server, worker):
        service = u["Service"]
        for key, value in {"Restart": "on-failure", "KillSignal": "SIGTERM",
                           "EnvironmentFile": "/etc/distqueue/env", "User": "distqueue",
                           "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                           "PrivateTmp": "yes"}.items():  # fmt: skip
            assert service[key] == [value], key
        assert u["Install"]["WantedBy"] == ["multi-user.target"]
    server_argv = exec_start(UNITS / "distqueue-server.service")
    assert server["Service"]["ReadWritePaths"] == [option(server_argv, "--data")]
    assert "--token" not in server_argv  # the token: EnvironmentFile only
    worker_argv = exec_start(UNITS / "distqueue-worker@.service")
    assert seconds(worker["Service"]["TimeoutStopSec"][0]) > float(option(worker_argv, "--grace"))
    assert worker["Service"]["KillMode"] == ["mixed"]  # SIGTERM to the worker alone
    assert "%i" in option(worker_argv, "--id")


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    script = Path(sys.executable).parent / "distqueue"
    if not script.exists():
        pytest.fail("no distqueue console script beside this Python: pip install -e .")
    # verify checks that ExecStart's program exists: this Python's distqueue stands in
    # for /opt/distqueue/bin/distqueue
    for path in UNITS.glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED, str(script)))
    (tmp_path / "distqueue-worker@1.service").symlink_to("distqueue-worker@.service")
    out = subprocess.run(
        [analyze, "verify", "distqueue-server.service", "distqueue-worker@1.service"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )  # fmt: skip
    complaints = [line for line in (out.stdout + out.stderr).splitlines() if "distqueue" in line]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr


def test_the_units_exec_start_runs_with_the_real_cli(tmp_path: Path) -> None:
    """Both ExecStart lines started (specifiers filled in, ports and the data
    directory this test's own), with the environment the env file would give."""
    port, http = free_port(), free_port()
    token = secrets.token_urlsafe(16)
    data = tmp_path / "lib"
    argv = exec_start(UNITS / "distqueue-server.service")
    argv = localize(argv, {"127.0.0.1:7701": f"127.0.0.1:{http}",
                           "/var/lib/distqueue": str(data)}, port)  # fmt: skip
    procs = [Proc([*CLI, *argv], env={"DISTQUEUE_TOKEN": token})]
    try:
        procs[0].wait_for(rf"listening on 127\.0\.0\.1:{port}")
        runtime = tmp_path / "run"
        (runtime / "distqueue-worker-1").mkdir(parents=True)  # RuntimeDirectory=
        worker_argv = [specifiers(a, "1", runtime)
                       for a in exec_start(UNITS / "distqueue-worker@.service")]  # fmt: skip
        env = {"DISTQUEUE_TOKEN": token, "DISTQUEUE_SERVER": f"127.0.0.1:{port}"}
        procs.append(Proc([*CLI, *worker_argv], env=env))
        procs[1].wait_for(rf"worker {socket.gethostname()}-1 connected to")
        health = option(worker_argv, "--health-file")
        assert health == str(runtime / "distqueue-worker-1" / "health")
        wait_until(lambda: cli("worker", "--check", "--health-file", health).returncode == 0,
                   20, "the worker's health file")  # fmt: skip
        round_trip(f"127.0.0.1:{port}", token)
        assert any(data.iterdir())  # the embedded store in --data
    finally:
        codes = stop_all(procs)
    assert codes == [0, 0], [p.output[-2000:] for p in procs]


# -- the whole compose set-up in a container engine (opt-in) ---------------------------

BASE_IMAGE = "localhost/distqueue-test-base:bookworm"


def _podman(*args: str, timeout: float = 600, check: bool = True) -> str:
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"podman {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _base_image() -> str:
    """An image with Python 3.11+ (and venv) and redis-server, made without a registry:
    DISTQUEUE_CONTAINER_BASE if given, else a Debian bookworm from debootstrap,
    imported once as BASE_IMAGE and kept."""
    given = os.environ.get("DISTQUEUE_CONTAINER_BASE")
    if given:
        return given
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE]).returncode == 0:
        return BASE_IMAGE
    if shutil.which("debootstrap") is None:
        pytest.fail("no base image: install debootstrap or set DISTQUEUE_CONTAINER_BASE")
    with tempfile.TemporaryDirectory(prefix="dq-rootfs-") as rootfs:
        subprocess.run(
            ["debootstrap", "--variant=minbase",
             "--include=python3,python3-venv,ca-certificates,redis-server",
             "bookworm", rootfs, "http://deb.debian.org/debian"],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        with subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE) as tar:
            assert tar.stdout is not None
            subprocess.run(["podman", "import", "--change", 'CMD ["/bin/bash"]', "-",
                            BASE_IMAGE], stdin=tar.stdout, check=True, capture_output=True,
                           timeout=600)  # fmt: skip
            tar.stdout.close()
        assert tar.returncode == 0
    return BASE_IMAGE


@pytest.mark.skipif(os.environ.get("DISTQUEUE_CONTAINERS") != "1",
                    reason="set DISTQUEUE_CONTAINERS=1 to build the image and run "
                    "compose.yaml in podman (docs/deploy.md)")  # fmt: skip
def test_compose_in_podman(tmp_path: Path) -> None:
    """The image built from deploy/Dockerfile with no registry and no network (a base
    from debootstrap; the wheel and its dependencies in the build context), then
    deploy/compose.yaml brought up by podman-compose with that image for distqueue and
    the base's redis-server for redis: a job submitted from the host succeeds, the
    three workers are there, the healthchecks pass, `down` stops everything cleanly.

    Podman's own settings come from the environment (CONTAINERS_CONF): on a machine
    whose limits or cgroups crun cannot handle, a containers.conf with
    ``runtime = "runc"`` and lower ``default_ulimits`` (docs/deploy.md)."""
    for tool in ("podman", "podman-compose"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (DISTQUEUE_CONTAINERS=1)")
    base = _base_image()
    # the build context: the wheel, and its dependencies fetched by the base image's
    # own pip (so markers such as python_full_version resolve for its Python)
    context = tmp_path / "context"
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(context),
                           str(ROOT)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    certs = ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro",
             "-e", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt"]  # fmt: skip
    _podman("run", "--rm", "--network", "host", *certs, "-v", f"{context}:/wheels", base,
            "sh", "-c", "python3 -m venv /v && /v/bin/pip download --quiet --dest /wheels"
            ' "$(ls /wheels/distqueue-*.whl)[web,redis,fast]"')  # fmt: skip
    image = "localhost/distqueue:compose-test"
    _podman("build", "--network", "none", "--format", "docker", "--build-arg",
            f"PYTHON_IMAGE={base}", "--build-arg", "OFFLINE=1", "-f",
            str(DEPLOY / "Dockerfile"), "-t", image, str(context))  # fmt: skip

    token = secrets.token_urlsafe(24)
    port, http = free_port(), free_port()
    project = f"dqtest{os.getpid()}"
    env = {**os.environ, "DISTQUEUE_TOKEN": token, "DISTQUEUE_IMAGE": image,
           "REDIS_IMAGE": base, "DISTQUEUE_PORT": str(port),
           "DISTQUEUE_HTTP_PORT": str(http)}  # fmt: skip
    compose_cmd = ["podman-compose", "-p", project, "-f", str(DEPLOY / "compose.yaml")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*compose_cmd, *args], capture_output=True, text=True,
                              env=env, timeout=300)  # fmt: skip

    up = run("up", "-d")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        address = f"127.0.0.1:{port}"
        wait_until(lambda: cli("stats", "--server", address,
                               env={"DISTQUEUE_TOKEN": token}).returncode == 0,
                   60, "the server in its container")  # fmt: skip
        wait_until(lambda: stats(address, token)["workers"]["connected"] == 3, 60,
                   "three workers in their containers")  # fmt: skip
        round_trip(address, token)
        assert http_get(f"http://127.0.0.1:{http}/livez")[0] == 200
        status, body = http_get(f"http://127.0.0.1:{http}/metrics", token)
        assert status == 200 and b"distqueue_" in body
        names = _podman("ps", "--filter", f"label=io.podman.compose.project={project}",
                        "--format", "{{.Names}}").split()  # fmt: skip
        assert len(names) == 5, names  # redis, server, three workers
        for name in names:  # the image's and the compose file's healthchecks
            deadline = time.monotonic() + 30
            while _podman_health(name) != 0:
                assert time.monotonic() < deadline, f"{name} never healthy"
                time.sleep(1)
        server = next(n for n in names if "server" in n)
        logs = subprocess.run(["podman", "logs", server], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert "listening on 0.0.0.0:7700" in logs.stdout + logs.stderr
    finally:
        containers = _podman("ps", "-aq", "--filter",
                             f"label=io.podman.compose.project={project}").split()  # fmt: skip
        volumes = _podman("inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}",
                          *containers, check=False).split() if containers else []  # fmt: skip
        down = run("down", "-v")
        left = set(volumes) & set(_podman("volume", "ls", "--format", "{{.Name}}").split())
        if left:  # anonymous volumes, which `down -v` leaves behind
            _podman("volume", "rm", "-f", *left, check=False)
        _podman("rmi", "-f", image, check=False)  # the base image is kept for next time
    assert down.returncode == 0, down.stdout + down.stderr
    exited = _podman("ps", "-a", "--filter", f"label=io.podman.compose.project={project}",
                     "--format", "{{.Names}}")  # fmt: skip
    assert not exited.split(), exited
    assert volumes, "no volumes seen (redis-data at least)"
    assert not set(volumes) & set(_podman("volume", "ls", "--format", "{{.Name}}").split())


def _podman_health(name: str) -> int:
    return subprocess.run(["podman", "healthcheck", "run", name], capture_output=True,
                          timeout=60).returncode  # fmt: skip
