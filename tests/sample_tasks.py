"""Tasks the worker tests run (``distqueue worker --tasks tests.sample_tasks``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time

import distqueue


@distqueue.task
def add(a: int, b: int) -> int:
    return a + b


@distqueue.task
def sleep_sync(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@distqueue.task
async def sleep_async(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@distqueue.task
def hang() -> None:
    while True:
        time.sleep(0.05)


@distqueue.task
async def hang_async() -> None:
    await asyncio.Event().wait()


@distqueue.task(name="progressive")
def progressive(steps: int, pause: float = 0.2) -> str:
    for i in range(steps):
        distqueue.current_job().progress(100 * (i + 1) / steps, f"step {i + 1} of {steps}")
        time.sleep(pause)
    return "done"


@distqueue.task
def checksum() -> str:
    payload = distqueue.current_job().payload or b""
    return hashlib.sha256(payload).hexdigest()


@distqueue.task
def reverse_file() -> distqueue.FileResult:
    src = distqueue.current_job().payload_file()
    fd, out = tempfile.mkstemp()
    with os.fdopen(fd, "wb") as f:
        f.write(src.read_bytes()[::-1])
    return distqueue.FileResult(out, delete=True)


@distqueue.task
def boom(message: str = "boom") -> None:
    raise RuntimeError(message)


@distqueue.task
def whoami() -> int:
    return os.getpid()


@distqueue.task
def my_claim() -> dict[str, int]:
    """What the running job knows of its claim."""
    ctx = distqueue.current_job()
    return {"attempts": ctx.attempts, "token": ctx.token}


@distqueue.task
def fails_once(marker: str) -> str:
    """Fails the first time it runs for ``marker`` (a path it creates), then succeeds."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first try fails")
    return "second try"


@distqueue.task
def collect(*values: object) -> list[object]:
    """Returns its arguments: a workflow test sees what its parents passed on."""
    return list(values)
