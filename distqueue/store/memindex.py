"""The embedded store's in-memory indexes: what is ready, what is scheduled.

They make the hot paths cheap — a claim pops from FIFO deques, a promote pops a
heap — and are rebuilt from the file whenever the store opens, so the file stays
the one truth. Only the store's writer thread touches them.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterator

__all__ = ["SMALL_JOB", "ReadyQueues", "Schedule"]

#: a ready entry packs (seq, id) into one int: ids below 2**44 (17 trillion)
ID_BITS = 44
ID_MASK = (1 << ID_BITS) - 1
#: a queued job whose size (stored args plus payload, in bytes) is larger than this
#: has it noted in ``ReadyQueues.sizes``; a smaller one costs no memory for it, and a
#: claim with a byte budget counts it as at most this many bytes
SMALL_JOB = 4096


class Fifos:
    """One (queue, type) pair's ready jobs: a FIFO deque per priority it has jobs of
    (``by_prio``), and those priorities in a heap (``prios``, the most urgent at
    ``prios[0]``), so a claim finds the pair's most urgent job without looking at
    the others, whatever the priorities (0..2**32-1) and however many.

    ``prios`` holds exactly the keys of ``by_prio``; a priority leaves both only at
    the top of the heap (``take``), when its deque has nothing live left, or in a
    ``heads`` walk. A deque may hold stale entries (cancelled jobs) or be empty
    until then."""

    __slots__ = ("by_prio", "prios")

    def __init__(self) -> None:
        self.by_prio: dict[int, deque[int]] = {}
        self.prios: list[int] = []


class ReadyQueues:
    """Queued jobs by (queue, type) and priority, FIFO by a sequence number.

    Each (queue, type) has one deque per priority it has jobs of (``Fifos``: the
    priorities in a heap, so any of 0..2**32-1 costs the same) of entries
    ``seq << ID_BITS | id``: one int, shared with the id map (no tuple, no second
    copy of the seq; 133 bytes a queued job in all). An entry is live iff the id map
    holds it; entries of jobs that left the queue otherwise (cancelled) are skipped
    when they reach the front. Only jobs larger than SMALL_JOB bytes have their size
    kept (``sizes``). When a job became queued is not kept here either: the store
    reads it from the file for the ``heads`` alone.

    Flow control: a claim's ``gate`` says which pairs cannot give a job now (their
    queue is paused, or their queue or type is at a limit) and why; such a pair is
    *parked* — moved out of the walk, its jobs kept in place — until the store
    ``unpark``s its reason (a slot freed, tokens refilled, the limit or pause
    changed). So a claim's work is bounded by the pairs that can give a job, never
    by the ones held back.
    """

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], Fifos] = {}
        #: pairs a claim found blocked (a paused queue, a limit reached): kept aside
        #: from ``take``'s walk until their reason clears (``unpark``)
        self._parked: dict[tuple[str, str], Fifos] = {}
        #: reason -> the pairs parked for it
        self._reasons: dict[Hashable, set[tuple[str, str]]] = {}
        #: id -> its live entry
        self._entry: dict[int, int] = {}
        #: id -> deadline of queued jobs that have one
        self.deadlines: dict[int, float] = {}
        #: id -> size in bytes (stored args plus payload) of queued jobs larger than
        #: SMALL_JOB; a queued job not here is at most SMALL_JOB bytes
        self.sizes: dict[int, int] = {}
        #: priority -> queued jobs of it (only priorities with queued jobs)
        self.by_priority: dict[int, int] = {}
        #: queue -> the types it has a pair of (in ``_queues`` or ``_parked``): what
        #: ``first`` looks at for one queue, never every pair
        self._types: dict[str, set[str]] = {}

    def push(
        self, jid: int, queue: str, type_: str, prio: int, seq: int, deadline: float | None,
        size: int = 0,
    ) -> None:  # fmt: skip
        """Queue a job behind every job of its priority with a lower ``seq``;
        ``size``: its stored args plus payload, in bytes."""
        fifos = self._queues.get((queue, type_))
        if fifos is None:
            fifos = self._parked.get((queue, type_)) if self._parked else None
            if fifos is None:
                fifos = self._queues[(queue, type_)] = Fifos()
                self._types.setdefault(queue, set()).add(type_)
        dq = fifos.by_prio.get(prio)
        if dq is None:
            dq = fifos.by_prio[prio] = deque()
            heapq.heappush(fifos.prios, prio)
        entry = seq << ID_BITS | jid
        dq.append(entry)
        self._entry[jid] = entry
        counts = self.by_priority
        counts[prio] = counts.get(prio, 0) + 1
        if deadline is not None:
            self.deadlines[jid] = deadline
        if size > SMALL_JOB:
            self.sizes[jid] = size

    def drop(self, jid: int, prio: int) -> None:
        """Take a job out (its deque entry goes stale)."""
        del self._entry[jid]
        counts = self.by_priority
        left = counts[prio] - 1
        if left:
            counts[prio] = left
        else:
            del counts[prio]
        self.deadlines.pop(jid, None)
        if self.sizes:
            self.sizes.pop(jid, None)

    def __contains__(self, jid: int) -> bool:
        return jid in self._entry

    def heads(self) -> list[int]:
        """The id of the first live job of each (queue, type, priority) that has one:
        the job of that priority queued earliest (lowest seq). Stale entries at the
        fronts are dropped, and priorities and pairs with nothing ready forgotten, as
        ``take`` does: work bounded by the FIFOs, plus stale entries each dropped
        once."""
        live = self._entry
        out: list[int] = []
        for pairs in (self._queues, self._parked):
            empty = []
            for key, fifos in pairs.items():
                gone = False
                for dq in fifos.by_prio.values():
                    while dq and live.get(dq[0] & ID_MASK) != dq[0]:
                        dq.popleft()  # stale: the job left the queue since
                    if dq:
                        out.append(dq[0] & ID_MASK)
                    else:
                        gone = True
                if gone:  # forget the emptied priorities (one pass over the pair's)
                    by_prio = fifos.by_prio = {p: dq for p, dq in fifos.by_prio.items() if dq}
                    fifos.prios = list(by_prio)
                    heapq.heapify(fifos.prios)
                if not fifos.by_prio:
                    empty.append(key)
            for key in empty:
                del pairs[key]  # (a parked one's reason may still name it: harmless)
                self._forget(key)
        return out

    def _forget(self, key: tuple[str, str]) -> None:
        """The pair ``key`` left ``_queues``/``_parked`` (nothing ready in it)."""
        types = self._types.get(key[0])
        if types is not None:
            types.discard(key[1])
            if not types:
                del self._types[key[0]]

    def first(self, queue: str, type_: str | None = None) -> int | None:
        """The id of the job a claim of ``queue`` (and ``type_``; None: any) would
        take next, pauses and limits aside (parked pairs too), or None; nothing is
        taken. Looks at the front of the most urgent FIFO of each of the queue's
        pairs (one with ``type_``), dropping stale entries and emptied priorities
        there as ``take`` does: work bounded by the queue's types, plus stale
        entries each dropped once."""
        types = self._types.get(queue, ()) if type_ is None else (type_,)
        live = self._entry
        best: tuple[int, int, int] | None = None  # (priority, seq, id)
        for t in types:
            key = (queue, t)
            fifos = self._queues.get(key) or self._parked.get(key)
            if fifos is None:
                continue
            prios = fifos.prios
            while prios:
                prio = prios[0]
                dq = fifos.by_prio[prio]
                while dq and live.get(dq[0] & ID_MASK) != dq[0]:
                    dq.popleft()  # stale: the job left the queue since
                if dq:
                    seq = dq[0] >> ID_BITS
                    if best is None or (prio, seq) < best[:2]:
                        best = (prio, seq, dq[0] & ID_MASK)
                    break
                # nothing live of this priority: forget it until a job comes
                heapq.heappop(prios)
                del fifos.by_prio[prio]
        return None if best is None else best[2]

    # -- parking (flow control) ---------------------------------------------------------

    def park(self, key: tuple[str, str], reason: Hashable) -> None:
        """Keep the pair ``key`` out of the walk until ``reason`` is unparked."""
        fifos = self._queues.pop(key, None)
        if fifos is not None:
            self._parked[key] = fifos
            self._reasons.setdefault(reason, set()).add(key)

    def unpark(self, reason: Hashable) -> None:
        """Put the pairs parked for ``reason`` back in the walk (a claim parks them
        again at once if something else still holds them back)."""
        keys = self._reasons.pop(reason, None)
        if keys:
            for key in keys:
                fifos = self._parked.pop(key, None)
                if fifos is not None:
                    self._queues[key] = fifos

    def unpark_all(self) -> None:
        """Put every parked pair back (no limit or pause holds anything back any more)."""
        self._queues.update(self._parked)
        self._parked.clear()
        self._reasons.clear()

    def parked(self, reason: Hashable) -> bool:
        """Whether any pair is parked for ``reason``."""
        return reason in self._reasons

    def take(
        self, queues: frozenset[str] | None, types: frozenset[str] | None,
        admit: Callable[[int, float | None], bool] | None = None,
        gate: Callable[[tuple[str, str]], Hashable | None] | None = None,
    ) -> Iterator[tuple[int, int, float | None, tuple[str, str]]]:  # fmt: skip
        """Yield (id, priority, deadline, (queue, type)) of the most urgent, oldest
        ready jobs of these queues and types (None = any), removing each as it is
        yielded.

        Each job yielded costs a look at the front of each pair's most urgent FIFO
        (the top of its heap of priorities), never a walk over the priorities; a
        priority whose FIFO has nothing live left is popped from the heap, once.

        ``admit(id, deadline)``, when given, is asked about each job before it is
        removed: False ends the walk and leaves that job where it is, at the front of
        its queue (a claim whose byte budget it would pass).

        ``gate((queue, type))``, when given, says why a pair cannot give a job now
        (None: it can): such a pair is parked for that reason. It is asked about
        every pair of the walk once, and again after each job yielded about that
        job's pair — when that one is held back now (the caller counted the job
        against its limits in between), every pair is asked again, as a limit of
        its queue or type may hold back others too."""
        if (
            queues is not None
            and types is not None
            and len(queues) * len(types) < len(self._queues)
        ):  # the worker's own pairs: never a walk over every pair ever seen
            keys = [(q, t) for q in queues for t in types if (q, t) in self._queues]
        else:
            keys = [
                (q, t) for q, t in self._queues
                if (queues is None or q in queues) and (types is None or t in types)
            ]  # fmt: skip
        pairs = [(key, self._queues[key]) for key in keys]
        if gate is not None:
            pairs = self._gated(pairs, gate)
        live = self._entry
        heappop = heapq.heappop
        while True:
            best: tuple[int, int, int, deque[int], tuple[str, str]] | None = None
            empty = []
            for key, fifos in pairs:
                prios = fifos.prios
                while prios:
                    prio = prios[0]
                    dq = fifos.by_prio[prio]
                    while dq and live.get(dq[0] & ID_MASK) != dq[0]:
                        dq.popleft()  # stale: the job left the queue since
                    if dq:
                        seq = dq[0] >> ID_BITS
                        if best is None or prio < best[0] or (prio == best[0] and seq < best[1]):
                            best = (prio, seq, dq[0] & ID_MASK, dq, key)
                        break
                    # nothing live of this priority: forget it until a job comes
                    heappop(prios)
                    del fifos.by_prio[prio]
                else:  # nothing ready in this pair: forget it until a job comes
                    empty.append(key)
            if empty:
                for key in empty:
                    del self._queues[key]
                    self._forget(key)
                pairs = [(key, fifos) for key, fifos in pairs if key in self._queues]
            if best is None:
                return
            prio, _, jid, dq, key = best
            deadline = self.deadlines.get(jid)
            if admit is not None and not admit(jid, deadline):
                return
            dq.popleft()
            self.drop(jid, prio)
            yield jid, prio, deadline, key
            if gate is not None and key in self._queues and gate(key) is not None:
                pairs = self._gated(pairs, gate)

    def _gated(
        self, pairs: list[tuple[tuple[str, str], Fifos]],
        gate: Callable[[tuple[str, str]], Hashable | None],
    ) -> list[tuple[tuple[str, str], Fifos]]:  # fmt: skip
        """The pairs the gate lets through; the others parked."""
        out = []
        for key, fifos in pairs:
            if key not in self._queues:
                continue  # forgotten (empty) or parked since
            reason = gate(key)
            if reason is None:
                out.append((key, fifos))
            else:
                self.park(key, reason)
        return out


class Schedule:
    """Scheduled and retrying jobs by run-at (a heap; moved jobs leave stale entries)."""

    def __init__(self) -> None:
        #: id -> (run_at, queue, type, priority)
        self._jobs: dict[int, tuple[float, str, str, int]] = {}
        self._heap: list[tuple[float, int]] = []

    def push(self, jid: int, run_at: float, queue: str, type_: str, prio: int) -> None:
        self._jobs[jid] = (run_at, queue, type_, prio)
        heapq.heappush(self._heap, (run_at, jid))

    def drop(self, jid: int) -> None:
        del self._jobs[jid]

    def due(self, now: float) -> Iterator[tuple[int, str, str, int]]:
        """Yield (id, queue, type, priority) of each job due at ``now``, removing it."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            run_at, jid = heapq.heappop(heap)
            entry = self._jobs.get(jid)
            if entry is None or entry[0] != run_at:
                continue  # stale: cancelled, or rescheduled since
            del self._jobs[jid]
            yield jid, entry[1], entry[2], entry[3]

    def next_at(self) -> float | None:
        """The earliest run-at (may be a stale entry's: early, never late)."""
        return self._heap[0][0] if self._heap else None
