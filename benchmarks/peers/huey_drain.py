"""Drain rate of Huey on this machine, for a same-day ratio against `distqueue bench`.

Huey is the fastest Python peer the benchmark issue quotes (3,500-6,300 jobs/s
drain on Redis). This script measures it here, the way `distqueue bench`
measures distqueue's drain: N no-op tasks already queued, then run by the
consumer; the clock starts when the consumer takes the first task and stops
when the last one has run.

Huey gets its best case: its own redis-server on a free port with no
persistence at all (distqueue's figure is with an fsync per commit).

    python -m venv /tmp/peers && /tmp/peers/bin/pip install huey redis
    /tmp/peers/bin/python benchmarks/peers/huey_drain.py -n 20000 -k thread -w 8

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
import textwrap
import time

TASKS = """
import os
from huey import RedisHuey
huey = RedisHuey("bench", host="127.0.0.1", port=int(os.environ["BENCH_REDIS_PORT"]))

@huey.task()
def noop():
    return None

@huey.task()
def mark():
    return "done"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="tasks per run")
    ap.add_argument("-w", "--workers", type=int, default=8, help="consumer workers")
    ap.add_argument("-k", "--kind", default="process", choices=["thread", "process"])
    ap.add_argument("--repeat", type=int, default=3)
    opts = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="huey-bench-")
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    os.environ["BENCH_REDIS_PORT"] = str(port)
    with open(os.path.join(tmp, "hueytasks.py"), "w") as f:
        f.write(textwrap.dedent(TASKS))
    sys.path.insert(0, tmp)
    deadline = time.monotonic() + 10
    while True:  # until redis-server answers
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    import hueytasks  # type: ignore[import-not-found]

    huey = hueytasks.huey
    rates = []
    try:
        for _ in range(opts.repeat):
            huey.flush()
            for _ in range(opts.n):
                hueytasks.noop()
            last = hueytasks.mark()
            queued = huey.pending_count()
            consumer = subprocess.Popen(
                [sys.executable, "-m", "huey.bin.huey_consumer", "hueytasks.huey",
                 "-w", str(opts.workers), "-k", opts.kind, "-q"],
                cwd=tmp, env={**os.environ, "PYTHONPATH": tmp},
            )  # fmt: skip
            while huey.pending_count() >= queued:  # until the first task is taken
                time.sleep(0.0005)
            t0 = time.perf_counter()
            # poll every millisecond: Huey's own blocking get() sleeps with a growing
            # backoff and would add up to a second to the run
            while last.get() != "done":
                time.sleep(0.001)
                if time.perf_counter() - t0 > 300:
                    raise TimeoutError("the consumer did not finish in 300 s")
            t1 = time.perf_counter()
            consumer.terminate()
            consumer.wait()
            rates.append(opts.n / (t1 - t0))
    finally:
        redis.kill()
    print(
        f"huey {opts.kind} x{opts.workers}: drain {statistics.median(rates):,.0f} jobs/s "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {opts.n} tasks, {len(rates)} runs)"
    )


if __name__ == "__main__":
    main()
