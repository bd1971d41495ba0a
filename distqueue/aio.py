"""asyncio helpers that hold where asyncio itself does not."""

from __future__ import annotations

import asyncio
from typing import Any

#: seconds a cancelled task gets before it is cancelled again
RECANCEL_EVERY = 1.0


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` and return once every one has ended, whatever it raised.

    A cancel can be lost: on Python 3.11 ``asyncio.wait_for`` — which redis-py's
    socket writes use — returns normally when what it awaits finishes in the same
    turn of the loop as the cancel arrives. A loop in the task then goes on (a
    worker's housekeeping slept on, so its stop hung). So a task still running after
    ``RECANCEL_EVERY`` seconds is cancelled again, until it ends.
    """
    pending = {t for t in tasks if t is not None and not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
    for ended in tasks:  # retrieved: no "exception was never retrieved" at exit
        if ended is not None and not ended.cancelled():
            ended.exception()
