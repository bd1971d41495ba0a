"""Drain rate of Debian's beanstalkd with Python consumers, and of distqueue's
beanstalk listener driven the same way, for docs/benchmarks.md.

A reference figure for a same-run comparison, not a test. The script starts each
server of --targets on a free port — `beanstalkd` (in memory, its default),
`beanstalkd-fsync` (a binlog fsynced per write, `-b DIR -f 0`: its durable mode),
`distqueue` (`distqueue server --beanstalk`, a fresh data directory, the shipped
durability: every answered put on disk), `distqueue-normal` (the same with
`--durability normal`: no fsync per commit) — and, each repeat, for each server in
turn, on a fresh tube:

- fill: N jobs put by one producer over a raw socket, pipelined (not measured);
- drain: C consumer processes, each with its own greenstalk client, `reserve` +
  `delete` until the tube is empty; all connect before any starts; the figure is
  N / (last delete - first reserve), over all consumers;
- put_single: N/4 jobs put one at a time with greenstalk, each waiting for its
  INSERTED: jobs/s.

    apt-get install beanstalkd && pip install greenstalk
    python benchmarks/peers/beanstalkd_drain.py -n 20000 --consumers 2 --repeat 3 \
        [--targets beanstalkd,beanstalkd-fsync,distqueue] [--json]
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


def start(target: str, tmp: str) -> tuple[subprocess.Popen[bytes], int, str]:
    """A server of ``target`` on a free port: (process, port, what it is)."""
    port = free_port()
    if target.startswith("distqueue"):
        exe = shutil.which("distqueue") or sys.exit("error: distqueue not found")
        durability = "normal" if target == "distqueue-normal" else "full"
        cmd = [exe, "server", "--data", os.path.join(tmp, "distqueue"), "--port", "0",
               "--http", "off", "--no-console", "--beanstalk", f"{HOST}:{port}",
               "--durability", durability]  # fmt: skip
        what = "distqueue " + subprocess.run([exe, "--version"], capture_output=True,
                                             text=True).stdout.strip().split()[-1]  # fmt: skip
        what += f" (--durability {durability})"
    else:
        binary = shutil.which("beanstalkd") or sys.exit("error: beanstalkd not found")
        fsync = target == "beanstalkd-fsync"
        binlog = os.path.join(tmp, "binlog")
        os.makedirs(binlog, exist_ok=True)
        cmd = [binary, "-l", HOST, "-p", str(port)] + (["-b", binlog, "-f", "0"] if fsync else [])
        what = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout.strip()
        what += " (binlog, fsync per write)" if fsync else " (in memory)"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port, what


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="jobs per drain")
    ap.add_argument("--consumers", type=int, default=2, help="consumer processes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--targets", default="beanstalkd,beanstalkd-fsync,distqueue",
                    help="servers to measure, in turn each repeat")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print a JSON object")
    opts = ap.parse_args()
    targets = [t.strip() for t in opts.targets.split(",") if t.strip()]
    for t in targets:
        if t not in ("beanstalkd", "beanstalkd-fsync", "distqueue", "distqueue-normal"):
            sys.exit(f"error: unknown target {t!r}")

    tmp = tempfile.mkdtemp(prefix="beanstalk-bench-")
    servers: dict[str, tuple[subprocess.Popen[bytes], int, str]] = {}
    figures = {t: {"drain": [], "put_single": []} for t in targets}
    try:
        for t in targets:
            servers[t] = start(t, os.path.join(tmp, t))
        for i in range(opts.repeat):
            for t in targets:
                port = servers[t][1]
                fill(port, f"drain-{i}", opts.n)
                figures[t]["drain"].append(drain(port, f"drain-{i}", opts.n, opts.consumers))
                figures[t]["put_single"].append(put_single(port, f"single-{i}", opts.n // 4))
    finally:
        for proc, _, _ in servers.values():
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    result: dict[str, object] = {
        t: {"server": servers[t][2], **{k: summary(v) for k, v in figures[t].items()}}
        for t in targets
    }
    result["config"] = {
        "n": opts.n, "consumers": opts.consumers, "repeat": opts.repeat,
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
    }  # fmt: skip
    if opts.json:
        print(json.dumps(result, indent=2))
        return
    print(f"n={opts.n}, consumers={opts.consumers} (greenstalk), repeat={opts.repeat}")
    print(f"{'server':<52}{'drain jobs/s':>14}{'min-max':>18}{'put one at a time/s':>22}")
    for t in targets:
        d, p = summary(figures[t]["drain"]), summary(figures[t]["put_single"])
        span = f"{d['min']:,}-{d['max']:,}"
        print(f"{servers[t][2]:<52}{d['median']:>14,}{span:>18}{p['median']:>22,}")


if __name__ == "__main__":
    main()
