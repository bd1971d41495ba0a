"""Does flow control cost the jobs it does not limit? (issue #14's benchmark figure)

Two servers as a user starts them (`distqueue server`, the embedded store,
durable), each with one `distqueue worker` with the shipped defaults serving
`bench.sync` (a plain `def` task) and 1,000 more task types:

- plain: nothing else in the store;
- flow:  100,000 jobs waiting for jobs that never finish (100 blockers in a queue
  no worker serves, 1,000 waiters each), and 1,000 limited types (`rate=1/h`,
  each with 5 jobs queued: one starts, the other 4 stay queued behind their
  limit, parked).

Then N `bench.sync` jobs are submitted in one call and the drain rate is timed
from the first job's start to the last job's finish (the store's own times, as
`distqueue bench` does). The figure is flow / plain, plain and flow alternating,
median of the repeats.

    python benchmarks/flow_drain.py -n 20000 --repeat 3

Not part of the package or its tests: a measuring tool for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distqueue.client import Client

ROOT = Path(__file__).resolve().parents[1]
LIMITED = 1000
WAITING = 100_000
WAITERS_EACH = 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data: str) -> tuple[list[subprocess.Popen[bytes]], str]:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "distqueue", "server", "--port", str(port), "--data", data,
         "--http", "off", "--no-console"], env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with Client(address) as c:
                c.ping()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    worker = subprocess.Popen(
        [sys.executable, "-m", "distqueue", "worker", "--server", address,
         "--tasks", "benchmarks.flow_tasks"], env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return [worker, server], address


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def _succeeded(client: Client) -> int:
    return int(client.stats()["jobs"]["succeeded"])


def _until(client: Client, succeeded: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while _succeeded(client) < succeeded:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {succeeded} jobs did not succeed within {timeout}s")
        time.sleep(0.05)


def _fill_flow(client: Client, waiting: int, limited: int) -> int:
    """The waiting jobs and the limited types; returns the jobs that will succeed."""
    held = waiting // WAITERS_EACH
    blockers = client.submit_many(
        [{"type": "bench.sync", "queue": "held", "check_type": False}] * held
    ) if held else []  # fmt: skip
    for b in blockers:
        client.submit_many([{"type": "bench.sync", "after": [b]}] * WAITERS_EACH)
    for i in range(limited):
        client.set_limit(type=f"lim.{i}", rate="1/h")
    if limited:
        client.submit_many([{"type": f"lim.{i}"} for i in range(limited) for _ in range(5)])
    _until(client, limited)  # one of each limited type ran; 4 each stay queued
    jobs = client.stats()["jobs"]
    assert jobs["waiting"] == waiting and jobs["queued"] == 4 * limited + len(blockers), jobs
    return limited


def _drain(client: Client, n: int, before: int) -> float:
    ids = client.submit_many([{"type": "bench.sync"}] * n)
    _until(client, before + n)
    first, last = client.status(ids[0]), client.status(ids[-1])
    starts = [client.status(i).started_at for i in ids[:50]]
    ends = [client.status(i).finished_at for i in ids[-50:]]
    assert first.started_at is not None and last.finished_at is not None
    return n / (max(e or 0 for e in ends) - min(s or 1e18 for s in starts))


def run(n: int, flow: bool, waiting: int = WAITING, limited: int = LIMITED) -> float:
    with tempfile.TemporaryDirectory(prefix="dq-flow-") as data:
        procs, address = _start(data)
        try:
            with Client(address) as client:
                done = _fill_flow(client, waiting, limited) if flow else 0
                return _drain(client, n, done)
        finally:
            _stop(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--waiting", type=int, default=WAITING, help="waiting jobs (flow run)")
    parser.add_argument("--limited", type=int, default=LIMITED, help="limited types (flow run)")
    args = parser.parse_args()
    plain, flow = [], []
    for _ in range(args.repeat):
        plain.append(run(args.n, False))
        flow.append(run(args.n, True, args.waiting, args.limited))
        print(f"plain {plain[-1]:,.0f} jobs/s   flow {flow[-1]:,.0f} jobs/s", flush=True)
    p, f = statistics.median(plain), statistics.median(flow)
    print(f"median: plain {p:,.0f} jobs/s, flow {f:,.0f} jobs/s: {f / p:.0%} of plain")


if __name__ == "__main__":
    main()
