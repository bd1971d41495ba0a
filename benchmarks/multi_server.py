"""Drain rate with 1, 2 and 3 distqueue servers on one Redis (docs/scaling.md).

For each server count: a fresh redis-server of its own (no persistence), the
servers on it, 20,000 noop jobs submitted through the first server, then two
worker processes (64 slots each) spread over the servers; the rate is counted
from the first finished job to the last.

    python benchmarks/multi_server.py [--servers 1,2,3] [--jobs 20000] [--runs 2]

Not part of the package or its tests: a measuring tool.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

from distqueue.client import Client

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run(servers: int, jobs: int) -> float:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        rport = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no",
             "--dir", tempfile.mkdtemp(prefix="dq-multi-")],
            stdout=subprocess.DEVNULL,
        ))  # fmt: skip
        wait_port(rport)
        addresses = []
        for _ in range(servers):
            port = free_port()
            procs.append(subprocess.Popen(
                [PY, "-m", "distqueue", "server", "--port", str(port), "--no-console",
                 "--store", f"redis://127.0.0.1:{rport}/0"],
                stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            wait_port(port)
            addresses.append(f"127.0.0.1:{port}")
        with Client(addresses[0]) as client:
            for start in range(0, jobs, 1000):
                client.submit_many([{"type": "noop"}] * min(1000, jobs - start))
            for i in range(2):
                procs.append(subprocess.Popen(
                    [PY, "-m", "distqueue", "worker", "--server", addresses[i % servers],
                     "-c", "64"],
                    stderr=subprocess.DEVNULL,
                ))  # fmt: skip
            first: tuple[float, int] | None = None
            while True:
                done = client.stats()["jobs"]["succeeded"]
                if done and first is None:
                    first = (time.perf_counter(), done)
                if done >= jobs:
                    assert first is not None
                    return (jobs - first[1]) / (time.perf_counter() - first[0])
                time.sleep(0.01)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="1,2,3")
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=2)
    opts = ap.parse_args()
    for n in (int(x) for x in opts.servers.split(",")):
        rates = [run(n, opts.jobs) for _ in range(opts.runs)]
        print(f"{n} server(s): drain " + " / ".join(f"{r:,.0f}" for r in rates) + " jobs/s",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
