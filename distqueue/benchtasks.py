"""The tasks ``distqueue bench`` runs: registered Python tasks, as a user's are.

Its workers serve them with ``--tasks distqueue.benchtasks``, so every bench job
takes the path every user task takes (the task registry, a slot, the executor,
argument binding), unlike the built-in ``noop``, which the worker runs inline.
"""

from __future__ import annotations

import asyncio
import time

import distqueue


@distqueue.task(name="bench.sync")
def sync_noop() -> None:
    """Nothing, in the worker's pool (a thread, or a process with ``--pool process``)."""


@distqueue.task(name="bench.async")
async def async_noop() -> None:
    """Nothing, on the worker's event loop."""


@distqueue.task(name="bench.sync_sleep")
def sync_sleep(seconds: float) -> None:
    """Sleep in the worker's pool (``distqueue bench --sleep``)."""
    time.sleep(seconds)


@distqueue.task(name="bench.async_sleep")
async def async_sleep(seconds: float) -> None:
    """Sleep on the worker's event loop (``distqueue bench --sleep``)."""
    await asyncio.sleep(seconds)
