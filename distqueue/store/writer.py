"""One thread that runs store operations in order and commits them in groups.

The embedded store's whole state (the SQLite connection and the in-memory
indexes beside it) belongs to this thread, so operations need no locks and are
atomic by construction: each runs to its end before the next starts. Callers on
any event loop await a future; the thread takes every operation waiting in its
queue, runs them in one transaction, commits once (one fsync for the group), and
only then resolves their futures — so no caller hears "done" before its change
is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from distqueue.errors import DistQueueError, StoreError

__all__ = ["Writer"]

T = TypeVar("T")
log = logging.getLogger("distqueue.store")

_STOP = object()
#: the most operations committed in one transaction
MAX_BATCH = 4096


class _Op:
    __slots__ = ("args", "durable", "fn", "fut", "loop")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[Any],
        durable: bool,
    ) -> None:
        self.fn = fn
        self.args = args
        self.loop = loop
        self.fut = fut
        self.durable = durable


def _settle(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, exc in items:
        if fut.done():  # the caller gave up waiting (cancelled); the operation still ran
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


class Writer:
    """Runs callables on one thread inside ``begin``/``commit``, many per commit.

    An operation that raises a DistQueueError must have changed nothing (operations
    validate before they write); its caller gets the error and the batch goes on.
    Any other exception (an I/O error, a bug) leaves the batch half-applied, so the
    batch is rolled back, every caller in it gets a StoreError, and the writer is
    broken from then on: the process must reopen the store from disk.
    """

    def __init__(
        self,
        name: str,
        *,
        begin: Callable[[], None],
        commit: Callable[[], None],
        rollback: Callable[[], None],
    ) -> None:
        self._begin = begin
        self._commit = commit
        self._rollback = rollback
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._broken: str | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._init: Callable[[], None] = lambda: None
        self._finish: Callable[[], None] = lambda: None

    async def start(self, init: Callable[[], None], finish: Callable[[], None]) -> None:
        """Start the thread, run ``init`` on it; ``finish`` runs on it when it stops."""
        self._init = init
        self._finish = finish
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, self._started.wait)
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    async def call(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run ``fn(*args)`` on the writer thread; return once it is committed.

        ``durable=False``: return as soon as it has run, before its group is
        committed. Only for operations whose loss in a crash is harmless because
        nothing was promised: a claim (the job is simply queued again after a
        restart, and the worker's late ACK refused) or a lease extension.
        """
        if self._closed:
            raise StoreError("the store is closed")
        if self._broken is not None:
            raise StoreError(f"the store failed and must be reopened: {self._broken}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Op(fn, args, loop, fut, durable))
        return await fut

    async def close(self) -> None:
        """Run what is queued, then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._init()
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            self._loop()
        finally:
            try:
                self._finish()
            except Exception:
                log.exception("closing the store failed")

    def _loop(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            batch = [get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            ops = [op for op in batch if op is not _STOP]
            if ops:
                self._run_batch(ops)
            if len(ops) != len(batch):
                # close() puts _STOP after its flag is set, so nothing follows it
                return

    def _run_batch(self, ops: list[_Op]) -> None:
        done: list[tuple[_Op, Any, BaseException | None]] = []
        if self._broken is not None:
            err = StoreError(f"the store failed and must be reopened: {self._broken}")
            done = [(op, None, err) for op in ops]
        else:
            early: list[tuple[_Op, Any, BaseException | None]] = []
            early_sent = False
            try:
                self._begin()
                for op in ops:
                    outcome: tuple[_Op, Any, BaseException | None]
                    try:
                        outcome = (op, op.fn(*op.args), None)
                    except DistQueueError as exc:
                        outcome = (op, None, exc)
                    (done if op.durable else early).append(outcome)
                if early:  # answered before the commit's fsync: see call()
                    self._deliver(early)
                    early_sent = True
                self._commit()
            except BaseException as exc:
                log.exception("store batch failed; the store is now broken")
                self._broken = f"{type(exc).__name__}: {exc}"
                with contextlib.suppress(Exception):
                    self._rollback()
                err = StoreError(f"the store failed and must be reopened: {self._broken}")
                done = [(op, None, err) for op in ops if op.durable or not early_sent]
        self._deliver(done)

    @staticmethod
    def _deliver(done: list[tuple[_Op, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for op, value, error in done:
            by_loop.setdefault(op.loop, []).append((op.fut, value, error))
        for loop, items in by_loop.items():
            # a closed loop raises RuntimeError: nobody is waiting there any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)
