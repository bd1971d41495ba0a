"""/metrics, METRICS_GET and the health endpoints of a real ``distqueue server``,
after a run whose outcomes are known exactly."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from distqueue.client import Client
from tests.procs import ServerProc, wait_until

pytest.importorskip("prometheus_client", reason="the web extra (distqueue[web]) is missing")

from prometheus_client.parser import text_string_to_metric_families

TASKS = ["--tasks", "tests.sample_tasks"]
T = "tests.sample_tasks."


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def admin_url(server: ServerProc) -> str:
    return server.wait_for(r"distqueue admin on (http://\S+/)").group(1).rstrip("/")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus-client's own
    parser (which raises on a malformed one): (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_label(values: dict[Any, float], name: str, label: str) -> dict[str, float]:
    """The non-zero samples of ``name`` by the value of its one ``label``."""
    return {dict(labels)[label]: v for (n, labels), v in values.items() if n == name and v}


def test_metrics_match_a_run_with_known_outcomes(
    server_proc: Any, worker_proc: Any, tmp_path: Path
) -> None:
    server = server_proc("--http", "127.0.0.1:0")
    url = admin_url(server)
    worker_proc(server.address, *TASKS, "-c", "8").wait_connected()
    with Client(server.address) as client:
        ok = [client.submit(T + "add", i, 1, priority=0) for i in range(100)]
        dead = [client.submit(T + "boom", "for good", priority=10, retries=0)
                for _ in range(10)]  # fmt: skip
        flaky = [client.submit(T + "fails_once", str(tmp_path / f"m{i}"), retries=3)
                 for i in range(5)]  # fmt: skip
        for job_id in ok + dead + flaky:
            client.wait(job_id, 60)
        assert [client.status(i).state.value for i in ok + flaky] == ["succeeded"] * 105
        assert [client.status(i).state.value for i in dead] == ["dead"] * 10

    status, text = get(url + "/metrics")
    assert status == 200
    m = samples(text)
    assert by_label(m, "distqueue_tasks_submitted_total", "priority") == {
        "0": 100, "5": 5, "10": 10}  # fmt: skip
    assert by_label(m, "distqueue_tasks_completed_total", "priority") == {"0": 100, "5": 5}
    assert by_label(m, "distqueue_tasks_failed_total", "priority") == {"5": 5, "10": 10}
    assert by_label(m, "distqueue_tasks_retried_total", "priority") == {"5": 5}
    assert by_label(m, "distqueue_tasks_dead_total", "priority") == {"10": 10}
    # one duration per result (ACK or FAIL), one wait per job's first start
    assert by_label(m, "distqueue_task_duration_seconds_count", "priority") == {
        "0": 100, "5": 10, "10": 10}  # fmt: skip
    assert by_label(m, "distqueue_task_wait_seconds_count", "priority") == {
        "0": 100, "5": 5, "10": 10}  # fmt: skip
    bucket = "distqueue_task_duration_seconds_bucket"
    inf = {k: v for k, v in m.items() if k[0] == bucket and ("le", "+Inf") in k[1]}
    assert sorted(inf.values()) == [10, 10, 100]
    assert m[("distqueue_stale_results_refused_total", ())] == 0
    assert m[("distqueue_lease_expiries_total", ())] == 0
    assert by_label(m, "distqueue_commands_total", "verb")["SUBMIT"] == 115

    # the gauges come from a snapshot refreshed every second: wait for one after the run
    def settled() -> dict[Any, float] | None:
        m = samples(get(url + "/metrics")[1])
        jobs = by_label(m, "distqueue_jobs", "state")
        return m if jobs == {"succeeded": 105, "dead": 10} else None

    m = wait_until(settled, 10, "the job gauges to show the run")
    assert by_label(m, "distqueue_queue_depth", "priority") == {}
    assert m[("distqueue_workers_active", ())] == 0
    assert m[("distqueue_workers_idle", ())] == 1
    assert m[("distqueue_worker_slots", (("state", "free"),))] == 8
    assert m[("distqueue_worker_slots", (("state", "busy"),))] == 0
    assert m[("distqueue_store_up", ())] == 1
    totals = by_label(m, "distqueue_store_events_total", "event")
    assert (totals["submitted"], totals["succeeded"], totals["dead"]) == (115, 105, 10)

    # the same numbers through the protocol
    with Client(server.address) as client:
        got = json.loads(client.call("METRICS_GET"))
    assert got["metrics"]["completed"] == {"0": 100, "5": 5}
    assert got["metrics"]["dead"] == {"10": 10}
    assert got["counters"]["retried"] == 5
    assert got["metrics"]["duration"]["0"]["count"] == 100


def test_health_endpoints_and_shutdown(server_proc: Any) -> None:
    server = server_proc("--http", "127.0.0.1:0")
    url = admin_url(server)
    assert get(url + "/livez") == (200, "ok\n")
    wait_until(lambda: get(url + "/readyz")[0] == 200, 10, "ready")
    status, body = get(url + "/health")
    report = json.loads(body)
    assert (status, report["status"], report["queue_depth"]) == (200, "ok", 0)
    with Client(server.address) as client:
        assert client.call("SHUTDOWN") == b"OK"
    assert server.wait(20) == 0
    assert "stopping: SHUTDOWN from" in server.output


def test_admin_port_behind_the_token(server_proc: Any) -> None:
    server = server_proc("--http", "127.0.0.1:0", "--token", "s3cret")
    url = admin_url(server)
    assert get(url + "/livez") == (200, "ok\n")  # says up or down, nothing more
    assert get(url + "/metrics")[0] == 401
    assert get(url + "/health")[0] == 401
    assert get(url + "/metrics", token="wrong")[0] == 401
    status, text = get(url + "/metrics", token="s3cret")
    assert status == 200 and "distqueue_build_info" in text


def test_readyz_and_health_turn_503_while_redis_is_down(server_proc: Any) -> None:
    from tests.system.test_store_outages import OwnRedis

    redis = OwnRedis()
    try:
        server = server_proc("--store", redis.url, "--http", "127.0.0.1:0")
        url = admin_url(server)
        wait_until(lambda: get(url + "/readyz")[0] == 200, 20, "ready")
        assert get(url + "/health")[0] == 200
        redis.kill()

        def down() -> tuple[int, str] | None:
            status, body = get(url + "/readyz")
            return (status, body) if status == 503 else None

        status, body = wait_until(down, 20, "/readyz to say the store is down")
        assert body.startswith("store unavailable")
        status, body = get(url + "/health")
        report = json.loads(body)
        assert (status, report["status"], report["store"]["ok"]) == (
            503, "store unavailable", False)  # fmt: skip
        assert get(url + "/livez") == (200, "ok\n")  # the process still serves
        m = samples(get(url + "/metrics")[1])
        assert m[("distqueue_store_up", ())] == 0

        redis.start()
        wait_until(lambda: get(url + "/readyz")[0] == 200, 30, "/readyz to recover")
        status, body = get(url + "/health")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        assert samples(get(url + "/metrics")[1])[("distqueue_store_up", ())] == 1
    finally:
        redis.kill()


def test_health_says_stuck_when_jobs_wait_and_workers_idle(
    server_proc: Any, worker_proc: Any
) -> None:
    server = server_proc("--http", "127.0.0.1:0", "--stuck-after", "1")
    url = admin_url(server)
    worker_proc(server.address, "-q", "default").wait_connected()
    with Client(server.address) as client:
        client.submit("echo", "typo'd queue", queue="defualt")  # no worker serves it

    def stuck() -> dict[str, Any] | None:
        status, body = get(url + "/health")
        report = json.loads(body)
        return report if status == 503 and report["status"] == "stuck" else None

    report = wait_until(stuck, 20, "/health to say stuck")
    assert report["queue_depth"] == 1 and report["workers"]["idle"] == 1
    assert "do the workers serve these queues and types?" in report["reason"]
    assert get(url + "/readyz")[0] == 200  # stuck is not unready: the server is fine


def test_health_is_not_stuck_for_a_paused_queue(server_proc: Any, worker_proc: Any) -> None:
    # Given a worker idle by choice: its queue is paused, jobs wait in it
    server = server_proc("--http", "127.0.0.1:0", "--stuck-after", "1")
    url = admin_url(server)
    worker_proc(server.address, "-q", "default").wait_connected()
    with Client(server.address) as client:
        client.pause("default")
        client.submit("echo", "held on purpose")
        time.sleep(3)  # past --stuck-after, and a snapshot or two
        # Then /health says ok (maintenance must not fail a liveness probe)...
        status, body = get(url + "/health")
        report = json.loads(body)
        assert (status, report["status"], report["queue_depth"]) == (200, "ok", 1)
        # ... and once resumed the job runs
        client.resume("default")
        assert client.result(client.list(limit=1)[0].id, wait=20) == "held on purpose"


def test_health_warns_of_a_long_transaction_on_a_postgres_store(server_proc: Any) -> None:
    psycopg = pytest.importorskip("psycopg")
    from tests.postgres_server import drop_schema, new_schema, postgres_url

    schema = new_schema("health")
    try:
        # Given a server on a PostgreSQL schema that warns of transactions open 2 s
        server = server_proc("--store", f"{postgres_url()}?schema={schema}",
                             "--http", "127.0.0.1:0", "--long-transaction", "2")  # fmt: skip
        url = admin_url(server)
        wait_until(lambda: get(url + "/readyz")[0] == 200, 20, "ready")
        report = json.loads(get(url + "/health")[1])
        assert (report["oldest_transaction_age"], report["warnings"]) == (None, [])
        assert ("distqueue_store_oldest_transaction_seconds", ()) not in samples(
            get(url + "/metrics")[1])  # fmt: skip
        # When an application leaves a transaction open (it wrote, so it has an id)
        with psycopg.connect(postgres_url()) as conn:
            conn.execute("CREATE TEMP TABLE scratch (x int)")

            def warned() -> dict[str, Any] | None:
                found = json.loads(get(url + "/health")[1])
                return found if found["warnings"] else None

            # Then /health names it past 2 s, and stays 200: the queue still works
            report = wait_until(warned, 20, "/health to warn of the transaction")
            status, _ = get(url + "/health")
            assert status == 200 and report["status"] == "ok"
            assert report["oldest_transaction_age"] > 2
            assert "has been open" in report["warnings"][0]
            m = samples(get(url + "/metrics")[1])
            assert m[("distqueue_store_oldest_transaction_seconds", ())] > 2
            conn.rollback()
        # and the warning goes when the transaction ends
        wait_until(lambda: json.loads(get(url + "/health")[1])["warnings"] == [], 20,
                   "the warning to clear")  # fmt: skip
    finally:
        drop_schema(schema)
