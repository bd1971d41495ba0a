"""One shared view of the queue per interval, for every reader of the admin port.

A background task asks the service for its stats once per ``interval`` and keeps
the answer, with a short history of the totals for the live charts. /metrics,
/health and every dashboard tab (over Server-Sent Events) read this one object:
their number costs nothing at the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from distqueue.aio import cancel_and_wait

if TYPE_CHECKING:
    from distqueue.server.server import Server

__all__ = ["HISTORY", "Snapshot"]

#: points of history kept for the charts (one per interval: 5 minutes at 1 s)
HISTORY = 300


class Snapshot:
    def __init__(self, server: Server, interval: float = 1.0) -> None:
        self.server = server
        self.interval = interval
        #: the last stats (Service.stats()), None before the first
        self.stats: dict[str, Any] | None = None
        #: monotonic time of the last refresh that reached the store, 0.0: none yet
        self.fresh_at = 0.0
        #: monotonic time of the last refresh
        self.taken_at = 0.0
        #: bumped at each refresh: SSE streams wait for it to move
        self.version = 0
        #: (epoch seconds, succeeded total, dead total, submitted total, queued,
        #: mean task seconds over the interval or None), oldest first
        self.history: deque[tuple[float, int, int, int, int, float | None]] = deque(maxlen=HISTORY)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_duration: tuple[int, float] = (0, 0.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="admin-snapshot")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def refresh(self) -> None:
        service = self.server.service
        stats = await service.stats()  # a store outage: store.ok false, counts empty
        now = time.monotonic()
        self.taken_at = now
        if stats["store"]["ok"]:
            self.fresh_at = now
            totals = stats["totals"]
            metrics = service.metrics
            count = sum(h.count for h in metrics.duration.values())
            total = sum(h.sum for h in metrics.duration.values())
            last_count, last_total = self._last_duration
            mean = (total - last_total) / (count - last_count) if count > last_count else None
            self._last_duration = (count, total)
            self.history.append((
                time.time(), totals.get("succeeded", 0), totals.get("dead", 0),
                totals.get("submitted", 0), stats["jobs"].get("queued", 0), mean,
            ))  # fmt: skip
        self.stats = stats
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self, version: int, timeout: float) -> int:
        """Wait until the snapshot is newer than ``version`` (or ``timeout``); its version."""
        if self.version == version:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
        return self.version

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # stats() answers even while the store fails
                await self.refresh()
            await asyncio.sleep(self.interval)

    def rates(self) -> dict[str, float]:
        """Jobs per second over the last minute of history: succeeded, dead, submitted."""
        if len(self.history) < 2:
            return {"succeeded": 0.0, "dead": 0.0, "submitted": 0.0}
        points = list(self.history)[-61:]
        first, last = points[0], points[-1]
        span = max(last[0] - first[0], 1e-9)
        return {
            "succeeded": (last[1] - first[1]) / span,
            "dead": (last[2] - first[2]) / span,
            "submitted": (last[3] - first[3]) / span,
        }
