"""Drain rate of Debian's beanstalkd with Python consumers, for docs/benchmarks.md.

A reference figure for a same-run comparison with `distqueue bench`, not a test.
The script starts its own beanstalkd on a free port; each repeat, on a fresh tube:

- fill: N jobs put by one producer over a raw socket, pipelined (not measured);
- drain: C consumer processes, each with its own greenstalk client, `reserve` +
  `delete` until the tube is empty; all connect before any starts; the figure is
  N / (last delete - first reserve), over all consumers;
- put_single: N/4 jobs put one at a time with greenstalk, each waiting for its
  INSERTED: jobs/s.

Without --fsync beanstalkd keeps jobs in memory only (its default); with --fsync
it writes a binlog and fsyncs every write (`-b DIR -f 0`), its durable mode.

    apt-get install beanstalkd && pip install greenstalk
    python benchmarks/peers/beanstalkd_drain.py -n 20000 --consumers 2 --repeat 3 [--fsync] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import greenstalk

HOST = "127.0.0.1"
BODY = b'{"type":"bench.sync","args":[]}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def fill(port: int, tube: str, n: int, batch: int = 1000) -> None:
    """Put n jobs into tube, `batch` commands per write, then read their replies."""
    put = b"put 65536 0 60 %d\r\n%s\r\n" % (len(BODY), BODY)
    with socket.create_connection((HOST, port)) as sock, sock.makefile("rb") as replies:
        sock.sendall(b"use %s\r\n" % tube.encode())
        if not replies.readline().startswith(b"USING"):
            raise RuntimeError("use failed")
        for start in range(0, n, batch):
            k = min(batch, n - start)
            sock.sendall(put * k)
            for _ in range(k):
                line = replies.readline()
                if not line.startswith(b"INSERTED"):
                    raise RuntimeError(f"put failed: {line!r}")


def consume(port: int, tube: str, ready: mp.synchronize.Barrier, out: mp.Queue) -> None:
    """Reserve + delete until a 1 s reserve times out; report (count, first, last)."""
    count, first, last = 0, 0.0, 0.0
    with greenstalk.Client((HOST, port), encoding=None, watch=tube) as client:
        ready.wait()
        while True:
            try:
                job = client.reserve(timeout=1)
            except greenstalk.TimedOutError:
                break
            if not count:
                first = time.time()
            client.delete(job)
            last = time.time()
            count += 1
    out.put((count, first, last))


def drain(port: int, tube: str, n: int, consumers: int) -> float:
    ctx = mp.get_context("spawn")
    ready, out = ctx.Barrier(consumers), ctx.Queue()
    procs = [ctx.Process(target=consume, args=(port, tube, ready, out)) for _ in range(consumers)]
    try:
        for p in procs:
            p.start()
        results: list[tuple[int, float, float]] = []
        while len(results) < consumers:  # a consumer that dies reports nothing
            try:
                results.append(out.get(timeout=1))
            except queue.Empty:
                if any(p.exitcode for p in procs):
                    sys.exit("error: a consumer process failed")
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    total = sum(r[0] for r in results)
    if total != n:
        sys.exit(f"error: consumers deleted {total} jobs, expected {n}")
    first = min(r[1] for r in results if r[0])
    last = max(r[2] for r in results if r[0])
    return n / (last - first)


def put_single(port: int, tube: str, n: int) -> float:
    with greenstalk.Client((HOST, port), encoding=None, use=tube) as client:
        start = time.perf_counter()
        for _ in range(n):
            client.put(BODY)
        return n / (time.perf_counter() - start)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values)),
        "min": round(min(values)),
        "max": round(max(values)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="jobs per drain")
    ap.add_argument("--consumers", type=int, default=2, help="consumer processes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fsync", action="store_true", help="binlog with an fsync per write")
    ap.add_argument("--json", action="store_true", help="print a JSON object")
    opts = ap.parse_args()

    binary = shutil.which("beanstalkd") or sys.exit("error: beanstalkd not found")
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout.strip()
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="beanstalkd-bench-")
    cmd = [binary, "-l", HOST, "-p", str(port)] + (["-b", tmp, "-f", "0"] if opts.fsync else [])
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    figures: dict[str, list[float]] = {"drain": [], "put_single": []}
    try:
        wait_port(port)
        for i in range(opts.repeat):
            fill(port, f"drain-{i}", opts.n)
            figures["drain"].append(drain(port, f"drain-{i}", opts.n, opts.consumers))
            figures["put_single"].append(put_single(port, f"single-{i}", opts.n // 4))
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    result: dict[str, object] = {name: summary(v) for name, v in figures.items()}
    result["config"] = {
        "n": opts.n,
        "consumers": opts.consumers,
        "repeat": opts.repeat,
        "fsync": opts.fsync,
        "beanstalkd": version,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    if opts.json:
        print(json.dumps(result, indent=2))
        return
    mode = "binlog, fsync per write" if opts.fsync else "in memory"
    print(f"{version} ({mode}), n={opts.n}, consumers={opts.consumers}, repeat={opts.repeat}")
    print(f"{'figure':<24}{'median':>10}{'min-max':>20}")
    for name, label in [("drain", "drain jobs/s"), ("put_single", "put one at a time /s")]:
        s = summary(figures[name])
        span = f"{s['min']:,}-{s['max']:,}"
        print(f"{label:<24}{s['median']:>10,}{span:>20}")


if __name__ == "__main__":
    main()
