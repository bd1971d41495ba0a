"""The embedded store's writer (distqueue/store/writer.py): operations run in order,
on its thread or — ``inline``, when it is idle — at the end of the home loop's turn
on that loop's thread, a turn's operations as one batch; a failed batch is rolled
back and recovered the same way on either path.

The Writer is driven here with its own begin/commit/rollback/recover callables
that record what happened; the SQLite store's use of it is covered by the contract
tests and by tests/store/test_crash.py (both durabilities, two threads, SIGKILL).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from distqueue.errors import InvalidJob, StoreError
from distqueue.store.writer import Writer


class Book:
    """What the writer did, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.fail_commit = False

    def writer(self, inline: bool) -> Writer:
        return Writer(
            "test-writer",
            begin=lambda: self.log.append("begin"),
            commit=self.commit,
            rollback=lambda: self.log.append("rollback"),
            recover=lambda: self.log.append("recover"),
            inline=inline,
        )

    def commit(self) -> None:
        if self.fail_commit:
            self.fail_commit = False
            raise OSError("disk full")
        self.log.append("commit")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("inline", [True, False])
def test_a_lone_operation_runs_inline_only_when_asked(inline: bool) -> None:
    book = Book()

    async def main() -> None:
        w = book.writer(inline)
        await w.start(lambda: None, lambda: None)
        try:
            here = threading.get_ident()
            ran_on = await w.call(threading.get_ident)
            assert (ran_on == here) is inline
            assert await w.call(lambda x: x * 2, 21) == 42
        finally:
            await w.close()

    run(main())
    assert book.log == ["begin", "commit"] * 2


def test_an_operation_behind_a_busy_writer_waits_its_turn() -> None:
    """While one operation runs on the writer thread (made on another thread's loop:
    only the home loop's run inline), calls from the home loop are queued behind it,
    never run ahead of it, and run in the order made."""
    book = Book()
    order: list[str] = []
    release = threading.Event()

    def slow() -> str:
        order.append("slow")
        assert release.wait(10)
        return "slow"

    def quick(name: str) -> str:
        order.append(name)
        return name

    async def main() -> None:
        w = book.writer(True)
        await w.start(lambda: None, lambda: None)
        try:
            other = threading.Thread(target=lambda: asyncio.run(w.call(slow)))
            other.start()
            while not order:  # the other thread's operation is running
                await asyncio.sleep(0.01)
            second = asyncio.ensure_future(w.call(quick, "second"))
            third = asyncio.ensure_future(w.call(quick, "third"))
            await asyncio.sleep(0.1)
            assert order == ["slow"]  # both wait behind it
            release.set()
            assert await second == "second" and await third == "third"
            other.join(10)
            assert order == ["slow", "second", "third"]
        finally:
            release.set()
            await w.close()

    run(main())


@pytest.mark.parametrize("inline", [True, False])
def test_a_refused_operation_changes_nothing_and_the_batch_goes_on(inline: bool) -> None:
    book = Book()

    def refuse() -> None:
        raise InvalidJob("no")

    async def main() -> None:
        w = book.writer(inline)
        await w.start(lambda: None, lambda: None)
        try:
            with pytest.raises(InvalidJob, match="no"):
                await w.call(refuse)
            assert await w.call(lambda: "after") == "after"
        finally:
            await w.close()

    run(main())
    assert book.log == ["begin", "commit"] * 2


@pytest.mark.parametrize("inline", [True, False])
def test_a_failed_commit_is_a_store_error_then_the_store_recovers(inline: bool) -> None:
    book = Book()

    async def main() -> None:
        w = book.writer(inline)
        await w.start(lambda: None, lambda: None)
        try:
            book.fail_commit = True
            with pytest.raises(StoreError, match="nothing was stored: disk full"):
                await w.call(lambda: "lost")
            assert w.unavailable == "OSError: disk full"
            w._next_recovery = 0.0  # (its backoff, a few ms: not waited for here)
            assert await w.call(lambda: "kept") == "kept"
            assert w.unavailable is None
        finally:
            await w.close()

    run(main())
    assert book.log == ["begin", "rollback", "recover", "begin", "commit"]


def test_the_operations_of_one_turn_are_one_batch() -> None:
    """Inline, what the home loop asks in one turn commits once (as the thread's
    group commit would): 64 requests at once are not 64 transactions."""
    book = Book()

    async def main() -> None:
        w = book.writer(True)
        await w.start(lambda: None, lambda: None)
        try:
            here = threading.get_ident()
            got = await asyncio.gather(*(w.call(lambda i=i: (i, threading.get_ident()))
                                         for i in range(64)))  # fmt: skip
            assert got == [(i, here) for i in range(64)]
        finally:
            await w.close()

    run(main())
    assert book.log == ["begin", "commit"]


def test_reads_see_operations_run_inline() -> None:
    book = Book()
    state: list[int] = []

    async def main() -> None:
        w = book.writer(True)
        await w.start(lambda: None, lambda: None)
        try:
            for i in range(5):
                await w.call(state.append, i)
                assert await w.read(lambda: list(state)) == list(range(i + 1))
        finally:
            await w.close()

    run(main())


@pytest.mark.parametrize("inline", [True, False])
def test_settled_here_once_every_operation_made_has_settled(inline: bool) -> None:
    """``settled_here()`` (a small read may run on the loop): true on the home loop
    as soon as a caller hears its operation is done (either durability), false while
    one is pending, and on another loop."""
    book = Book()
    release = threading.Event()

    async def main() -> None:
        w = book.writer(inline)
        await w.start(lambda: None, lambda: None)
        try:
            for i in range(20):  # (counted before the caller hears: never a race)
                await w.call(lambda: None)
                assert w.settled_here(), i
            other = threading.Thread(target=lambda: asyncio.run(w.call(release.wait, 10)))
            other.start()
            while w.settled_here():  # the other thread's operation is made
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert not w.settled_here()  # pending: reads go to a reader thread
            release.set()
            other.join(10)
            assert w.settled_here()
            assert not await asyncio.to_thread(lambda: asyncio.run(_settled_here(w)))
        finally:
            release.set()
            await w.close()

    run(main())


async def _settled_here(w: Writer) -> bool:
    return w.settled_here()
