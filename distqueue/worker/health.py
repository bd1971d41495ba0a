"""A worker's health file, and the probe that reads it (``distqueue worker --check``).

A worker started with ``--health-file PATH`` rewrites PATH every few seconds from
its event loop (atomically: a new file renamed over the old): its pid, and per
worker instance whether it is connected, what it runs and what it finished. A
probe — a Kubernetes exec probe, a systemd watchdog, a cron job — runs
``distqueue worker --check --health-file PATH``: exit 0 while the file is fresh and
its process alive, 1 with the reason otherwise. A worker whose event loop is
frozen (a task that blocks it, a deadlock) stops writing and fails the probe; one
that is waiting out a server or store outage keeps passing — it reconnects by
itself, and restarting it would not help — and the probe prints ``disconnected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distqueue import codec

if TYPE_CHECKING:
    from distqueue.worker.worker import Worker

__all__ = ["HEALTH_EVERY", "check_health", "keep_health", "write_health"]

#: seconds between rewrites of the health file
HEALTH_EVERY = 5.0


def write_health(path: str, workers: Sequence[Worker], *, stopping: bool = False) -> None:
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "at": time.time(),
        "every": HEALTH_EVERY,
        "stopping": stopping,
        "workers": [
            {"id": w.id, "connected": w.connected, "running": len(w.running),
             "processed": w.processed}
            for w in workers
        ],
    }  # fmt: skip
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(codec.dumps(state))
    os.replace(tmp, path)


async def keep_health(path: str, workers: Sequence[Worker]) -> None:
    """Rewrite the health file every HEALTH_EVERY seconds until cancelled; then
    remove it (a stopped worker is not a healthy one)."""
    try:
        while True:
            try:
                write_health(path, workers)
            except OSError as exc:  # a full disk is weather: try again next time
                import logging

                logging.getLogger("distqueue.worker").warning(
                    "cannot write the health file %s: %s", path, exc
                )
            await asyncio.sleep(HEALTH_EVERY)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def check_health(path: str, max_age: float | None = None) -> tuple[bool, str]:
    """(healthy, what to print) for the worker whose health file is ``path``."""
    try:
        with open(path, "rb") as f:
            state = codec.loads(f.read(), "health file")
    except FileNotFoundError:
        return False, f"unhealthy: no health file {path} (the worker is not running)"
    except (OSError, ValueError, Exception) as exc:
        return False, f"unhealthy: cannot read the health file {path}: {exc}"
    age = time.time() - float(state.get("at", 0))
    limit = max_age if max_age is not None else 3 * float(state.get("every", HEALTH_EVERY))
    pid = int(state.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, f"unhealthy: the worker (pid {pid}) is gone"
    except PermissionError:
        pass  # alive, another user's
    if age > limit:
        return False, (
            f"unhealthy: the worker (pid {pid}) last wrote its health file {age:.0f}s ago"
            f" (more than {limit:.0f}s): its event loop is blocked or frozen"
        )
    workers = state.get("workers", [])
    parts = [
        f"{w['id']} {'connected' if w['connected'] else 'disconnected'},"
        f" {w['running']} running, {w['processed']} done"
        for w in workers
    ]
    return True, f"healthy: pid {pid}, {age:.1f}s ago: " + "; ".join(parts)
