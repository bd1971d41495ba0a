"""Blocking commands: FETCH waits for ready jobs, WAIT for a job to finish.

Waiters are woken by what this server sees happen (a submit, an ACK, ...) and by
the events of other processes on a shared store (Store.watch); each also wakes
up on its own every ``ServerConfig.poll`` seconds (default ``POLL``) and looks
again, so a missed event delays it, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distqueue.jobs import Job

__all__ = ["POLL", "DoneWaiters", "ReadyWaiters"]

#: seconds between a waiter's own looks at the store
POLL = 1.0


class _Waiter:
    __slots__ = ("fut", "queues", "types")

    def __init__(
        self,
        fut: asyncio.Future[None],
        queues: frozenset[str] | None,
        types: frozenset[str] | None,
    ) -> None:
        self.fut = fut
        self.queues = queues
        self.types = types

    def serves(self, queue: str, type_: str) -> bool:
        return (self.queues is None or queue in self.queues) and (
            self.types is None or type_ in self.types
        )


class ReadyWaiters:
    """Workers waiting in FETCH, first come first woken."""

    def __init__(self) -> None:
        self._waiters: deque[_Waiter] = deque()
        #: bumped at every notify, so a fetcher can tell that something happened
        #: between its empty claim and its wait (and look again instead of waiting)
        self.version = 0

    async def wait(
        self,
        queues: frozenset[str] | None,
        types: frozenset[str] | None,
        timeout: float,
        since: int,
    ) -> None:
        """Return when woken, after ``timeout``, or at once if anything was
        notified since version ``since``."""
        if self.version != since:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(fut, queues, types)
        self._waiters.append(waiter)
        try:
            # (asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that
            # comes as the future is woken, and a stopping worker's FETCH went on)
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            pass
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def notify(self, ready: Iterable[tuple[str, str]]) -> None:
        """Jobs became ready: one (queue, type) per job; wake one serving waiter each."""
        self.version += 1
        for queue, type_ in ready:
            for waiter in self._waiters:
                if not waiter.fut.done() and waiter.serves(queue, type_):
                    waiter.fut.set_result(None)
                    break

    def notify_all(self) -> None:
        """Jobs of unknown queues and types became ready: wake every waiter."""
        self.version += 1
        for waiter in self._waiters:
            if not waiter.fut.done():
                waiter.fut.set_result(None)

    def __len__(self) -> int:
        return len(self._waiters)


class DoneWaiters:
    """Clients waiting in WAIT for jobs to finish."""

    def __init__(self) -> None:
        self._waiters: dict[int, list[asyncio.Future[Job | None]]] = {}

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._waiters

    async def wait(self, job_id: int, timeout: float) -> Job | None:
        """Return when the job may have finished (with the finished job when the
        notifier had it at hand), or after ``timeout`` (None)."""
        return await self.until(self.watch(job_id), job_id, timeout)

    def watch(self, job_id: int) -> asyncio.Future[Job | None]:
        """Be told from now on: register before reading the job's state, so a finish
        between the read and the wait is not missed (it would cost a poll)."""
        fut: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(fut)
        return fut

    async def until(
        self, fut: asyncio.Future[Job | None], job_id: int, timeout: float
    ) -> Job | None:
        """Wait for a watch() (None after ``timeout``); it is dropped either way."""
        try:
            async with asyncio.timeout(timeout):  # (not wait_for: see ReadyWaiters.wait)
                return await fut
        except TimeoutError:
            return None
        finally:
            self.drop(fut, job_id)

    def drop(self, fut: asyncio.Future[Job | None], job_id: int) -> None:
        futs = self._waiters.get(job_id)
        if futs is not None:
            if fut in futs:
                futs.remove(fut)
            if not futs:
                del self._waiters[job_id]
        if not fut.done():
            fut.cancel()

    def notify(self, job_ids: Collection[int], jobs: Mapping[int, Job] | None = None) -> None:
        """These jobs may have finished; ``jobs``: some of them as they now are."""
        for job_id in job_ids:
            job = None if jobs is None else jobs.get(job_id)
            for fut in self._waiters.pop(job_id, ()):
                if not fut.done():
                    fut.set_result(job)

    def notify_all(self) -> None:
        """Every watched job may have finished (a cascade the notifier cannot name:
        the jobs a failed job's end cancelled): each WAIT reads its job again."""
        self.notify(list(self._waiters))
