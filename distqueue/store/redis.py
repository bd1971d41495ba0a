"""The Redis store: the whole Store contract on Redis, one Lua script per operation.

Every state change is one script (redis_scripts/*.lua, key schema in _lib.lua),
so it is atomic however many servers and workers share the Redis. Reads that
span keys (stats) use MULTI/EXEC. Open with ``await RedisStore.open(url)``,
``redis://host:port/db``, or ``redis+cluster://host:port`` for a Redis Cluster
(any node); every key carries the hash tag of its prefix, so one store's keys
share one Cluster slot.

Several processes share one Redis: each publishes what it did that others may
be waiting for (jobs made ready, jobs finished) on the channel ``{prefix}:events``,
collected into one message per event-loop turn, and ``watch`` reports the other
processes' messages, so a FETCH or WAIT blocked on one server wakes when the
job was submitted or finished through another (see Store.watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from distqueue import codec
from distqueue.errors import (
    DistQueueError,
    IllegalTransition,
    InvalidJob,
    JobNotFound,
    LeaseLost,
    StoreError,
)
from distqueue.jobs import Job, JobError, JobSpec, JobState, check_name
from distqueue.policy import DEFAULT_LEASE, DEFAULT_POISON_LIMIT, Retention, RetryPolicy
from distqueue.store.base import Enqueued, FailOutcome, Heartbeat, Stats
from distqueue.store.checks import (
    check_claim,
    check_id,
    check_list,
    check_specs,
    encode_result,
)

__all__ = ["RedisStore"]

log = logging.getLogger("distqueue.store")
#: the most job ids in one event message
EVENT_IDS = 5000
#: seconds between two event messages of one store under load
EVENT_GAP = 0.0005
#: seconds a store that was the only listener on its Redis stops publishing events
QUIET = 1.0

S = JobState
SCRIPTS = (
    "enqueue", "claim", "complete", "fail", "progress", "heartbeat", "expire", "release",
    "promote", "cancel", "retry", "purge", "list", "types",
)  # fmt: skip
TOTALS = ("submitted", "succeeded", "failed", "retried", "dead", "cancelled", "lost",
          "expired", "purged")  # fmt: skip
SUMMARY_FIELDS = (
    "type", "queue", "priority", "args", "state", "max_retries", "timeout", "deadline",
    "run_at", "unique_key", "attempts", "failures", "lost", "worker", "lease_until",
    "cancel_requested", "result_kind", "error", "progress", "created_at", "started_at",
    "finished_at",
)  # fmt: skip


def _f(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _job(job_id: int, h: dict[Any, Any], payload_size: int | None = None) -> Job:
    def s(key: str) -> str | None:
        v = h.get(key.encode())
        return None if v is None else v.decode()

    kind = s("result_kind")
    raw_result = h.get(b"result")
    result: Any = raw_result
    if raw_result is not None and kind == "json":
        result = codec.loads(raw_result)
    args, error, progress = h.get(b"args"), h.get(b"error"), h.get(b"progress")
    payload = h.get(b"payload")
    return Job(
        id=job_id, type=s("type") or "", args=None if args is None else codec.loads(args),
        payload=payload,
        payload_size=payload_size if payload_size is not None else len(payload or b""),
        queue=s("queue") or "", priority=int(s("priority") or 0),
        max_retries=int(s("max_retries") or 0), timeout=_f(h.get(b"timeout")),
        deadline=_f(h.get(b"deadline")), run_at=_f(h.get(b"run_at")),
        unique_key=s("unique_key"), state=JobState(s("state") or ""),
        attempts=int(s("attempts") or 0), failures=int(s("failures") or 0),
        lost=int(s("lost") or 0), token=int(s("attempts") or 0), worker=s("worker"),
        lease_until=_f(h.get(b"lease_until")),
        cancel_requested=s("cancel_requested") == "1", result=result,
        error=None if error is None else JobError.from_dict(codec.loads(error)),
        progress=None if progress is None else codec.loads(progress),
        created_at=float(s("created_at") or 0), started_at=_f(h.get(b"started_at")),
        finished_at=_f(h.get(b"finished_at")),
    )  # fmt: skip


def _refusal(job_id: int, token: int, answer: bytes) -> DistQueueError | None:
    if answer == b"ok":
        return None
    if answer == b"notfound":
        return JobNotFound(job_id)
    if answer == b"stale":
        return LeaseLost(job_id, token)
    raise StoreError(f"unexpected answer from the store: {answer!r}")


class RedisStore:
    """The Store contract on Redis (redis-py asyncio, hiredis)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "dq",
        retry_policy: RetryPolicy | None = None,
        poison_limit: int = DEFAULT_POISON_LIMIT,
        rng: random.Random | None = None,
        cluster: bool = False,
    ) -> None:
        self.url = url
        if "{" in prefix or "}" in prefix:
            raise ValueError("the prefix is wrapped in a hash tag: give it without braces")
        self.prefix = "{" + prefix + "}"
        self.retry_policy = retry_policy or RetryPolicy()
        self.poison_limit = poison_limit
        self._rng = rng or random.Random()
        # a Cluster client routes every call by its key's slot: one store, one slot
        self._redis: Any = (
            RedisCluster.from_url(url, decode_responses=False)
            if cluster
            else aioredis.Redis.from_url(url, decode_responses=False)
        )
        #: tells this store's own event messages from other processes'
        self._origin = os.urandom(8).hex().encode()
        self._channel = self._key("events")
        self._events: Any = None  # a plain connection for PUBLISH (any Cluster node will do)
        self._pending_ready = False
        self._pending_done: list[int] = []
        self._publisher: asyncio.Task[None] | None = None
        self._watching = False
        self._quiet_until = 0.0
        self._last_publish = 0.0
        self._closed = False
        lib = resources.files("distqueue.store").joinpath("redis_scripts/_lib.lua").read_text()
        self._scripts: dict[str, AsyncScript] = {}
        for name in SCRIPTS:
            body = resources.files("distqueue.store").joinpath(f"redis_scripts/{name}.lua")
            self._scripts[name] = self._redis.register_script(lib + "\n" + body.read_text())

    @classmethod
    async def open(cls, url: str, **options: Any) -> RedisStore:
        """Connect and check the server answers; StoreError if it does not."""
        store = cls(url, **options)
        try:
            await store._redis.ping()
        except Exception as exc:
            await store.close()
            raise StoreError(f"cannot reach Redis at {url}: {exc}") from None
        return store

    async def close(self) -> None:
        self._closed = True
        if self._publisher is not None and not self._publisher.done():
            with contextlib.suppress(Exception):  # best effort: the events of the last ops
                await asyncio.wait_for(asyncio.shield(self._publisher), 2.0)
        if self._events is not None:
            await self._events.aclose()
            self._events = None
        await self._redis.aclose()

    # -- events between the processes sharing this Redis ---------------------------------

    def _announce(self, *, ready: bool = False, done: Iterable[int] = ()) -> None:
        """Publish soon (this loop turn's events together) that jobs became ready or
        finished. Never delays the operation that calls it."""
        if self._closed or (self._quiet_until and time.monotonic() < self._quiet_until):
            return  # closed, or nobody else listened a moment ago: see _publish
        self._pending_ready = self._pending_ready or ready
        self._pending_done.extend(done)
        if not (self._pending_ready or self._pending_done):
            return
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(self._publish())

    async def _publish(self) -> None:
        while self._pending_ready or self._pending_done:
            # this loop turn's other operations join in; under load, at most one
            # message per EVENT_GAP (an idle system publishes at once)
            await asyncio.sleep(max(0.0, self._last_publish + EVENT_GAP - time.monotonic()))
            ready, done = self._pending_ready, self._pending_done[:EVENT_IDS]
            self._pending_ready = False
            del self._pending_done[:EVENT_IDS]
            message = b"%s %d %s" % (self._origin, ready, ",".join(map(str, done)).encode())
            try:
                if self._events is None:
                    self._events = aioredis.Redis.from_url(self.url, decode_responses=False)
                self._last_publish = time.monotonic()
                receivers = await self._events.publish(self._channel, message)
                # alone on this Redis: publish again in a second, to notice newcomers
                # (until then they find our jobs by their own poll)
                alone = int(receivers) <= (1 if self._watching else 0)
                self._quiet_until = time.monotonic() + QUIET if alone else 0.0
            except Exception as exc:  # Redis gone, connection closed under us, ...
                # the others find out at their next poll; nothing is lost
                log.debug("publishing store events failed: %s", exc)
                self._pending_ready, self._pending_done = False, []
                return

    async def watch(
        self, on_ready: Callable[[], None], on_done: Callable[[Collection[int]], None]
    ) -> None:
        """Report the other processes' events until cancelled; resubscribe after a
        lost connection (and report "ready" then: something may have been missed)."""
        delay = 0.1
        while True:
            conn = aioredis.Redis.from_url(self.url, decode_responses=False)
            pubsub = conn.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                self._watching = True
                self._quiet_until = 0.0  # announce again: others may be listening now
                on_ready()
                delay = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._dispatch(message["data"], on_ready, on_done)
            except (aioredis.RedisError, OSError) as exc:
                log.warning("store events: %s; subscribing again in %.1fs", exc, delay)
            finally:
                self._watching = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await conn.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _dispatch(
        self, data: bytes, on_ready: Callable[[], None], on_done: Callable[[Collection[int]], None]
    ) -> None:
        origin, _, rest = data.partition(b" ")
        if origin == self._origin:
            return
        try:
            ready, ids = rest.split(b" ", 1)
            done = [int(i) for i in ids.split(b",")] if ids else []
        except ValueError:
            log.debug("ignoring a malformed store event %r", data[:100])
            return
        if ready == b"1":
            on_ready()
        if done:
            on_done(done)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def _run(self, name: str, *args: Any) -> Any:
        try:
            return await self._scripts[name](keys=[self.prefix], args=list(args))
        except aioredis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from None

    # -- the Store protocol -------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec], now: float) -> list[Enqueued]:
        wire: list[dict[str, Any]] = []
        payloads: list[bytes] = []
        for spec, args in check_specs(specs):
            wire.append({
                "type": spec.type, "queue": spec.queue, "priority": spec.priority,
                "max_retries": spec.max_retries, "timeout": spec.timeout,
                "deadline": spec.deadline, "run_at": spec.run_at,
                "unique_key": spec.unique_key, "args": None if args is None else args.decode(),
                "has_payload": spec.payload is not None,
            })  # fmt: skip
            if spec.payload is not None:
                payloads.append(bytes(spec.payload))
        if not wire:
            return []
        rows = await self._run("enqueue", repr(now), codec.dumps(wire), *payloads)
        out = [Enqueued(id=int(r[0]), created=bool(r[1]), state=JobState(r[2].decode()))
               for r in rows]  # fmt: skip
        self._announce(ready=any(e.created and e.state is S.QUEUED for e in out))
        return out

    async def claim(
        self,
        worker: str,
        n: int,
        now: float,
        *,
        queues: Collection[str] | None = None,
        types: Collection[str] | None = None,
        lease: float = DEFAULT_LEASE,
    ) -> list[Job]:
        if check_claim(worker, n, lease) == 0:
            return []
        qs = None if queues is None else sorted(queues)
        ts = None if types is None else sorted(types)
        rows = await self._run("claim", worker, n, repr(now), repr(now + lease),
                               codec.dumps(qs), codec.dumps(ts))  # fmt: skip
        if not rows:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for job_id, _ in rows:
            pipe.hgetall(self._key("job", str(job_id)))
        hashes = await pipe.execute()
        return [_job(int(job_id), h) for (job_id, _), h in zip(rows, hashes, strict=True)]

    async def complete(
        self, job_id: int, token: int, result: Any, now: float, *, worker: str | None = None
    ) -> None:
        [error] = await self.complete_many([(job_id, token, result)], now, worker=worker)
        if error is not None:
            raise error

    async def complete_many(
        self, items: Sequence[tuple[int, int, Any]], now: float, *, worker: str | None = None
    ) -> list[DistQueueError | None]:
        args: list[Any] = [repr(now), worker or ""]
        for job_id, token, result in items:
            check_id("job id", job_id), check_id("token", token)
            data, kind = encode_result(result)
            args += [job_id, token, data, kind]
        if not items:
            return []
        answers = await self._run("complete", *args)
        errors = [
            _refusal(job_id, token, answer)
            for (job_id, token, _), answer in zip(items, answers, strict=True)
        ]
        self._announce(done=[i for (i, _, _), e in zip(items, errors, strict=True) if e is None])
        return errors

    async def fail(
        self,
        job_id: int,
        token: int,
        error: JobError,
        now: float,
        *,
        retryable: bool = True,
        worker: str | None = None,
    ) -> FailOutcome:
        check_id("job id", job_id), check_id("token", token)
        if not isinstance(error, JobError):
            raise InvalidJob("error must be a JobError")
        p = self.retry_policy
        answer = await self._run(
            "fail", job_id, token, codec.dumps(error.to_dict()), repr(now),
            1 if retryable else 0, repr(p.base), repr(p.factor), repr(p.cap), repr(p.jitter),
            repr(self._rng.random()), worker or "",
        )  # fmt: skip
        refusal = _refusal(job_id, token, answer[0])
        if refusal is not None:
            raise refusal
        run_at = answer[2].decode()
        state = JobState(answer[1].decode())
        if state in (S.DEAD, S.CANCELLED, S.SUCCEEDED):
            self._announce(done=[job_id])
        return FailOutcome(state=state, run_at=float(run_at) if run_at else None)

    async def progress(
        self,
        job_id: int,
        token: int,
        percent: float,
        message: str,
        now: float,
        *,
        worker: str | None = None,
    ) -> None:
        check_id("job id", job_id), check_id("token", token)
        data = codec.dumps({"percent": percent, "message": message, "at": now}, "progress")
        answer = await self._run("progress", job_id, token, data, worker or "")
        refusal = _refusal(job_id, token, answer)
        if refusal is not None:
            raise refusal

    async def heartbeat(self, worker: str, now: float, lease: float = DEFAULT_LEASE) -> Heartbeat:
        rows = await self._run("heartbeat", worker, repr(now + lease))
        return Heartbeat(held={int(r[0]): int(r[1]) for r in rows},
                         cancel=sorted(int(r[0]) for r in rows if int(r[2])))  # fmt: skip

    async def expire(self, now: float) -> list[int]:
        expired = [int(i) for i in await self._run("expire", repr(now), self.poison_limit)]
        self._announce(ready=bool(expired), done=expired)  # some may have ended (poison)
        return expired

    async def release(
        self,
        worker: str,
        now: float,
        *,
        ids: Collection[int] | None = None,
        vanished: bool = False,
    ) -> list[int]:
        only = None if ids is None else sorted(ids)
        rows = await self._run("release", worker, repr(now), 1 if vanished else 0,
                               self.poison_limit, codec.dumps(only))  # fmt: skip
        released = [int(i) for i in rows]
        self._announce(ready=bool(released), done=released)  # some may have ended
        return released

    async def promote(self, now: float) -> list[int]:
        promoted = [int(i) for i in await self._run("promote", repr(now))]
        self._announce(ready=bool(promoted))
        return promoted

    async def next_wakeup(self) -> float | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(self._key("scheduled"), 0, 0, withscores=True)
        pipe.zrange(self._key("leases"), 0, 0, withscores=True)
        heads = await pipe.execute()
        times = [float(h[0][1]) for h in heads if h]
        return min(times) if times else None

    async def cancel(self, job_id: int, now: float) -> JobState:
        answer = (await self._run("cancel", check_id("job id", job_id), repr(now))).decode()
        if answer == "notfound":
            raise JobNotFound(job_id)
        if answer.startswith("illegal:"):
            raise IllegalTransition(f"job {job_id} is {answer[8:]}: cannot become cancelled")
        state = JobState(answer)
        if state is S.CANCELLED:
            self._announce(done=[job_id])
        return state

    async def retry(self, job_id: int, now: float) -> None:
        answer = (await self._run("retry", check_id("job id", job_id))).decode()
        if answer == "notfound":
            raise JobNotFound(job_id)
        if answer.startswith("illegal:"):
            raise IllegalTransition(
                f"job {job_id} is {answer[8:]}: only dead or cancelled jobs can be retried"
            )
        self._announce(ready=True)

    async def get(self, job_id: int) -> Job | None:
        h = await self._redis.hgetall(self._key("job", str(check_id("job id", job_id))))
        return None if not h else _job(job_id, h)

    async def list(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        type: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[Job]:
        state_name = check_list(state, limit, before) or ""
        ids = await self._run("list", state_name, queue or "", type or "", limit,
                              "" if before is None else before)  # fmt: skip
        pipe = self._redis.pipeline(transaction=False)
        for job_id in ids:
            key = self._key("job", job_id.decode())
            pipe.hmget(key, SUMMARY_FIELDS)
            pipe.hstrlen(key, "payload")
        replies = await pipe.execute()
        jobs = []
        for i, job_id in enumerate(ids):
            values, size = replies[2 * i], replies[2 * i + 1]
            if values[0] is None:
                continue  # purged between the two steps
            h = {k.encode(): v for k, v in zip(SUMMARY_FIELDS, values, strict=True)}
            jobs.append(_job(int(job_id), h, payload_size=int(size)))
        return jobs

    async def stats(self) -> Stats:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(self._key("counts"))
        pipe.hgetall(self._key("prio"))
        pipe.hgetall(self._key("totals"))
        counts, prio, totals = await pipe.execute()
        by_state = {s.value: 0 for s in JobState}
        by_queue: dict[str, dict[str, int]] = {}
        for key, value in counts.items():
            n = int(value)
            if n:
                queue, _, state = key.decode().rpartition("\t")
                by_state[state] += n
                by_queue.setdefault(queue, {})[state] = n
        queued = {int(p): int(n) for p, n in prio.items() if int(n)}
        all_totals = dict.fromkeys(TOTALS, 0)
        all_totals.update({k.decode(): int(v) for k, v in totals.items()})
        return Stats(by_state=by_state, by_queue=by_queue, queued_by_priority=queued,
                     totals=all_totals)  # fmt: skip

    async def purge(self, now: float, retention: Retention | None = None) -> int:
        r = retention or Retention()
        return int(await self._run("purge", repr(now - r.succeeded), repr(now - r.failed)))

    async def delete(self, job_id: int) -> None:
        answer = (await self._run("purge", "one", check_id("job id", job_id))).decode()
        if answer == "notfound":
            raise JobNotFound(job_id)
        if answer.startswith("illegal:"):
            raise IllegalTransition(
                f"job {job_id} is {answer[8:]}: only finished jobs can be deleted"
            )

    async def note_types(self, types: Collection[str], now: float) -> None:
        names = sorted({check_name("job type", t) for t in types})
        if names:
            await self._run("types", repr(now), *names)

    async def known_types(self) -> dict[str, float]:
        h = await self._redis.hgetall(self._key("types"))
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in h.items()}
