"""The embedded store's ready index with priorities 0..2**32-1 (#16): a claim takes
the most urgent, oldest job of the pairs it serves whatever the priorities, the index
forgets a priority (and a pair) once nothing of it is queued, and a file with far
priorities reopens to the same order. Checked against a plain model and by what the
index holds, never by the clock."""

from __future__ import annotations

import random
from pathlib import Path

from distqueue.jobs import JobSpec
from distqueue.store.memindex import ReadyQueues
from distqueue.store.sqlite import SQLiteStore

T0 = 1_000_000.0
TOP = 2**32 - 1


def test_the_index_matches_a_sorted_model() -> None:
    rng = random.Random(16)
    ready = ReadyQueues()
    model: dict[int, tuple[int, int, tuple[str, str]]] = {}  # id -> (prio, seq, pair)
    pairs = [("q1", "a"), ("q1", "b"), ("q2", "a")]
    few = [0, 5, 10, 11, 2**31, TOP]
    seq = jid = 0
    for _ in range(3000):
        op = rng.random()
        if op < 0.5:
            jid += 1
            seq += 1
            prio = rng.choice(few) if rng.random() < 0.7 else rng.randrange(TOP + 1)
            pair = rng.choice(pairs)
            ready.push(jid, pair[0], pair[1], prio, seq, None)
            model[jid] = (prio, seq, pair)
        elif op < 0.6 and model:  # cancelled: its entry goes stale
            victim = rng.choice(sorted(model))
            ready.drop(victim, model.pop(victim)[0])
        elif op < 0.65:
            heads = ready.heads()
            firsts: dict[tuple[tuple[str, str], int], tuple[int, int]] = {}
            for i, (p, s, pair) in model.items():
                if (pair, p) not in firsts or s < firsts[(pair, p)][0]:
                    firsts[(pair, p)] = (s, i)
            assert sorted(heads) == sorted(i for _, i in firsts.values())
        else:
            types = None if rng.random() < 0.5 else frozenset({rng.choice("ab")})
            n = rng.randrange(1, 8)
            got = []
            for item in ready.take(None, types):
                got.append(item)
                if len(got) == n:
                    break
            serve = sorted(
                (p, s, i) for i, (p, s, pair) in model.items() if types is None or pair[1] in types
            )
            assert [(i, p) for i, p, _, _ in got] == [(i, p) for p, _, i in serve[:n]]
            for i, _, _, key in got:
                assert model.pop(i)[2] == key
        counts: dict[int, int] = {}
        for p, _, _ in model.values():
            counts[p] = counts.get(p, 0) + 1
        assert ready.by_priority == counts


def test_emptied_priorities_and_pairs_are_forgotten() -> None:
    ready = ReadyQueues()
    prios = random.Random(3).sample(range(TOP + 1), 3000)
    for jid, prio in enumerate(prios, 1):
        ready.push(jid, "q", "t", prio, jid, None)
    fifos = ready._queues[("q", "t")]
    assert len(fifos.by_prio) == len(fifos.prios) == 3000
    # cancel all but the least urgent: one heads walk forgets the others' FIFOs
    last = max(prios)
    for jid, prio in enumerate(prios, 1):
        if prio != last:
            ready.drop(jid, prio)
    assert ready.heads() == [prios.index(last) + 1]
    assert list(fifos.by_prio) == fifos.prios == [last]
    assert ready.by_priority == {last: 1}
    # drained by a claim: nothing is left for the next ones to walk
    assert [p for _, p, _, _ in ready.take(None, None)] == [last]
    assert ready._queues == {} and ready.by_priority == {}


async def test_far_priorities_survive_a_restart(tmp_path: Path) -> None:
    prios = [TOP, 7, 2**31, 7, 0, TOP, 11, 1 << 20]
    store = await SQLiteStore.open(tmp_path, synchronous="OFF")
    ids = [e.id for e in await store.enqueue([JobSpec(type="t", priority=p) for p in prios], T0)]
    [first] = await store.claim("w", 1, T0)
    assert first.id == ids[4]
    await store.close()
    store = await SQLiteStore.open(tmp_path, synchronous="OFF")
    try:
        stats = await store.stats()
        assert stats.queued_by_priority == {TOP: 2, 7: 2, 2**31: 1, 11: 1, 1 << 20: 1}
        assert list(stats.queued_by_priority) == sorted(stats.queued_by_priority)
        got = [j.id for j in await store.claim("w", len(prios), T0)]
        rest = [(p, k) for k, p in enumerate(prios) if k != 4]
        assert got == [ids[k] for _, k in sorted(rest)]
    finally:
        await store.close()
