"""A beanstalkd client from PyPI (greenstalk) drives `distqueue server --beanstalk`:
its jobs are distqueue's jobs, in its store, by the same ids (#16, first step)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from distqueue.client import Client
from distqueue.jobs import JobState
from tests.procs import ServerProc

greenstalk = pytest.importorskip("greenstalk")


@pytest.fixture
def server(server_proc: Any) -> Iterator[tuple[ServerProc, tuple[str, int]]]:
    proc = server_proc("--beanstalk", "127.0.0.1:0")
    m = proc.wait_for(r"beanstalk listener on (\S+):(\d+)")
    yield proc, (m.group(1), int(m.group(2)))


def test_put_reserve_delete_as_distqueue_jobs(server: Any) -> None:
    proc, addr = server
    with greenstalk.Client(addr, use="emails", watch="emails", encoding=None) as bs:
        ids = [bs.put(b"hello %d" % i, priority=p) for i, p in enumerate([1024, 0, 2**32 - 1])]
        with Client(proc.address) as client:
            for job_id, p in zip(ids, [1024, 0, 2**32 - 1], strict=True):
                job = client.status(job_id)
                assert (job.type, job.queue, job.priority, job.state) == (
                    "beanstalk", "emails", p, JobState.QUEUED)  # fmt: skip
            # most urgent first, whatever the order of the puts
            got = [bs.reserve(timeout=5) for _ in ids]
            assert [(j.id, j.body) for j in got] == [
                (ids[1], b"hello 1"), (ids[0], b"hello 0"), (ids[2], b"hello 2")]  # fmt: skip
            stats = bs.stats_job(got[0])
            assert (stats["id"], stats["tube"], stats["state"], stats["pri"]) == (
                ids[1], "emails", "reserved", 0)  # fmt: skip
            assert client.status(ids[1]).state is JobState.RUNNING
            for job in got:
                bs.delete(job)
            assert [client.status(i).state for i in ids] == [JobState.SUCCEEDED] * 3
            with pytest.raises(greenstalk.NotFoundError):
                bs.stats_job(ids[0])  # deleted: gone, for a beanstalk client
            with pytest.raises(greenstalk.TimedOutError):
                bs.reserve(timeout=0)


def test_tubes_watch_ignore_and_stats(server: Any) -> None:
    _, addr = server
    with greenstalk.Client(addr) as bs:
        assert bs.using() == "default" and bs.watching() == ["default"]
        assert bs.watch("a") == 2 and bs.watch("a") == 2 and bs.watch("b") == 3
        assert bs.ignore("default") == 2
        assert sorted(bs.watching()) == ["a", "b"]
        bs.ignore("a")
        with pytest.raises(greenstalk.NotIgnoredError):
            bs.ignore("b")
        bs.use("a")
        bs.put("x")
        assert {"default", "a", "b"} <= set(bs.tubes())
        tube = bs.stats_tube("a")
        assert (tube["name"], tube["current-jobs-ready"], tube["current-using"]) == ("a", 1, 1)
        with pytest.raises(greenstalk.NotFoundError):
            bs.stats_tube("never-named")
        stats = bs.stats()
        assert stats["version"] == "1.12" and stats["current-jobs-ready"] == 1
        assert stats["cmd-put"] == 1 and stats["current-connections"] == 1


def test_release_bury_touch(server: Any) -> None:
    proc, addr = server
    with greenstalk.Client(addr) as bs, Client(proc.address) as client:
        job_id = bs.put("work", ttr=30)
        job = bs.reserve(timeout=5)
        assert job.id == job_id
        bs.release(job)
        assert bs.stats_job(job_id)["state"] == "ready"
        job = bs.reserve(timeout=5)
        assert (job.id, bs.stats_job(job_id)["reserves"]) == (job_id, 2)
        time.sleep(1.1)
        before = bs.stats_job(job_id)["time-left"]
        assert before <= 28
        bs.touch(job)
        assert bs.stats_job(job_id)["time-left"] > before
        bs.bury(job)
        assert bs.stats_job(job_id)["state"] == "buried"
        dead = client.status(job_id)
        assert dead.state is JobState.DEAD and dead.error is not None
        assert dead.error.kind == "buried"
        bs.delete(job_id)  # a buried job, by any connection
        with pytest.raises(greenstalk.NotFoundError):
            bs.peek(job_id)


def test_another_connections_job_is_not_found(server: Any) -> None:
    _, addr = server
    with greenstalk.Client(addr) as a, greenstalk.Client(addr) as b:
        job_id = a.put("mine")
        job = a.reserve(timeout=5)
        for action in (b.delete, b.release, b.bury, b.touch):
            with pytest.raises(greenstalk.NotFoundError):
                action(greenstalk.Job(job_id, "mine"))
        a.delete(job)


def test_a_killed_connections_job_comes_back(server: Any) -> None:
    proc, addr = server
    with greenstalk.Client(addr) as producer:
        job_id = producer.put("survives its consumer", ttr=600)
    # a consumer reserves it and dies without a word (its socket reset)
    raw = socket.create_connection(addr)
    raw.sendall(b"reserve-with-timeout 5\r\n")
    reply = b""
    while not reply.endswith(b"survives its consumer\r\n"):
        reply += raw.recv(4096)
    assert reply.startswith(b"RESERVED %d " % job_id)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()
    # then another consumer gets it at once, not after its 600 s TTR
    with greenstalk.Client(addr) as consumer, Client(proc.address) as client:
        job = consumer.reserve(timeout=10)
        assert (job.id, job.body) == (job_id, "survives its consumer")
        assert client.status(job_id).lost == 0  # given back, not lost
        consumer.delete(job)


def test_bad_requests_get_beanstalkd_error_words(server: Any) -> None:
    _, addr = server
    with socket.create_connection(addr) as s:
        s.sendall(b"stats \r\nput 1 0 1\r\nfrobnicate\r\nput 0 0 1 70000\r\n" + b"x" * 70000
                  + b"\r\nput 0 0 1 2\r\nabXYuse -x\r\nlist-tube-used\r\n")  # fmt: skip
        want = (b"BAD_FORMAT\r\nBAD_FORMAT\r\nUNKNOWN_COMMAND\r\nJOB_TOO_BIG\r\n"
                b"EXPECTED_CRLF\r\nBAD_FORMAT\r\nUSING default\r\n")  # fmt: skip
        got = b""
        s.settimeout(10)
        while len(got) < len(want):
            got += s.recv(4096)
        assert got == want


def test_refuses_an_exposed_address_without_insecure(tmp_path: Any) -> None:
    from tests.procs import cli

    out = cli("server", "--data", str(tmp_path / "d"), "--port", "0", "--http", "off",
              "--token", "t", "--beanstalk", "0.0.0.0:0", timeout=30)  # fmt: skip
    assert out.returncode != 0
    assert "beanstalkd protocol has no authentication" in out.stderr


def test_release_delay_bury_kick_peek(server: Any) -> None:
    proc, addr = server
    with greenstalk.Client(addr, use="t", watch="t") as bs, Client(proc.address) as client:
        a, b, c = bs.put("a", priority=10), bs.put("b", priority=10), bs.put("c", priority=99)
        assert bs.peek_ready().id == a
        with pytest.raises(greenstalk.NotFoundError):
            bs.peek_delayed()
        # a released with a delay is delayed, at its new priority
        job = bs.reserve(timeout=5)
        assert job.id == a
        bs.release(job, priority=5, delay=30)
        stats = bs.stats_job(a)
        assert (stats["state"], stats["pri"], stats["delay"]) == ("delayed", 5, 30)
        assert 28 <= stats["time-left"] <= 30
        assert bs.peek_delayed().id == a and bs.peek_ready().id == b
        # b buried at priority 1, then c: the oldest buried is b
        for want, pri in ((b, 1), (c, 2)):
            job = bs.reserve(timeout=5)
            assert job.id == want
            bs.bury(job, priority=pri)
        assert bs.peek_buried().id == b
        assert client.status(b).priority == 1 and client.status(b).state is JobState.DEAD
        # kick: buried ones first (oldest first), then the delayed one
        assert bs.kick(1) == 1 and bs.stats_job(b)["state"] == "ready"
        assert bs.kick(10) == 1 and bs.stats_job(c)["state"] == "ready"
        assert bs.kick(10) == 1 and bs.stats_job(a)["state"] == "ready"
        assert bs.kick(10) == 0
        # most urgent first: a (5) after b (1), c (2)
        got = [bs.reserve(timeout=5) for _ in range(3)]
        assert [j.id for j in got] == [b, c, a]
        bs.bury(got[0])
        bs.kick_job(b)
        assert bs.stats_job(b)["state"] == "ready"
        for job in got[1:]:
            bs.delete(job)


def test_ttr_is_the_jobs_own_lease(server: Any) -> None:
    proc, addr = server
    with greenstalk.Client(addr) as bs, Client(proc.address) as client:
        short, long_ = bs.put("short", ttr=2), bs.put("long", ttr=600)
        first, second = bs.reserve(timeout=5), bs.reserve(timeout=5)
        assert (first.id, second.id) == (short, long_)
        assert bs.stats_job(short)["time-left"] <= 2
        assert bs.stats_job(long_)["time-left"] >= 598
        bs.touch(first)  # only this job's lease moves
        assert bs.stats_job(long_)["time-left"] >= 597
        # the short one's TTR runs out: it is queued again, the long one stays reserved
        deadline = time.monotonic() + 20
        while bs.stats_job(short)["state"] != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert bs.stats_job(short)["timeouts"] == 1
        assert client.status(long_).state is JobState.RUNNING
        bs.delete(second)


def test_an_answered_put_survives_kill_9(tmp_path: Any, server_proc: Any) -> None:
    import threading

    data = tmp_path / "data"
    first = server_proc("--beanstalk", "127.0.0.1:0", data=data)
    m = first.wait_for(r"beanstalk listener on (\S+):(\d+)")
    addr = (m.group(1), int(m.group(2)))
    answered: list[tuple[int, bytes]] = []
    stop = threading.Event()

    def put_forever() -> None:
        try:
            with greenstalk.Client(addr, use="durable", encoding=None) as bs:
                k = 0
                while not stop.is_set():
                    body = b"job %d" % k
                    answered.append((bs.put(body, priority=k % 7), body))
                    k += 1
        except (OSError, greenstalk.Error):
            return  # the server died under us: the put in flight may or may not exist

    producer = threading.Thread(target=put_forever)
    producer.start()
    deadline = time.monotonic() + 30
    while len(answered) < 300:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # When the server is killed with -9 mid-put and started again on the same data
    first.kill()
    stop.set()
    producer.join(10)
    second = server_proc("--beanstalk", "127.0.0.1:0", data=data)
    m = second.wait_for(r"beanstalk listener on (\S+):(\d+)")
    # Then every put that was answered INSERTED is there, body and all
    with greenstalk.Client((m.group(1), int(m.group(2))), use="durable", watch="durable",
                           encoding=None) as bs:  # fmt: skip
        for job_id, body in answered:
            assert (bs.peek(job_id).body, bs.stats_job(job_id)["tube"]) == (body, "durable")
        # (and at most the one put in flight besides: its answer was lost, not its job)
        ready = bs.stats_tube("durable")["current-jobs-ready"]
        assert ready in (len(answered), len(answered) + 1)


def test_deadline_soon(server: Any) -> None:
    _, addr = server
    with greenstalk.Client(addr) as bs:
        first, second = bs.put("a", ttr=1), bs.put("b", ttr=1)
        # in the last second of a reservation a job still comes at once ...
        assert bs.reserve(timeout=5).id == first
        assert bs.reserve(timeout=5).id == second
        # ... but nothing is waited for: DEADLINE_SOON, not TIMED_OUT after 5 s
        with pytest.raises(greenstalk.DeadlineSoonError):
            bs.reserve(timeout=5)


def test_reserve_job(server: Any) -> None:
    _, addr = server
    with greenstalk.Client(addr) as bs, greenstalk.Client(addr) as other:
        a, b, c = bs.put("a"), bs.put("b", delay=600), bs.put("c")
        # a ready job out of its turn, a delayed one: reserved by id
        assert bs.reserve_job(c).id == c and bs.stats_job(c)["state"] == "reserved"
        assert bs.reserve_job(b).body == "b"
        # another connection's reservation is not for the taking
        with pytest.raises(greenstalk.NotFoundError):
            other.reserve_job(c)
        # a buried job comes back reserved
        bs.bury(greenstalk.Job(c, "c"))
        job = other.reserve_job(c)
        assert (job.id, other.stats_job(c)["state"]) == (c, "reserved")
        assert bs.reserve(timeout=5).id == a  # the rest took nothing out of turn
        with pytest.raises(greenstalk.NotFoundError):
            bs.reserve_job(999_999)


def test_a_pause_tube_outlives_its_server_and_ends_on_time(server_proc: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """pause-tube's end is the store's: the server that was asked stops (SIGTERM),
    another starts on the same data, and the pause ends on time there — not at once
    (a pause lost with its server), not never (a timer lost with its server)."""
    data = tmp_path / "data"
    first = server_proc("--beanstalk", "127.0.0.1:0", data=data)
    m = first.wait_for(r"beanstalk listener on (\S+):(\d+)")
    with greenstalk.Client((m.group(1), int(m.group(2)))) as bs:
        bs.use("mail")
        job_id = bs.put("later")
        asked = time.time()
        bs.pause_tube("mail", 5)
        answered = time.time()
    with Client(first.address) as client:
        ends = client.pauses()
    assert set(ends) == {"mail"}
    end = ends["mail"]
    assert end is not None and asked + 5 <= end <= answered + 5  # 5 s from the ask
    assert first.stop() == 0

    second = server_proc("--beanstalk", "127.0.0.1:0", data=data)
    m = second.wait_for(r"beanstalk listener on (\S+):(\d+)")
    with Client(second.address) as client:
        assert client.pauses() == {"mail": end}  # the same end, from the store
    with greenstalk.Client((m.group(1), int(m.group(2))), watch="mail") as bs:
        left = bs.stats_tube("mail")["pause-time-left"]
        assert 0 <= left <= 5
        job = bs.reserve(timeout=30)  # waits for the end, which the new server keeps
        came = time.time()
        assert job.id == job_id and job.body == "later"
        assert came >= end  # not before the pause ended
        bs.delete(job)
    with Client(second.address) as client:
        assert client.pauses() == {}
