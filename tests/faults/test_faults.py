"""distqueue's promises under faults: real servers, workers and Redis, a client
submitting tagged jobs while a nemesis strikes, then a quiesce and the history
checker (tests/faults/history.py).

The promises: every acknowledged SUBMIT ends ``succeeded`` (lost = 0); nothing
appears that nobody submitted and no submit makes two jobs (unexpected = 0); a
result from a worker that no longer holds the job is never accepted
(stale_accepted = 0); a job's finish is applied once (finished_twice = 0), though
it may run more than once; a submit refused with "nothing was changed" left
nothing (refused_but_stored = 0). Where the issue asks for it, the server and the
workers must also still be running after a store fault (Redis restarted, disk
full): they must ride it out, not exit.

Each scenario guards against bugs seen in peers (docs: /work/shared/research/
reliability.md §3): jobs of a SIGKILLed worker lost (RQ, Huey, Celery without
reject_on_worker_lost, Sidekiq OSS: R1); answered submits lost in a server crash
(R2); a frozen worker's late result accepted over the new holder's (Faktory ACK by
JID, Bull #308, SAQ #126: R4, R5); a Redis restart taking the service down or
losing jobs (Dramatiq #527: R9); a full disk crashing the server (beanstalkd's
binlog_disk_full: S4); a stepped wall clock expiring every lease at once or
holding delayed jobs back (R8; skipped where libfaketime is not installed).

Short versions run by default (the file in about 2-3 minutes on 2 cores);
``DISTQUEUE_SOAK=1 pytest -m slow tests/faults`` runs each for ~80 s instead.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path

import pytest

from distqueue.client import Client
from distqueue.errors import DistQueueError
from distqueue.store.sqlite import DB_NAME
from tests.faults.history import History, Load, settle_and_check
from tests.faults.nemesis import ClockJump, Fleet, FullDisk, RedisNemesis, paused
from tests.faults.proxy import FaultProxy
from tests.faults.tasks import RECORD
from tests.procs import Proc, wait_until

pytestmark = pytest.mark.faults

SOAK = os.environ.get("DISTQUEUE_SOAK") == "1"
#: seconds of load and faults per scenario: 80 s each in a soak (seven scenarios,
#: about ten minutes with their start and drain), a few seconds each otherwise
DURATION = (
    [pytest.param(80.0, id="soak", marks=[pytest.mark.slow, pytest.mark.timeout(900)])]
    if SOAK
    else [pytest.param(8.0, id="short")]
)
#: the short lease of the scenarios that freeze or cut off a worker
LEASE = 2.0


# -- helpers ---------------------------------------------------------------------------


def held_by(address: str, worker_id: str) -> int:
    """How many jobs the server has leased to the worker (0 if it cannot say)."""
    try:
        with Client(address, timeout=5) as client:
            workers = client.stats()["workers"]["list"]
    except DistQueueError:
        return 0
    return sum(int(w.get("held", 0)) for w in workers if w.get("id") == worker_id)


def connected(address: str) -> int:
    """How many workers the server has connected (0 if it cannot say)."""
    try:
        with Client(address, timeout=5) as client:
            return int(client.stats()["workers"]["connected"])
    except DistQueueError:
        return 0


class Deaths:
    """Which of the processes stopped running, and when it was first seen."""

    def __init__(self, procs: dict[str, Proc]) -> None:
        self.procs = procs
        self.seen: dict[str, str] = {}

    def look(self, when: str, history: History | None = None) -> bool:
        """Note every process found dead (the first time only); True if any is."""
        for name, proc in self.procs.items():
            if proc.alive or name in self.seen:
                continue
            tail = "\n      ".join(proc.lines[-8:])
            self.seen[name] = (
                f"{name} (pid {proc.popen.pid}) exited with {proc.popen.returncode} {when};"
                f" its last lines:\n      {tail}"
            )
            if history is not None:
                history.note(f"{name} found dead {when}")
        return bool(self.seen)

    def problems(self) -> list[str]:
        return list(self.seen.values())


def dead(procs: dict[str, Proc], when: str) -> list[str]:
    """One line per process that is no longer running, with its last output."""
    deaths = Deaths(procs)
    deaths.look(when)
    return deaths.problems()


def submit_now(history: History, address: str, n: int, timeout: float) -> list[str]:
    """Submit ``n`` jobs one by one through a fresh client; each may be retried (as a
    new submit, with a new tag) until ``timeout``. Returns the failures, if any."""
    failures = []
    deadline = time.monotonic() + timeout
    with Client(address, timeout=5) as client:
        for _ in range(n):
            while True:
                tag = history.tag()
                history.sent([tag])
                try:
                    job_id = client.submit(RECORD, tag, 0.0, check_type=False, retries=10)
                except DistQueueError as exc:
                    history.failed([tag], exc)
                    client.close()
                    if time.monotonic() > deadline:
                        failures.append(f"{type(exc).__name__}: {exc}")
                        break
                    time.sleep(0.2)
                    continue
                history.ok([tag], [job_id])
                break
    return failures


def judge(
    history: History,
    fleet: Fleet,
    address: str,
    problems: list[str],
    *,
    leases_lost: bool = False,
    leases_kept: bool = False,
) -> None:
    """Quiesce, read every job, check the history; then the verdict: no process
    problem, every counter 0, every acknowledged job succeeded. One assertion, so a
    failure shows everything at once. ``leases_lost``: the fault must have taken
    some job away from its worker (else it was not exercised); ``leases_kept``: the
    fault must not have (no worker died or froze, so no lease may run out)."""
    failures = list(problems)
    try:
        report = settle_and_check(history, address)
    except AssertionError as exc:  # the server never answered: nothing to judge
        failures.append(f"the history could not be read: {exc}")
        report = None
    if report is not None:
        counts = report.counts()
        if any(counts.values()):
            failures.append(f"history counters not all 0: {counts}")
        if not report.quiet:
            failures.append("jobs were still pending when the quiesce gave up")
        if report.acknowledged_succeeded != report.acknowledged:
            failures.append(
                f"{report.acknowledged} submits acknowledged but only"
                f" {report.acknowledged_succeeded} of them succeeded"
            )
        if report.acknowledged == 0:
            failures.append("no submit was acknowledged: the load never ran")
        if leases_lost and report.lost_leases == 0:
            failures.append("no lease was lost: the fault did not take any job away")
        if leases_kept and report.lost_leases:
            failures.append(
                f"{report.lost_leases} leases lost, though every worker was alive and"
                " heartbeating: the fault expired them"
            )
    detail = (
        f"{report.summary() if report else ''}\ntimeline:\n{history.timeline()}"
        f"\nprocesses:\n{fleet.outputs()}"
    )
    print(detail)  # shown with -s or -rP: what a passing run went through
    assert not failures, "\n".join(failures) + "\n" + detail
    assert report is not None and report.acknowledged == len(history.acked)


# -- scenarios -------------------------------------------------------------------------


@pytest.mark.parametrize("duration", DURATION)
def test_workers_killed_with_9_again_and_again(
    history: History, fleet: Fleet, tmp_path: Path, duration: float
) -> None:
    """R1: kill -9 a busy worker every 0.5-1.5 s and start another; its jobs come back
    (its connection drops) and run elsewhere."""
    rng = random.Random(11)
    server = fleet.server(tmp_path / "data")
    workers = [fleet.worker(server.address) for _ in range(3)]
    for w in workers:
        w.wait_connected()
    load = Load(history, server.address, rate=150, seconds=(0.0, 0.05), seed=1).start()
    try:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.5, 1.5))
            i = rng.randrange(len(workers))
            fleet.kill(workers[i], f"worker {workers[i].id}")
            workers[i] = fleet.worker(server.address)
    finally:
        load.stop()
    problems = dead({"server": server} | {f"worker {w.id}": w for w in workers}, "at the end")
    judge(history, fleet, server.address, problems)


def _integrity(data: Path) -> str:
    db = sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True, timeout=10)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize("duration", DURATION)
def test_server_killed_with_9_mid_submit_and_ack(
    history: History, fleet: Fleet, tmp_path: Path, duration: float
) -> None:
    """R2: the embedded store's server (``--durability full``) killed with -9 while
    two clients submit and the workers ACK, restarted on the same data and port:
    every answered SUBMIT is there and runs; the file is sound after every kill."""
    rng = random.Random(12)
    data = tmp_path / "data"
    server = fleet.server(data)
    workers = [fleet.worker(server.address) for _ in range(2)]
    for w in workers:
        w.wait_connected()
    loads = [
        Load(history, server.address, rate=100, seconds=(0.0, 0.05), seed=s).start() for s in (2, 3)
    ]
    problems: list[str] = []
    kills = 0
    try:
        end = time.monotonic() + duration
        while time.monotonic() < end or kills < 3:
            time.sleep(rng.uniform(1.0, 2.5))
            fleet.kill(server, "server")
            kills += 1
            verdict = _integrity(data)
            if verdict != "ok":
                problems.append(f"integrity_check after kill {kills}: {verdict}")
            server = fleet.restart_server(server, data)
    finally:
        for load in loads:
            load.stop()
    # the workers reconnect by themselves, with backoff
    wait_until(lambda: connected(server.address) >= len(workers), 30, "the workers back")
    problems += dead({f"worker {w.id}": w for w in workers}, "after the server restarts")
    judge(history, fleet, server.address, problems)


@pytest.mark.parametrize("duration", DURATION)
def test_worker_sigstopped_past_its_lease(
    history: History, fleet: Fleet, tmp_path: Path, duration: float
) -> None:
    """R4: a worker holding jobs is frozen (SIGSTOP) for 2.5 leases, so its leases
    run out and the jobs run on the other worker; then it wakes (SIGCONT) and sends
    its late ACKs and BEATs, which must change nothing."""
    rng = random.Random(13)
    server = fleet.server(tmp_path / "data", "--lease", str(LEASE))
    frozen = fleet.worker(server.address)
    other = fleet.worker(server.address)
    frozen.wait_connected()
    other.wait_connected()
    load = Load(history, server.address, rate=60, seconds=(0.05, 0.3), seed=4).start()
    rounds = 0
    try:
        end = time.monotonic() + duration
        while time.monotonic() < end or rounds < 2:
            wait_until(lambda: held_by(server.address, frozen.id), 10, "the worker to hold jobs")
            with paused(frozen, history, f"worker {frozen.id}"):
                time.sleep(LEASE * 2.5)
            rounds += 1
            time.sleep(rng.uniform(1.0, 2.0))
    finally:
        load.stop()
    procs: dict[str, Proc] = {"server": server, "frozen worker": frozen, "other worker": other}
    judge(history, fleet, server.address, dead(procs, "at the end"), leases_lost=True)


@pytest.mark.parametrize("duration", DURATION)
def test_redis_restarted_under_load(
    history: History, fleet: Fleet, tmp_path: Path, duration: float
) -> None:
    """R9: the Redis store (AOF, fsync always) stopped — SIGTERM or kill -9 — and
    started again on the same port and files, 1-3 s later, again and again, under a
    server on it and a direct-mode worker on it. Nothing acknowledged is lost, and
    the server and the workers ride out Redis' absence: they must still be running
    afterwards (not exit, and not need a restart by hand)."""
    rng = random.Random(14)
    history.store_error_definite = False  # on Redis a STORE reply means "maybe"
    redis = RedisNemesis(tmp_path / "redis", history).start()
    try:
        store = ("--store", redis.url, "--lease", str(LEASE))
        server = fleet.server(tmp_path / "unused", *store)
        served = fleet.worker(server.address)
        direct = fleet.worker(redis.url, "--lease", str(LEASE))
        served.wait_connected()
        direct.wait_connected()
        load = Load(history, server.address, rate=100, seconds=(0.0, 0.05), seed=5).start()
        deaths = Deaths({"server": server, "worker (via server)": served,
                         "worker (direct mode)": direct})  # fmt: skip
        restarts = 0
        try:
            end = time.monotonic() + duration
            while time.monotonic() < end or restarts < 3:
                time.sleep(rng.uniform(1.0, 2.5))
                redis.restart(down_for=rng.uniform(1.0, 3.0), hard=restarts % 2 == 0)
                restarts += 1
                time.sleep(1.0)
                deaths.look(f"after Redis restart {restarts}", history)
        finally:
            load.stop()
        time.sleep(1.0)
        deaths.look("after the Redis restarts", history)
        problems = deaths.problems()
        # the history is judged whatever happened to the processes: bring back what
        # died (a failure already recorded above) so the jobs can be read and drained
        if not server.alive:
            server = fleet.restart_server(server, tmp_path / "unused", *store)
        if not direct.alive:
            direct = fleet.worker(redis.url, "--lease", str(LEASE))
        if not served.alive:
            served = fleet.worker(server.address)
        judge(history, fleet, server.address, problems)
    finally:
        fleet.close()
        redis.close()


@pytest.mark.parametrize("duration", DURATION)
def test_full_disk_then_freed(
    history: History, fleet: Fleet, tmp_path: Path, duration: float
) -> None:
    """S4: the server's data directory on a 16 MiB tmpfs, filled to the last byte
    under load, then freed. While full, submits may be refused (and are recorded as
    maybe); afterwards the server and the workers are still running, new submits
    succeed without a restart, and nothing acknowledged is lost."""
    rng = random.Random(15)
    disk = FullDisk(tmp_path / "disk", history).mount()
    try:
        data = disk.mountpoint / "data"
        server = fleet.server(data)
        workers = [fleet.worker(server.address) for _ in range(2)]
        for w in workers:
            w.wait_connected()
        load = Load(history, server.address, rate=150, seconds=(0.0, 0.03), seed=6).start()
        deaths = Deaths({"server": server} | {f"worker {w.id}": w for w in workers})
        rounds = 0
        try:
            end = time.monotonic() + duration
            while time.monotonic() < end or rounds < 1:
                time.sleep(rng.uniform(1.0, 2.0))
                disk.fill()
                before = sum(history.errors.values())
                time.sleep(rng.uniform(2.0, 3.0))  # the load goes on against a full disk
                history.note(f"submit errors while full: {sum(history.errors.values()) - before}")
                disk.free()
                rounds += 1
                time.sleep(1.0)
                if deaths.look(f"after the disk was freed (round {rounds})", history):
                    break
        finally:
            load.stop()
        problems: list[str] = []
        # once there is room again, new submits succeed, without a restart
        if server.alive:
            failures = submit_now(history, server.address, 20, timeout=15)
            if failures:
                problems.append(f"submits after the disk was freed failed: {failures[:3]}")
        deaths.look("after the disk was freed", history)
        problems = deaths.problems() + problems
        if not server.alive:  # judge the history anyway, on a restarted server
            server = fleet.restart_server(server, data)
            for i, w in enumerate(workers):
                if not w.alive:
                    workers[i] = fleet.worker(server.address)
        judge(history, fleet, server.address, problems)
    finally:
        fleet.close()  # before the unmount: the server holds its files open
        disk.close()


@pytest.mark.parametrize("duration", DURATION)
def test_worker_partitioned_past_its_lease(
    history: History, fleet: Fleet, tmp_path: Path, duration: float
) -> None:
    """R5: a worker behind the fault proxy is cut off (a blackhole: nothing passes
    either way, connections stay open) for 2.5 leases while it holds jobs, then
    healed, so everything it sent meanwhile (BEATs, ACKs of jobs now re-run
    elsewhere) arrives late; last, every connection is reset. It must stay up and
    nothing stale may be accepted."""
    rng = random.Random(16)
    server = fleet.server(tmp_path / "data", "--lease", str(LEASE))
    with FaultProxy(("127.0.0.1", server.port)) as proxy:
        cut = fleet.worker(proxy.address)
        other = fleet.worker(server.address)
        cut.wait_connected()
        other.wait_connected()
        load = Load(history, server.address, rate=60, seconds=(0.05, 0.3), seed=7).start()
        rounds = 0
        try:
            end = time.monotonic() + duration
            while time.monotonic() < end or rounds < 2:
                wait_until(lambda: held_by(server.address, cut.id), 15, "the worker to hold jobs")
                history.note("partition: proxy blackholed")
                proxy.blackhole()
                try:
                    time.sleep(LEASE * 2.5)
                finally:
                    proxy.heal()
                    history.note("partition healed")
                rounds += 1
                time.sleep(rng.uniform(1.0, 2.0))
            history.note(f"proxy reset {proxy.reset()} connections")
            time.sleep(1.0)
        finally:
            load.stop()
        procs: dict[str, Proc] = {"server": server, "partitioned worker": cut, "other": other}
        judge(history, fleet, server.address, dead(procs, "at the end"), leases_lost=True)


# alone (tests/conftest.py): libfaketime, reading its offset file at every clock read,
# slows the server and the workers so much that beside other tests' load they missed
# heartbeats for a 6 s lease (3 of 4 runs beside 4 busy loops, even with no step at all;
# none without libfaketime)
@pytest.mark.serial
@pytest.mark.parametrize("duration", DURATION)
def test_wall_clock_stepped_under_load(
    history: History,
    fleet: Fleet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    duration: float,
) -> None:
    """R8: the wall clock of the server and the workers stepped (libfaketime) an hour
    ahead, back, an hour behind, a day ahead, ... every 1-2 s under load, with a
    6 s lease and a fifth of the jobs delayed 0.2-1.5 s. Leases and schedules must
    not follow the steps: no lease of a live, heartbeating worker runs out (a step
    ahead would expire them all at once), no delayed job waits an hour (a step
    behind would hold them back), nothing is lost. The monotonic clock is left alone."""
    rng = random.Random(17)
    clock = ClockJump(tmp_path / "faketime", history)
    for name, value in clock.env().items():
        monkeypatch.setenv(name, value)  # the server and the workers started below
    server = fleet.server(tmp_path / "data", "--lease", "6")
    workers = [fleet.worker(server.address) for _ in range(2)]
    for w in workers:
        w.wait_connected()
    monkeypatch.delenv("LD_PRELOAD")  # nothing else this test starts
    load = Load(history, server.address, rate=60, seconds=(0.05, 0.3), delayed=0.2, seed=8)
    load.start()
    steps = [3600.0, 0.0, -3600.0, 0.0, 86400.0, -86400.0, 0.0]
    jumps = 0
    try:
        end = time.monotonic() + duration
        while time.monotonic() < end or jumps < 4:
            time.sleep(rng.uniform(1.0, 2.0))
            clock.jump(steps[jumps % len(steps)])
            jumps += 1
        # last, an hour behind, and left there: the delayed jobs submitted just before
        # must still run now, not an hour from now
        clock.jump(-3600.0)
        time.sleep(1.0)
    finally:
        load.stop()
    problems = dead({"server": server} | {f"worker {w.id}": w for w in workers}, "at the end")
    judge(history, fleet, server.address, problems, leases_kept=True)
