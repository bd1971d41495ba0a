"""One thread that runs store operations in order and commits them in groups.

The embedded store's whole state (the SQLite connection and the in-memory
indexes beside it) belongs to this thread, so operations need no locks and are
atomic by construction: each runs to its end before the next starts. Callers on
any event loop await a future; the thread takes every operation waiting in its
queue, runs them in one transaction, commits once (one fsync for the group), and
only then resolves their futures — so no caller hears "done" before its change
is on disk.

``inline``: the operations the loop that started the writer makes in one turn
are held to its end and run there as one batch when nothing is queued or running
(the same begin/run/commit, under the same lock), saving the two thread wake-ups
of a hand-off — most of the cost of a lone request — and keeping a turn's many
requests in one commit; while the thread is busy they go to it as before. Only for
stores whose commit does not wait for an fsync (``--durability normal``): an fsync
on the loop's thread would stall it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from distqueue.errors import DistQueueError, StoreError

__all__ = ["Writer"]

T = TypeVar("T")
log = logging.getLogger("distqueue.store")

_STOP = object()
#: the most operations committed in one transaction
MAX_BATCH = 4096
#: seconds between two tries to recover a failed store: first, longest
RECOVER_MIN, RECOVER_MAX = 0.05, 2.0
#: threads that run reads (read()) beside the writer thread
READERS = 2


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


def _settle_here(done: list[tuple[_Op, Any, BaseException | None]]) -> None:
    """Outcomes of an inline batch: on the caller's own thread and loop."""
    _settle([(op.fut, value, error) for op, value, error in done])


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
    Any other exception (a full disk, a read-only file, an I/O error) leaves the
    batch half-applied, so the batch is rolled back and every caller in it gets a
    StoreError (retryable: nothing of theirs was stored). The writer is then
    *unavailable* until ``recover`` succeeds: it rebuilds the state from the file
    (which holds every committed batch and nothing else). Each later batch tries
    it first (with a capped backoff between tries) and fails fast with a StoreError
    while it cannot; so the store comes back by itself once the fault is gone.
    """

    def __init__(
        self,
        name: str,
        *,
        begin: Callable[[], None],
        commit: Callable[[], None],
        rollback: Callable[[], None],
        recover: Callable[[], None],
        inline: bool = False,
    ) -> None:
        self.inline = inline
        #: held while a batch runs, on the thread or inline (one at a time)
        self._lock = threading.Lock()
        #: the loop that started the writer: its operations may run inline, and are
        #: held until the end of the loop's turn to run as one batch
        self._home: asyncio.AbstractEventLoop | None = None
        self._held: list[_Op] = []
        self._begin = begin
        self._commit = commit
        self._rollback = rollback
        self._recover = recover
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        #: why the store is unavailable (None while it works); set on the thread
        self._broken: str | None = None
        #: monotonic time the current outage began (0.0: none)
        self._outage_since = 0.0
        self._next_recovery = 0.0
        self._recover_delay = RECOVER_MIN
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._init: Callable[[], None] = lambda: None
        self._finish: Callable[[], None] = lambda: None
        # reads see every operation queued before them (read your writes, in order):
        # operations are numbered as they are queued and counted once settled
        self._numbers = itertools.count(1)
        self._queued = 0
        self._settled = 0
        self._settled_changed = threading.Condition()
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix=f"{name}-read")

    async def start(self, init: Callable[[], None], finish: Callable[[], None]) -> None:
        """Start the thread, run ``init`` on it; ``finish`` runs on it when it stops."""
        self._init = init
        self._finish = finish
        self._home = asyncio.get_running_loop()
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
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        op = _Op(fn, args, loop, fut, durable)
        self._queued = next(self._numbers)
        if self.inline and loop is self._home:
            # held for the end of this turn of the loop: every operation made in it
            # then runs as one batch, here if the writer is idle (see _flush)
            self._held.append(op)
            if len(self._held) == 1:
                loop.call_soon(self._flush)
        else:
            self._queue.put(op)
        return await fut

    def _flush(self) -> None:
        """The operations held in this turn of the home loop: one batch, run here if
        everything before them has settled and the lock is free (the writer thread
        idle), else handed to the thread behind what it has, in order."""
        ops, self._held = self._held, []
        if self._settled + len(ops) == self._queued and self._lock.acquire(False):
            try:
                if self._settled + len(ops) == self._queued:  # (still: another loop)
                    self._run_batch(ops, _settle_here)
                    return
            finally:
                self._lock.release()
        for op in ops:
            self._queue.put(op)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the read-only ``fn(*args)`` on a reader thread (its own connection), so
        a large read never holds up the writer. It runs once every operation queued
        before it has been committed (or has failed): a read sees what came before."""
        if self._closed:
            raise StoreError("the store is closed")
        after = self._queued
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, after, fn, args)

    def settled_here(self) -> bool:
        """True on the home loop when every operation made so far has settled: a
        small read may then run right here, on a reader connection of this thread's
        own, and see them all (the hand-off to a reader thread and back costs several
        times a read of one row). Either durability: a read waits for no fsync."""
        return (
            not self._closed
            and self._settled == self._queued
            and asyncio.get_running_loop() is self._home
        )

    def _read(self, after: int, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._settled_changed:
            while self._settled < after and self._thread.is_alive():
                self._settled_changed.wait(0.5)
        return fn(*args)

    async def close(self) -> None:
        """Run what is queued, then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._readers.shutdown)  # reads in flight end
        self._queue.put(_STOP)
        await loop.run_in_executor(None, self._thread.join)

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
                with self._lock:  # (not under an operation run inline)
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
                with self._lock:
                    self._run_batch(ops, self._deliver)
            if len(ops) != len(batch):
                # close() puts _STOP after its flag is set, so nothing follows it
                return

    @property
    def unavailable(self) -> str | None:
        """Why the store cannot serve right now (None while it can)."""
        return self._broken

    def _try_recover(self) -> bool:
        """Bring a failed store back if its backoff allows a try now; True if it did."""
        now = time.monotonic()
        if now < self._next_recovery:
            return False
        try:
            self._recover()
        except Exception as exc:
            self._failed(exc, now)
            return False
        self._broken = None
        return True

    def _failed(self, exc: BaseException, now: float) -> None:
        """Note a failure: logged once per outage; the next recovery waits a while
        (growing while the failures go on)."""
        self._broken = f"{type(exc).__name__}: {exc}"
        if not self._outage_since:
            self._outage_since = now
            log.error("store writes fail (%s); nothing of the failed batch was stored;"
                      " retrying until they work", self._broken)  # fmt: skip
        self._next_recovery = now + self._recover_delay
        self._recover_delay = min(RECOVER_MAX, self._recover_delay * 2)

    def _run_batch(
        self, ops: list[_Op], deliver: Callable[[list[tuple[_Op, Any, BaseException | None]]], None]
    ) -> None:
        """Run ``ops`` in one transaction; ``deliver`` hands their outcomes back (to
        their loops from the thread; on the spot inline)."""
        done: list[tuple[_Op, Any, BaseException | None]] = []
        if self._broken is not None and not self._try_recover():
            err = StoreError(f"the store is unavailable, retrying: {self._broken}")
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
                    deliver(early)
                    early_sent = True
                self._commit()
            except Exception as exc:
                # the batch is half-applied in memory: roll the file back, and the
                # next batch first rebuilds the memory from it (recover)
                with contextlib.suppress(Exception):
                    self._rollback()
                self._failed(exc, time.monotonic())
                err = StoreError(f"the store failed, nothing was stored: {exc}")
                done = [(op, None, err) for op in ops if op.durable or not early_sent]
            else:
                if self._outage_since:
                    log.warning("store writes work again after %.1fs",
                                time.monotonic() - self._outage_since)  # fmt: skip
                    self._outage_since = 0.0
                    self._recover_delay = RECOVER_MIN
        with self._settled_changed:  # (before the callers hear: see settled_here)
            self._settled += len(ops)
            self._settled_changed.notify_all()
        deliver(done)

    @staticmethod
    def _deliver(done: list[tuple[_Op, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for op, value, error in done:
            by_loop.setdefault(op.loop, []).append((op.fut, value, error))
        for loop, items in by_loop.items():
            # a closed loop raises RuntimeError: nobody is waiting there any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)
