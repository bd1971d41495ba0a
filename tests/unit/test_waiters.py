"""The waits behind FETCH and WAIT (distqueue/service/waiters.py) keep a cancel.

A stopping worker cancels its FETCH. On Python 3.11, ``asyncio.wait_for`` returns
normally when the awaited future is woken in the same turn of the loop as the cancel
arrives — the cancel is lost, and the worker's fetch loop went on FETCHing, so its
stop hung (seen in CI: direct-mode workers that did not stop on SIGTERM, and
children that outlived their supervisor). These tests wake and cancel in the same
turn, every time: with wait_for they fail.
"""

from __future__ import annotations

import asyncio

import pytest

from distqueue.service.waiters import DoneWaiters, ReadyWaiters


def test_a_fetch_woken_as_it_is_cancelled_is_cancelled() -> None:
    async def main() -> None:
        waiters = ReadyWaiters()
        task = asyncio.create_task(waiters.wait(None, None, 30.0, waiters.version))
        await asyncio.sleep(0)
        waiters.notify_all()  # woken ...
        task.cancel()  # ... and cancelled, in one turn of the loop
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert len(waiters) == 0  # and it is gone from the waiters

    asyncio.run(main())


def test_a_wait_woken_as_it_is_cancelled_is_cancelled() -> None:
    async def main() -> None:
        waiters = DoneWaiters()
        task = asyncio.create_task(waiters.wait(7, 30.0))
        await asyncio.sleep(0)
        waiters.notify([7])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert 7 not in waiters

    asyncio.run(main())


def test_the_waits_still_end_on_a_wake_and_on_their_timeout() -> None:
    async def main() -> None:
        ready = ReadyWaiters()
        task = asyncio.create_task(ready.wait(None, None, 30.0, ready.version))
        await asyncio.sleep(0)
        ready.notify([("default", "echo")])
        await task  # woken: it returns
        await ready.wait(None, None, 0.01, ready.version)  # nobody wakes it: the timeout

        done = DoneWaiters()
        assert await done.wait(3, 0.01) is None
        assert 3 not in done

    asyncio.run(main())


def test_cancel_and_wait_ends_a_task_that_lost_its_cancel() -> None:
    """A task whose first cancel is swallowed (as redis-py's wait_for does on 3.11)
    is cancelled again, and cancel_and_wait returns once it has ended."""
    from distqueue import aio

    swallowed = 0

    async def loop_that_loses_a_cancel() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # lost, as a wait_for that completed at once would
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    async def main() -> None:
        aio.RECANCEL_EVERY = 0.05
        task = asyncio.create_task(loop_that_loses_a_cancel())
        failed = asyncio.create_task(asyncio.sleep(0, result=None))
        await asyncio.sleep(0)
        await aio.cancel_and_wait(task, failed, None)
        assert task.cancelled()
        assert swallowed == 1

    saved = aio.RECANCEL_EVERY
    try:
        asyncio.run(main())
    finally:
        aio.RECANCEL_EVERY = saved
