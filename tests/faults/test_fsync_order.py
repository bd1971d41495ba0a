"""Every SUBMIT and ACK reply leaves the server only after the fsync that covers it.

A kill -9 test cannot prove this: SQLite's committed-but-not-fsynced data survives
a killed process (it is in the page cache); only a power loss or an OS crash
would show it. So this test watches the system calls instead (R3 in
/work/shared/research/reliability.md; Redis' "AOF fsync always barrier" test does
the same for Redis). The server runs under

    strace -f -ttt -yy -s 8192 -e trace=openat,fsync,fdatasync,write,writev,
           sendto,sendmsg,pwrite64,pwritev,pwritev2

(``-yy`` names each fd's file or socket on every line, ``-s 8192`` prints whole
4 KiB WAL pages), while this test drives it one request at a time through one
client connection (SUBMITs, single and batched) and one raw worker connection
(FETCH, then an ACK per job). Every job's args carry a unique tag, and every ACK's
result another one, so the trace shows when each lands in the WAL.

What it proves, for every SUBMIT reply (``:<id>`` or an array of ids) on the
client's socket and every ACK reply (``+OK``) on the worker's socket:

1. each tag of that request was written to the ``-wal`` file before the reply was
   written (the change is in the WAL, not only in memory), and
2. after the last such WAL write completed, an fsync/fdatasync of the ``-wal`` fd
   was issued and returned 0, and it returned before the reply's write began.

Order is the order of strace's own lines (one tracer sees every thread's calls;
a call interrupted by another thread's shows ``<unfinished ...>`` at its start
and ``<... resumed>`` at its end), so "before" is causal, not a clock comparison.
Because the driver waits for each reply before the next request, no later
transaction can rewrite a page holding a tag before that reply: the last WAL
write of a tag before its reply is that request's own commit.

It does not prove the fsync reaches the platter (that is the disk's and the
kernel's promise), nor anything about FETCH replies, which the server sends before
their claim's commit on purpose (docs/lifecycle.md, Durability). The same check on
``--durability normal`` (no fsync per commit) must find violations: the negative
control that shows the check can fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distqueue import codec
from distqueue.client import Client
from distqueue.client.connection import Connection
from tests.procs import CLI, LISTENING, Proc

pytestmark = pytest.mark.faults

TRACED = "openat,fsync,fdatasync,write,writev,sendto,sendmsg,pwrite64,pwritev,pwritev2"
WRITES = frozenset({"write", "writev", "sendto", "sendmsg", "pwrite64", "pwritev", "pwritev2"})
SYNCS = frozenset({"fsync", "fdatasync"})
TYPE = "fsync.probe"
ROUNDS = 60

_LINE = re.compile(r"^(\d+)\s+\d+\.\d+\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$", re.S)
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$", re.S)
_FD = re.compile(r"^(\d+)<(TCP:\[[^\]]*\]|[^>]*)>")
_RET = re.compile(r"\)\s+=\s+(-?\d+)(?:\s+\w+\s+\(.*\))?\s*$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_TAG = re.compile(r"(?:SUBTAG|ACKTAG)\d{6}")


@dataclass
class Call:
    pid: int
    name: str
    fd_path: str
    data: str
    entry: int
    exit: int = -1
    ret: int | None = None


@dataclass
class Driven:
    """What the driver sent, in order, and which sockets it used."""

    client_port: int
    worker_port: int
    submits: list[tuple[list[str], list[int]]] = field(default_factory=list)
    acks: list[tuple[str, int]] = field(default_factory=list)


def parse_trace(path: Path) -> list[Call]:
    """strace -f output -> calls, with the line index of their entry and exit."""
    calls: list[Call] = []
    pending: dict[int, Call] = {}
    with path.open(errors="replace") as f:
        for index, raw in enumerate(f):
            m = _LINE.match(raw.rstrip("\n"))
            if not m:
                continue
            pid, rest = int(m.group(1)), m.group(2)
            resumed = _RESUMED.match(rest)
            if resumed:
                call = pending.pop(pid, None)
                if call is not None:
                    call.exit = index
                    ret = _RET.search(resumed.group(2))
                    call.ret = int(ret.group(1)) if ret else None
                    if call.name in WRITES and not call.data:
                        call.data = "".join(_STRING.findall(resumed.group(2)))
                continue
            m2 = _CALL.match(rest)
            if not m2:
                continue  # signals, exits
            name, args = m2.group(1), m2.group(2)
            fd = _FD.match(args)
            call = Call(pid, name, fd.group(2) if fd else "", "", entry=index)
            if name in WRITES:
                call.data = "".join(_STRING.findall(args))
            calls.append(call)
            if rest.endswith("<unfinished ...>"):
                pending[pid] = call
            else:
                call.exit = index
                ret = _RET.search(rest)
                call.ret = int(ret.group(1)) if ret else None
    return calls


def _socket_of(call: Call, port: int) -> bool:
    return call.fd_path.startswith("TCP:[") and call.fd_path.endswith(f"->127.0.0.1:{port}]")


def violations(calls: list[Call], driven: Driven) -> tuple[list[str], dict[str, int]]:
    """Check every SUBMIT and ACK reply (see the module docstring)."""
    wal_writes: dict[str, list[int]] = {}  # tag -> exit indexes of WAL writes holding it
    syncs: list[tuple[int, int]] = []  # (entry, exit) of successful WAL fsyncs
    submit_replies: list[Call] = []
    ack_replies: list[Call] = []
    for call in calls:
        if call.exit < 0:
            continue  # never finished (the process ended under it)
        if call.fd_path.endswith("-wal"):
            if call.name in WRITES:
                for tag in set(_TAG.findall(call.data)):
                    wal_writes.setdefault(tag, []).append(call.exit)
            elif call.name in SYNCS and call.ret == 0:
                syncs.append((call.entry, call.exit))
        elif call.name not in WRITES:
            continue
        elif _socket_of(call, driven.client_port) and call.data[:1] in (":", "*"):
            submit_replies.append(call)  # an integer or an array: the SUBMIT replies
        elif _socket_of(call, driven.worker_port) and call.data == "+OK\\r\\n":
            ack_replies.append(call)  # only an ACK answers +OK on this connection
    out: list[str] = []
    if len(submit_replies) != len(driven.submits):
        out.append(f"{len(driven.submits)} SUBMITs but {len(submit_replies)} replies traced")
    if len(ack_replies) != len(driven.acks):
        out.append(f"{len(driven.acks)} ACKs but {len(ack_replies)} +OK replies traced")
    checks = [(reply, tags, f"SUBMIT of {ids}") for reply, (tags, ids)
              in zip(submit_replies, driven.submits, strict=False)]  # fmt: skip
    checks += [(reply, [tag], f"ACK of job {job_id}") for reply, (tag, job_id)
               in zip(ack_replies, driven.acks, strict=False)]  # fmt: skip
    for reply, (_, ids) in zip(submit_replies, driven.submits, strict=False):
        traced = [int(i) for i in re.findall(r":(\d+)\\r\\n", reply.data)]
        if traced != ids:
            out.append(f"reply {reply.data!r} traced where ids {ids} were answered")
    for reply, tags, what in checks:
        last = 0
        for tag in tags:
            before = [i for i in wal_writes.get(tag, []) if i < reply.entry]
            if not before:
                out.append(f"{what}: replied (line {reply.entry}) before {tag} was in the WAL")
                continue
            last = max(last, max(before))
        if not any(last < entry and end < reply.entry for entry, end in syncs):
            out.append(
                f"{what}: replied (line {reply.entry}) with no WAL fsync between its last"
                f" WAL write (line {last}) and the reply"
            )
    stats = {"submit_replies": len(submit_replies), "ack_replies": len(ack_replies),
             "wal_syncs": len(syncs), "wal_tags": len(wal_writes)}  # fmt: skip
    return out, stats


def _server_pid(proc: Proc) -> int:
    """The pid of the server strace started (strace's only child)."""
    children = Path(f"/proc/{proc.popen.pid}/task/{proc.popen.pid}/children").read_text().split()
    assert len(children) == 1, f"strace has children {children}"
    return int(children[0])


def drive(address: str, rounds: int) -> Driven:
    """One request at a time: SUBMIT (1 or 2-5 jobs), FETCH them, ACK each."""
    worker = Connection(address, role="worker", hello=[
        "ID", "fsync-probe", "TYPES", TYPE, "QUEUES", "default", "CONCURRENCY", "5",
    ])  # fmt: skip
    client = Client(address)
    try:
        worker.call("PING")  # connects (HELLO)
        client.ping()
        assert worker._sock is not None and client.connection._sock is not None
        driven = Driven(client_port=client.connection._sock.getsockname()[1],
                        worker_port=worker._sock.getsockname()[1])  # fmt: skip
        n_tag = 0
        for i in range(rounds):
            n = 1 if i % 3 else 2 + i % 4
            tags = [f"SUBTAG{n_tag + j:06d}" for j in range(n)]
            n_tag += n
            if n == 1 and i % 2:
                ids = [client.submit(TYPE, tags[0])]  # SUBMIT {spec}: an integer reply
            else:  # SUBMIT [{spec}, ...]: an array reply
                ids = client.submit_many([{"type": TYPE, "args": [t]} for t in tags])
            driven.submits.append((tags, ids))
            for job_id, token, _meta, _payload in worker.call("FETCH", n, 5):
                tag = f"ACKTAG{job_id:06d}"
                worker.call("ACK", job_id, token, codec.dumps({"r": tag}))
                driven.acks.append((tag, job_id))
        return driven
    finally:
        worker.close()
        client.close()


def traced_run(tmp_path: Path, durability: str, rounds: int = ROUNDS) -> tuple[list[str], dict]:
    if shutil.which("strace") is None:
        message = "strace is not installed: the fsync-order check cannot run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    trace = tmp_path / f"server-{durability}.trace"
    proc = Proc(["strace", "-f", "-ttt", "-yy", "-s", "8192", "-e", f"trace={TRACED}",
                 "-o", str(trace), *CLI, "server", "--port", "0",
                 "--data", str(tmp_path / f"data-{durability}"), "--no-console",
                 "--durability", durability])  # fmt: skip
    try:
        m = proc.wait_for(LISTENING.pattern, timeout=60)
        driven = drive(f"{m.group(1)}:{m.group(2)}", rounds)
        # stop the server itself, strace's child (strace follows it out)
        os.kill(_server_pid(proc), signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.alive:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    calls = parse_trace(trace)
    return violations(calls, driven)


@pytest.mark.timeout(240)
def test_submit_and_ack_replies_follow_the_fsync_that_covers_them(tmp_path: Path) -> None:
    found, stats = traced_run(tmp_path, "full")
    assert stats["submit_replies"] == ROUNDS and stats["ack_replies"] > ROUNDS, stats
    assert not found, f"{len(found)} replies before their fsync ({stats}):\n" + "\n".join(
        found[:20]
    )


@pytest.mark.timeout(240)
def test_the_check_catches_replies_without_fsync(tmp_path: Path) -> None:
    # --durability normal does not fsync per commit: the check must say so, for
    # nearly every reply (else it could not catch a server that replies early)
    found, stats = traced_run(tmp_path, "normal", rounds=20)
    assert stats["submit_replies"] == 20, stats
    missing = [v for v in found if "no WAL fsync" in v]
    assert len(missing) >= 20, (stats, found[:10])
