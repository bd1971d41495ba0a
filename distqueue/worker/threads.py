"""Sync tasks on threads, with the event loop woken once per batch of finished jobs.

A ThreadPoolExecutor hands each job's outcome back through its own future, and the
loop through ``call_soon_threadsafe`` (a write to its self-pipe, a wake-up, a
callback) per job; with thousands of short jobs a second that per-job hand-off is
most of the worker's time. Here the threads put outcomes on one list and only the
thread that finds it empty wakes the loop: whatever finished meanwhile is handed
over in the same wake-up, as one batch.

Threads start as jobs need them (up to ``max_threads``): short jobs keep a few
threads busy rather than hundreds contending for the GIL; slow ones (I/O) get up to
the worker's concurrency.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ThreadRunner"]

#: what a finished job hands back: (its key, the function's return value or exception)
Done = tuple[Any, Any, BaseException | None]


class ThreadRunner:
    """Run ``fn(*args)`` on a thread; ``on_done(batch)`` gets ``(key, value, error)``
    of finished calls on the loop, in batches."""

    def __init__(
        self,
        max_threads: int,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[list[Done]], None],
        name: str = "dq-job",
    ) -> None:
        self.max_threads = max_threads
        self._loop = loop
        self._on_done = on_done
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Any, Callable[..., Any], tuple[Any, ...]] | None]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done: list[Done] = []
        self._threads: list[threading.Thread] = []
        #: threads waiting for work, and calls queued that no thread took yet
        self._idle = 0
        self._waiting = 0
        self._closed = False

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._waiting += 1
            grow = self._waiting > self._idle and len(self._threads) < self.max_threads
            if grow:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
        self._queue.put((key, fn, args))
        if grow:
            thread.start()

    def close(self) -> None:
        """Let the threads end once the calls queued are done (none is waited for:
        they are daemon threads, a stuck one does not hold the process)."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
                if item is not None:
                    self._waiting -= 1
            if item is None:
                return
            key, fn, args = item
            value: Any = None
            error: BaseException | None = None
            try:
                value = fn(*args)
            except BaseException as exc:  # SystemExit and all: the job's, not the thread's
                error = exc
            with self._lock:
                self._done.append((key, value, error))
                if len(self._done) > 1:
                    continue  # the loop is called already and takes this one too
            try:
                self._loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _deliver(self) -> None:
        with self._lock:
            batch, self._done = self._done, []
        if batch:
            self._on_done(batch)
