"""The Redis store: the whole Store contract on Redis, one Lua script per operation.

Every state change is one script (redis_scripts/*.lua, key schema in _lib.lua),
so it is atomic however many servers and workers share the Redis; so is stats,
a read-only script. Open with ``await RedisStore.open(url)``,
``redis://host:port/db``, ``redis+cluster://host:port`` for a Redis Cluster
(any node; every key carries the hash tag of its prefix, so one store's keys
share one Cluster slot) or ``redis+sentinel://host:port[,host:port...]/master[/db]``
for the master a Redis Sentinel names (followed through failovers). ``?wait=N``
on the URL makes every change wait for N replicas (``WAIT``, see docs/scaling.md).

Faults. Every script does bounded work (promote, expire and purge a batch at a
time, the Python side looping), so no call holds Redis for long. Every Redis
error becomes a StoreError; redis-py reconnects by itself, and nothing is retried
automatically (see NO_RETRY). The store's epoch key tells a Redis that lost its
data from an empty store: the scripts then refuse to change anything, rather than
hand out job ids again.

Few commands per job: a script touches a job's hash once or twice and sends its
index and counter changes once per call (_lib.lua), and calls of one kind made while
one is on its way to Redis go together in the next script call (_Group: claims,
acknowledgements, enqueues), so a busy store sends fewer, bigger calls.
``tests/store/test_redis_commands.py`` counts (docs/scaling.md has the figures).

Workflows and flow control (#14) follow the same rules. A job's dependencies live in
its hash and in the waiter sets of the jobs it waits for; whatever script ends a job
moves its waiters on (finish in _lib.lua), so a job nobody waits for costs nothing
more. A claim skips paused queues and the (queue, type) pairs at a concurrency limit or
out of rate tokens, and parks those pairs out of the set it walks until what blocks
them may have passed (a running job stopping, a bucket's time, a resume, a new limit):
its work stays bounded by the pairs that can give jobs, and with no limit set it costs
one EXISTS more. Periodic schedules are fired by the enqueue script itself, a
compare-and-set on the schedule's next tick (fire_periodic).

Several processes share one Redis: each publishes what it did that others may
be waiting for (jobs made ready, jobs finished) on the channel ``{prefix}:events``,
collected into one message per event-loop turn, and ``watch`` reports the other
processes' messages, so a FETCH or WAIT blocked on one server wakes when the
job was submitted or finished through another (see Store.watch).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import copy
import dataclasses
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException

from distqueue import codec
from distqueue.errors import (
    DistQueueError,
    IllegalTransition,
    InvalidJob,
    JobNotFound,
    LeaseLost,
    QueueFull,
    StoreError,
)
from distqueue.jobs import (
    MAX_WAITERS,
    Job,
    JobError,
    JobSpec,
    JobState,
    check_name,
)
from distqueue.policy import DEFAULT_LEASE, DEFAULT_POISON_LIMIT, Retention, RetryPolicy
from distqueue.store.base import (
    MAX_KICK,
    MAX_LIMITS,
    MAX_PERIODICS,
    MAX_RESUME,
    MAX_WORKERS,
    WORKER_JOBS,
    WORKERS_PURGE,
    Enqueued,
    FailOutcome,
    Heartbeat,
    Limit,
    Periodic,
    Stats,
    WorkerRecord,
)
from distqueue.store.checks import (
    check_claim,
    check_id,
    check_limit,
    check_list,
    check_pause,
    check_periodic,
    check_priority,
    check_seconds,
    check_specs,
    check_worker,
    check_worker_info,
    check_workers,
    encode_result,
    periodic_key,
)

__all__ = ["RedisStore"]

log = logging.getLogger("distqueue.store")
#: the most job ids in one event message
EVENT_IDS = 5000
#: seconds between two event messages of one store under load
EVENT_GAP = 0.0005
#: seconds a store that was the only listener on its Redis stops publishing events
QUIET = 1.0
#: the most jobs one promote, expire or purge script call moves or deletes; the
#: methods call again until a batch comes back short. 500 requeued jobs take Redis
#: a few milliseconds, so other clients run between the calls.
BATCH = 500
#: the most jobs one claim script call leases (a claim of more calls it again; claims
#: made at once go together in one call up to this many jobs, see _Group)
CLAIM_BATCH = 250
#: enqueues and complete_many calls made at once go together in one script call up to
#: this many jobs (a bigger one goes alone: each call is one script, as the contract
#: wants it atomic)
GROUP_JOBS = 1000
#: the most claim groups (different queues and types) a store keeps ready at once
CLAIM_GROUPS = 64
#: the most ids one filtered list script call looks at
LIST_SCAN = 1000
#: the most members one migrate call pads or moves (see _migrate)
MIGRATE_SCAN = 500
#: the key format this code writes (P:format in _lib.lua); the earlier ones _migrate
#: brings to it: b"" (bare ids in P:scheduled and P:leases), b"2" (ready jobs in
#: P:ready:<pair> zsets scored priority * 2^48 + seq, inexact past priority 31) and
#: b"3" (no per-queue indexes of the dead and the scheduled jobs: P:dead, P:delayed)
FORMAT = b"4"
EARLIER_FORMATS = (b"", b"2", b"3")
#: the most members of a line or index one peek looks at, and one kick drops, whose
#: job is not there any more (left by an earlier version's crash; see peek.lua, kick.lua)
PEEK_SCAN = KICK_STALE = 1000
#: connections one store opens to a (plain) Redis at most; more calls at once wait
#: for one, up to POOL_WAIT seconds
MAX_CONNECTIONS, POOL_WAIT = 100, 30.0
#: the default of ``wait_timeout``: milliseconds WAIT waits for the replicas
WAIT_TIMEOUT_MS = 1000
#: redis-py's default port of a Sentinel
SENTINEL_PORT = 26379
#: No automatic retries, anywhere. redis-py (8.1 here) retries a command 10 times
#: by default after a ConnectionError or TimeoutError - ``Redis(...)`` and
#: ``RedisCluster`` do; ``Redis.from_url`` happens to build connections that do not
#: - and so would send an EVALSHA again whose connection dropped, or whose reply
#: timed out, after Redis had run it: an enqueue would create its jobs twice, a
#: claim lease jobs to nobody. So retries are off, explicitly, and a failed script
#: call raises StoreError, which here means "maybe": the change may or may not have
#: happened, and the caller decides (an enqueue is sent again safely with a unique
#: key; a claim's jobs come back when their lease runs out). Reads are idempotent:
#: _read sends one again, once, after a dropped connection. A connection that died
#: while idle in the pool (Redis restarted) is replaced by redis-py before use.
NO_RETRY = Retry(NoBackoff(), 0)
#: options of every plain (and Sentinel) client: no retries, bytes, and no
#: "maintenance notifications" (a RESP3 feature of managed Redis): redis-py 8.1
#: skips its check of a pooled connection before use (the one that replaces a
#: connection that died idle) while they may be on, as its default "auto" counts.
CLIENT_OPTIONS: dict[str, Any] = {"decode_responses": False, "retry": NO_RETRY}
try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - redis-py before 7 has no such thing
    pass
else:
    CLIENT_OPTIONS["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
#: what a failing Redis call may raise (RedisClusterException is not a RedisError)
REDIS_ERRORS = (aioredis.RedisError, RedisClusterException, OSError)
#: the answer of a script whose epoch is not the store's (_lib.lua)
_EPOCH_REPLY = re.compile(r"\bDQEPOCH ?(\S*)")
VANISHED = (
    "the Redis data vanished (the epoch key is gone): Redis restarted without its "
    "data? Refusing to re-issue job ids; restart this process to start a new, empty store"
)

T = TypeVar("T")
S = JobState
SCRIPTS = (
    "enqueue", "claim", "complete", "fail", "progress", "heartbeat", "expire", "release",
    "promote", "cancel", "retry", "purge", "list", "types", "migrate", "worker_note",
    "workers", "worker_forget", "stats", "flow", "periodic", "periodic_read", "requeue",
    "touch", "kick", "kick_job", "peek", "claim_job",
)  # fmt: skip
#: the scripts that change nothing: no WAIT after them, and sent again once after a
#: dropped connection (as _read does)
READ_ONLY = frozenset({"list", "stats", "periodic_read", "peek"})
TOTALS = ("submitted", "succeeded", "failed", "retried", "dead", "cancelled", "lost",
          "expired", "purged")  # fmt: skip
SUMMARY_FIELDS = (
    "type", "queue", "priority", "args", "state", "max_retries", "timeout", "deadline",
    "run_at", "unique_key", "attempts", "failures", "lost", "worker", "lease_until",
    "cancel_requested", "result_kind", "error", "progress", "created_at", "started_at",
    "finished_at", "after", "on_failure", "pass_results",
)  # fmt: skip


_SCHEDULED = (JobState.SCHEDULED, JobState.RETRYING)


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
    state = JobState(s("state") or "")
    # lease_until and run_at stay in the hash after they stop applying (_lib.lua)
    lease_until = _f(h.get(b"lease_until")) if state is JobState.RUNNING else None
    run_at = _f(h.get(b"run_at")) if state in _SCHEDULED else None
    after = h.get(b"after")
    return Job(
        id=job_id, type=s("type") or "", args=None if args is None else codec.loads(args),
        payload=payload,
        payload_size=payload_size if payload_size is not None else len(payload or b""),
        queue=s("queue") or "", priority=int(s("priority") or 0),
        max_retries=int(s("max_retries") or 0), timeout=_f(h.get(b"timeout")),
        deadline=_f(h.get(b"deadline")), run_at=run_at,
        unique_key=s("unique_key"), state=state,
        attempts=int(s("attempts") or 0), failures=int(s("failures") or 0),
        lost=int(s("lost") or 0), token=int(s("attempts") or 0), worker=s("worker"),
        lease_until=lease_until,
        cancel_requested=s("cancel_requested") == "1", result=result,
        error=None if error is None else JobError.from_dict(codec.loads(error)),
        progress=None if progress is None else codec.loads(progress),
        created_at=float(s("created_at") or 0), started_at=_f(h.get(b"started_at")),
        finished_at=_f(h.get(b"finished_at")),
        after=() if after is None else tuple(codec.loads(after)),
        on_failure=s("on_failure") or "cancel", pass_results=s("pass_results") == "1",
    )  # fmt: skip


def _periodic(row: list[Any]) -> Periodic:
    """A schedule from periodic.lua or periodic_read.lua's {name, definition, paused,
    next_at}."""
    name, definition, paused, next_at = row
    cron, every, timezone, spec, catch_up = codec.loads(definition)
    return Periodic(name=name.decode(), cron=cron, every=every, timezone=timezone, spec=spec,
                    catch_up=catch_up, paused=bool(int(paused)),
                    next_at=float(next_at))  # fmt: skip


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """A hash as a script answers it (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _store_error(exc: BaseException) -> StoreError:
    return StoreError(f"redis: {str(exc) or '(no message)'} ({type(exc).__name__})")


def _redact(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", url)


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """The URL without distqueue's own query options (wait, wait_timeout), and them."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, {}
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in ("wait", "wait_timeout"):
            ours[key] = value
        else:
            rest.append((key, value))
    return (base + "?" + urlencode(rest) if rest else base), ours


#: a ``rediss://`` URL's TLS files (redis-py's query options), and the environment
#: variables that give them when the URL does not
REDIS_TLS_ENV = {
    "ssl_ca_certs": "DISTQUEUE_REDIS_TLS_CA",
    "ssl_certfile": "DISTQUEUE_REDIS_TLS_CERT",
    "ssl_keyfile": "DISTQUEUE_REDIS_TLS_KEY",
}


def _tls_url(url: str) -> str:
    """A ``rediss://`` URL with the TLS files the environment names added (the URL's
    own win), each checked to be a readable file: a missing one is one clear
    ValueError now rather than a connect error on every try. Redis' certificate is
    verified (redis-py's default; ``ssl_cert_reqs=none`` in the URL turns it off)."""
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    given = {key for key, _ in pairs}
    for option, var in REDIS_TLS_ENV.items():
        if option not in given and os.environ.get(var):
            pairs.append((option, os.environ[var]))
    for option, value in pairs:
        if option in REDIS_TLS_ENV and not (os.path.isfile(value) and os.access(value, os.R_OK)):
            raise ValueError(f"Redis TLS file {value} ({option}): no such readable file")
    return base + "?" + urlencode(pairs) if pairs else base


def _sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/master[/db]``:
    the Sentinels, the master's name and the master's connection options."""
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    options: dict[str, Any] = {}
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        options.update(username=user or None, password=password or None)
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = port, ""
        try:
            hosts.append((host.strip("[]"), int(port) if port else SENTINEL_PORT))
        except ValueError:
            raise ValueError(f"bad Sentinel address {item!r} in {_redact(url)}") from None
    parts = [p for p in path.split("/") if p]
    if not hosts or not all(h for h, _ in hosts) or not 1 <= len(parts) <= 2:
        raise ValueError(
            f"bad Sentinel URL {_redact(url)}: expected "
            "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]"
        )
    if len(parts) == 2:
        options["db"] = int(parts[1])
    return hosts, parts[0], options


def _refusal(job_id: int, token: int, answer: bytes) -> DistQueueError | None:
    if answer == b"ok":
        return None
    if answer == b"notfound":
        return JobNotFound(job_id)
    if answer == b"stale":
        return LeaseLost(job_id, token)
    raise StoreError(f"unexpected answer from the store: {answer!r}")


def _wire(specs: Sequence[JobSpec]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The specs as enqueue.lua takes them (checked), and their payloads."""
    wire: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    for spec, args in check_specs(specs):
        item = {
            "type": spec.type, "queue": spec.queue, "priority": spec.priority,
            "max_retries": spec.max_retries, "timeout": spec.timeout,
            "deadline": spec.deadline, "run_at": spec.run_at,
            "unique_key": spec.unique_key, "args": None if args is None else args.decode(),
            "has_payload": spec.payload is not None,
        }  # fmt: skip
        if spec.after:  # ids as strings: a Lua number would round a large one
            item["after"] = [str(i) for i in spec.after]
            item["after_json"] = codec.dumps(list(spec.after)).decode()
            item["on_failure"] = spec.on_failure
            item["pass_results"] = spec.pass_results
        wire.append(item)
        if spec.payload is not None:
            payloads.append(bytes(spec.payload))
    return wire, payloads


def _enqueued(answer: list[Any]) -> list[Enqueued] | None:
    """One enqueue's answer from enqueue.lua: its Enqueued, or None when its guard's
    tick was not the schedule's; raises InvalidJob or QueueFull when it was refused."""
    kind = answer[0]
    if kind == b"ok":
        return [Enqueued(id=int(r[0]), created=bool(r[1]), state=JobState(r[2].decode()))
                for r in answer[1]]  # fmt: skip
    if kind == b"skip":
        return None
    if kind == b"invalid":
        raise InvalidJob(answer[1].decode())
    if kind == b"full":
        raise QueueFull(answer[1].decode())
    raise StoreError(f"unexpected answer from the store: {answer!r}")


def _copy(exc: Exception) -> Exception:
    """Its own copy of an exception for each caller that raises it."""
    try:
        return copy.copy(exc)
    except Exception:
        return exc


class _Group:
    """Group commit for one script. A call made while none of its kind is on its way
    to Redis is sent at once, alone, from the caller's own task (as an ungrouped call
    would be); the calls made while one is on its way wait, and go together in the
    next script call (each of them still whole, in the order they were made, as if
    one after the other). So an idle store answers as fast as before, and a busy one
    sends fewer, bigger script calls: each costs a round trip and a few commands
    whatever its size (see _lib.lua). ``send`` takes the requests of one call and
    answers one answer each, or raises: every request of that call then raises it
    (a StoreError means "maybe" for each). ``limit``: the most jobs one grouped call
    takes (a single request bigger than that goes alone)."""

    def __init__(self, send: Callable[[list[Any]], Awaitable[list[Any]]], limit: int) -> None:
        self._send = send
        self._limit = limit
        self._pending: collections.deque[tuple[Any, int, asyncio.Future[Any]]] = collections.deque()
        #: the loop of the call on its way to Redis, None when there is none
        self._busy: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def idle(self) -> bool:
        return self._busy is None and not self._pending

    async def __call__(self, request: Any, size: int) -> Any:
        loop = asyncio.get_running_loop()
        if self._busy is loop:
            future: asyncio.Future[Any] = loop.create_future()
            self._pending.append((request, size, future))
            return await future
        self._busy = loop  # (another loop's call, if any, died with its loop)
        self._pending.clear()
        try:
            [answer] = await self._send([request])
        finally:
            self._next(loop)
        return answer

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        """A call came back: the requests made meanwhile go next, together."""
        if self._pending:
            self._task = loop.create_task(self._drain(loop))
        else:
            self._busy = None

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        batch: list[tuple[Any, asyncio.Future[Any]]] = []
        jobs = 0
        while self._pending:
            request, size, future = self._pending[0]
            if batch and jobs + size > self._limit:
                break
            self._pending.popleft()
            if not future.done():  # (done: its caller gave up before it was sent)
                batch.append((request, future))
                jobs += size
        try:
            answers = await self._send([request for request, _ in batch]) if batch else []
        except asyncio.CancelledError:  # the loop is closing: no caller waits forever
            for future in [f for _, f in batch] + [f for *_, f in self._pending]:
                future.cancel()
            self._pending.clear()
            self._busy = None
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(_copy(exc))
        else:
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
        self._next(loop)


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
        wait: int | None = None,
        wait_timeout: int | None = None,
    ) -> None:
        url, query = _split_options(url)
        if url.startswith("rediss://"):
            url = _tls_url(url)
        self.url = url
        if "{" in prefix or "}" in prefix:
            raise ValueError("the prefix is wrapped in a hash tag: give it without braces")
        self.prefix = "{" + prefix + "}"
        self.retry_policy = retry_policy or RetryPolicy()
        self.poison_limit = poison_limit
        self._rng = rng or random.Random()
        #: replicas every change waits for (WAIT), 0 for none; and for how long (ms)
        self.wait = int(query.get("wait", 0)) if wait is None else wait
        self.wait_timeout = (
            int(query.get("wait_timeout", WAIT_TIMEOUT_MS)) if wait_timeout is None
            else wait_timeout
        )  # fmt: skip
        if self.wait < 0 or self.wait_timeout <= 0:
            raise ValueError("wait must be 0 or more replicas, wait_timeout over 0 ms")
        if cluster and self.wait:
            raise ValueError("wait is not supported on a Redis Cluster")
        #: set by open(): the epoch this process opened the store with
        self._epoch = ""
        self._vanished_logged = False
        self._sentinel: Sentinel | None = None
        self._master = ""
        self._options: dict[str, Any] = dict(CLIENT_OPTIONS)
        if url.startswith("redis+sentinel://"):
            hosts, self._master, master_options = _sentinel_url(url)
            self._options.update(master_options)
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
                hosts,
                sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0,
                                 "retry": NO_RETRY},
            )  # fmt: skip
            # a client whose every new connection asks the Sentinels for the master
            self._redis: Any = self._sentinel.master_for(self._master, **self._options)
        elif cluster:
            # a Cluster client routes every call by its key's slot: one store, one slot
            self._redis = RedisCluster.from_url(url, decode_responses=False, retry=NO_RETRY)
        else:
            # a call waits for a free connection instead of failing with "Too many
            # connections" when more than MAX_CONNECTIONS are in flight (a loaded server)
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT, **self._options
            )
            self._redis = aioredis.Redis.from_pool(pool)  # owns it: aclose() closes it
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
        self._enqueues = _Group(self._send_enqueues, GROUP_JOBS)
        self._completes = _Group(self._send_completes, GROUP_JOBS)
        self._claims: dict[tuple[bytes, bytes], _Group] = {}
        scripts = resources.files("distqueue.store").joinpath("redis_scripts")
        # (the constants the scripts share with the Python side first)
        lib = f"local MAX_WAITERS = {MAX_WAITERS}\n" + scripts.joinpath("_lib.lua").read_text()
        self._scripts: dict[str, AsyncScript] = {}
        for name in SCRIPTS:
            body = scripts.joinpath(f"{name}.lua").read_text()
            self._scripts[name] = self._redis.register_script(lib + "\n" + body)
        self._init_script = self._redis.register_script(scripts.joinpath("init.lua").read_text())

    @classmethod
    async def open(cls, url: str, **options: Any) -> RedisStore:
        """Connect and open the store under the prefix: its epoch, or a new store when
        nothing is there; StoreError if Redis does not answer."""
        store = cls(url, **options)
        try:
            await store._open_epoch()
        except Exception as exc:
            await store.close()
            raise StoreError(f"cannot open the store at Redis {_redact(url)}: {exc}") from None
        return store

    async def _open_epoch(self) -> None:
        """Take the store's epoch, creating it for a new store (an empty prefix) or
        for data an earlier version wrote; bring that data to the current format."""
        try:
            (epoch, how, key_format), acked = await self._eval_wait(
                self._init_script, [os.urandom(8).hex()]
            )
        except REDIS_ERRORS as exc:
            raise _store_error(exc) from None
        if how != b"existing":
            self._check_replicas(acked)  # a new epoch: on the replicas too
        self._epoch = epoch.decode()
        if how == b"upgraded":
            log.warning("store %s: data without an epoch key (an earlier version's): it "
                        "is this store's now, epoch %s", self.prefix, self._epoch)  # fmt: skip
        if key_format != FORMAT:
            if key_format not in EARLIER_FORMATS:
                raise StoreError(
                    f"the store {self.prefix} has key format {key_format.decode()!r}, "
                    f"newer than this distqueue's {FORMAT.decode()}: upgrade distqueue"
                )
            await self._migrate(key_format)

    async def _migrate(self, key_format: bytes) -> None:
        """Bring an earlier version's store to FORMAT (migrate.lua), in bounded steps:
        pad the ids in P:scheduled and P:leases (before format 2, see zid in _lib.lua),
        move the ready jobs into the lines (before format 3), build the per-queue
        indexes of the dead and of the scheduled and retrying jobs (before format 4).
        Idempotent: any process opening the store before P:format is set does it
        (again)."""
        if key_format == b"":
            for key in ("scheduled", "leases"):
                cursor = b"0"
                while True:
                    cursor = await self._run("migrate", key, cursor, MIGRATE_SCAN)
                    if cursor in (b"0", 0):
                        break
        if key_format in (b"", b"2"):
            while int(await self._run("migrate", "ready", MIGRATE_SCAN)):
                pass
        for state in (S.DEAD, S.SCHEDULED, S.RETRYING):
            after: bytes = b"0"
            while after:
                after = await self._run("migrate", "index", state.value, after, MIGRATE_SCAN)
        try:
            await self._redis.set(self._key("format"), FORMAT)
        except REDIS_ERRORS as exc:
            raise _store_error(exc) from None
        log.info("store %s: key format %s", self.prefix, FORMAT.decode())

    def _client(self) -> Any:
        """A new client for events: the current master (Sentinel), else the URL's
        server (on a Cluster any node: a PUBLISH reaches every node)."""
        if self._sentinel is not None:
            return self._sentinel.master_for(self._master, **self._options)
        return aioredis.Redis.from_url(self.url, **self._options)

    async def close(self) -> None:
        self._closed = True
        if self._publisher is not None and not self._publisher.done():
            with contextlib.suppress(Exception):  # best effort: the events of the last ops
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._publisher)
        if self._events is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._events.aclose()
            self._events = None
        with contextlib.suppress(*REDIS_ERRORS):
            await self._redis.aclose()
        if self._sentinel is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._sentinel.aclose()

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
                    self._events = self._client()
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
            conn = self._client()
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
            except REDIS_ERRORS as exc:
                log.warning("store events: %s; subscribing again in %.1fs", exc, delay)
            finally:
                self._watching = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
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
        """One script call: atomic and bounded in Redis. Raises StoreError when Redis
        fails (then the script may or may not have run: see NO_RETRY), when WAIT
        found too few replicas, or when the store's data vanished (then it did not)."""
        resend = name in READ_ONLY
        for _ in range(3):
            epoch = self._epoch
            try:
                return await self._eval(name, [epoch, *args])
            except aioredis.ResponseError as exc:
                found = _EPOCH_REPLY.search(str(exc))
                if found is None:
                    raise _store_error(exc) from None
                self._epoch_changed(found.group(1))  # the script changed nothing
            except aioredis.ConnectionError as exc:
                if not resend:
                    raise _store_error(exc) from None
                resend = False  # a read: sent again once (a pooled connection died idle)
            except REDIS_ERRORS as exc:
                raise _store_error(exc) from None
        raise StoreError(f"store {self.prefix}: its epoch keeps changing under this process")

    async def _eval(self, name: str, args: list[Any]) -> Any:
        script = self._scripts[name]
        if not self.wait or name in READ_ONLY:
            return await script(keys=[self.prefix], args=args)
        answer, acked = await self._eval_wait(script, args)
        self._check_replicas(acked)
        return answer

    async def _eval_wait(self, script: AsyncScript, args: list[Any]) -> tuple[Any, int]:
        """Run a script, then (with ``wait``) WAIT on its own connection in the same
        round trip; its answer, and how many replicas confirmed (``wait`` without)."""
        if not self.wait:
            return await script(keys=[self.prefix], args=args), 0
        # "async with": a pipeline that failed loading its scripts keeps its connection
        async with self._redis.pipeline(transaction=False) as pipe:
            await script(keys=[self.prefix], args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait, self.wait_timeout)
            answer, acked = await pipe.execute(raise_on_error=False)
        for reply in (answer, acked):
            if isinstance(reply, Exception):
                raise reply
        return answer, int(acked)

    def _check_replicas(self, acked: int) -> None:
        if acked < self.wait:
            raise StoreError(
                f"redis: only {acked} of {self.wait} replicas confirmed the change within "
                f"{self.wait_timeout} ms: it is on the master, and a failover may lose it"
            )

    def _epoch_changed(self, current: str) -> None:
        """A script found the store's epoch is not ours: gone (Redis lost its data:
        refuse, and say so once), or another process started a new store after the
        loss (adopt it, and say so)."""
        if not current:
            if not self._vanished_logged:
                self._vanished_logged = True
                log.error("store %s: %s", self.prefix, VANISHED)
            raise StoreError(VANISHED)
        if current != self._epoch:
            log.warning(
                "store %s: its epoch changed from %s to %s: Redis lost the store's data and "
                "another process started a new, empty store; going on with that one",
                self.prefix, self._epoch, current,
            )  # fmt: skip
            self._epoch = current
        self._vanished_logged = False

    async def _read(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read, which changes nothing: sent again once after a dropped connection;
        a Redis error is a StoreError."""
        try:
            return await read()
        except aioredis.ConnectionError:
            pass
        except REDIS_ERRORS as exc:
            raise _store_error(exc) from None
        try:
            return await read()
        except REDIS_ERRORS as exc:
            raise _store_error(exc) from None

    # -- the Store protocol -------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec], now: float) -> list[Enqueued]:
        wire, payloads = _wire(specs)
        if not wire:
            return []
        request = (repr(now), codec.dumps(wire), b"", payloads, len(wire))
        out = _enqueued(await self._enqueues(request, len(wire)))
        assert out is not None  # (no guard: never skipped)
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
        max_bytes: int | None = None,
    ) -> list[Job]:
        if check_claim(worker, n, lease) == 0:
            return []
        if max_bytes is not None:
            check_id("max_bytes", max_bytes)
        qs = codec.dumps(None if queues is None else sorted(set(queues)))
        ts = codec.dumps(None if types is None else sorted(set(types)))
        group = self._claim_group(qs, ts)
        jobs: list[Job] = []
        room = max_bytes  # the byte budget the earlier script calls left
        while len(jobs) < n:  # CLAIM_BATCH jobs per script call at most
            want = min(CLAIM_BATCH, n - len(jobs))
            request = (worker, want, repr(now), repr(now + lease), "" if room is None else room,
                       "1" if jobs else "0")  # fmt: skip
            try:
                rows = await group(request, want)
            except StoreError:
                if not jobs:
                    raise
                return jobs  # what the earlier calls leased is the caller's: "up to n"
            jobs += [_job(int(row[0]), _pairs(row[3])) for row in rows]
            if len(rows) < want:
                break
            if room is not None:
                room -= sum(int(row[2]) for row in rows)
        return jobs

    def _claim_group(self, qs: bytes, ts: bytes) -> _Group:
        """The group of the claims of these queues and types (one script call serves
        claims of the same queues and types only)."""
        group = self._claims.get((qs, ts))
        if group is None:
            if len(self._claims) >= CLAIM_GROUPS:  # forget the idle ones
                self._claims = {k: g for k, g in self._claims.items() if not g.idle()}
            group = _Group(partial(self._send_claims, qs, ts), CLAIM_BATCH)
            self._claims[(qs, ts)] = group
        return group

    async def _send_claims(self, qs: bytes, ts: bytes, requests: list[Any]) -> list[Any]:
        """One claim script call for claims of queues ``qs`` and types ``ts``: the rows
        of each."""
        worker, want, now, until, room, taken = requests[0]
        args: list[Any] = [worker, want, now, until, qs, ts, room, taken]
        for request in requests[1:]:
            args += request
        rows = await self._run("claim", *args)
        out: list[list[Any]] = [[] for _ in requests]
        for row in rows:
            out[int(row[4]) - 1].append(row)
        return out

    async def _send_enqueues(self, requests: list[Any]) -> list[Any]:
        """One enqueue script call for enqueues made at once: the answer of each (see
        _enqueued)."""
        args: list[Any] = []
        for now, wire, guard, payloads, _ in requests:
            args += [now, wire, guard, *payloads]
        answers: list[Any] = await self._run("enqueue", *args)
        return answers

    async def _send_completes(self, requests: list[Any]) -> list[Any]:
        """One complete script call for complete_many calls made at once: the answers
        of each."""
        args: list[Any] = []
        for now, worker, items in requests:
            args += [now, worker, len(items) // 4, *items]
        answers = await self._run("complete", *args)
        out, at = [], 0
        for _, _, items in requests:
            out.append(answers[at : at + len(items) // 4])
            at += len(items) // 4
        return out

    async def complete(
        self, job_id: int, token: int, result: Any, now: float, *, worker: str | None = None
    ) -> None:
        [error] = await self.complete_many([(job_id, token, result)], now, worker=worker)
        if error is not None:
            raise error

    async def complete_many(
        self, items: Sequence[tuple[int, int, Any]], now: float, *, worker: str | None = None
    ) -> list[DistQueueError | None]:
        args: list[Any] = []
        for job_id, token, result in items:
            check_id("job id", job_id), check_id("token", token)
            data, kind = encode_result(result)
            args += [job_id, token, data, kind]
        if not items:
            return []
        answers = await self._completes((repr(now), worker or "", args), len(items))
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
        priority: int | None = None,
    ) -> FailOutcome:
        check_id("job id", job_id), check_id("token", token)
        if not isinstance(error, JobError):
            raise InvalidJob("error must be a JobError")
        prio = "" if priority is None else check_priority(priority)
        p = self.retry_policy
        answer = await self._run(
            "fail", job_id, token, codec.dumps(error.to_dict()), repr(now),
            1 if retryable else 0, repr(p.base), repr(p.factor), repr(p.cap), repr(p.jitter),
            repr(self._rng.random()), worker or "", prio,
        )  # fmt: skip
        refusal = _refusal(job_id, token, answer[0])
        if refusal is not None:
            raise refusal
        run_at = answer[2].decode()
        state = JobState(answer[1].decode())
        if state in (S.DEAD, S.CANCELLED, S.SUCCEEDED):
            self._announce(done=[job_id])
        return FailOutcome(state=state, run_at=float(run_at) if run_at else None)

    async def requeue(
        self,
        job_id: int,
        token: int,
        now: float,
        *,
        priority: int | None = None,
        run_at: float | None = None,
        worker: str | None = None,
    ) -> JobState:
        check_id("job id", job_id), check_id("token", token)
        prio = "" if priority is None else check_priority(priority)
        at = "" if run_at is None else repr(check_seconds("run_at", run_at))
        answer = await self._run("requeue", job_id, token, repr(now), prio, at, worker or "")
        refusal = _refusal(job_id, token, answer[0])
        if refusal is not None:
            raise refusal
        state = JobState(answer[1].decode())
        if state is S.QUEUED:
            self._announce(ready=True)
        elif state is S.CANCELLED:
            self._announce(done=[job_id])
        return state

    async def touch(
        self, job_id: int, token: int, now: float, lease: float, *, worker: str | None = None
    ) -> float:
        check_id("job id", job_id), check_id("token", token)
        until = now + check_seconds("lease", lease, positive=True)
        answer = await self._run("touch", job_id, token, repr(until), worker or "")
        refusal = _refusal(job_id, token, answer)
        if refusal is not None:
            raise refusal
        return until

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
        # A batch at a time (see BATCH). Should one fail, the batches before it are
        # done: harmless, as every lease they took back was due.
        expired: list[int] = []
        while True:
            batch = [int(i) for i in
                     await self._run("expire", repr(now), self.poison_limit, BATCH)]  # fmt: skip
            self._announce(ready=bool(batch), done=batch)  # some may have ended (poison)
            expired += batch
            if len(batch) < BATCH:
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
        promoted: list[int] = []
        while True:  # a batch at a time, as expire
            batch = [int(i) for i in await self._run("promote", repr(now), BATCH)]
            self._announce(ready=bool(batch))
            promoted += batch
            if len(batch) < BATCH:
                return promoted

    async def next_wakeup(self) -> float | None:
        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                # scheduled jobs, leases, periodic ticks, rate-parked pairs, pause ends
                for key in ("scheduled", "leases", "periodic:next", "unpark_at", "pause_until"):
                    pipe.zrange(self._key(key), 0, 0, withscores=True)
                return await pipe.execute()  # type: ignore[no-any-return]

        heads = await self._read(read)
        times = [float(h[0][1]) for h in heads if h]
        return min(times) if times else None

    async def cancel(self, job_id: int, now: float, *, running: bool = True) -> JobState:
        jid = check_id("job id", job_id)
        answer = (await self._run("cancel", jid, repr(now), "1" if running else "0")).decode()
        if answer == "notfound":
            raise JobNotFound(job_id)
        if answer == "refused:running":
            raise IllegalTransition(f"job {job_id} is running: not cancelled")
        if answer.startswith("illegal:"):
            raise IllegalTransition(f"job {job_id} is {answer[8:]}: cannot become cancelled")
        state = JobState(answer)
        if state is S.CANCELLED:
            self._announce(done=[job_id])
        return state

    async def retry(self, job_id: int, now: float) -> None:
        answer = (await self._run("retry", check_id("job id", job_id), repr(now))).decode()
        if answer == "notfound":
            raise JobNotFound(job_id)
        if answer.startswith("illegal:"):
            raise IllegalTransition(
                f"job {job_id} is {answer[8:]}: only dead or cancelled jobs can be retried"
            )
        self._announce(ready=True)

    async def kick(
        self, queue: str, n: int, now: float, *, type: str | None = None
    ) -> builtins.list[int]:
        check_name("queue", queue)
        if type is not None:
            check_name("job type", type)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_KICK:
            raise InvalidJob(f"n must be an integer 1-{MAX_KICK}, not {n!r}")
        rows = await self._run("kick", queue, type or "", n, repr(now), KICK_STALE)
        kicked = [int(i) for i in rows]
        self._announce(ready=bool(kicked))
        return kicked

    async def claim_job(
        self, worker: str, job_id: int, now: float, *, lease: float = DEFAULT_LEASE
    ) -> Job:
        check_claim(worker, 1, lease)
        jid = check_id("job id", job_id)
        answer = await self._run("claim_job", jid, worker, repr(now), repr(now + lease))
        what = answer[0].decode()
        if what == "ok":
            return _job(job_id, _pairs(answer[1]))
        if what == "notfound":
            raise JobNotFound(job_id)
        if what == "expired":  # past its deadline: dead now, as a claim ends it
            self._announce(done=[job_id])
            raise IllegalTransition(f"job {job_id} expired before it started")
        if what == "illegal":
            raise IllegalTransition(
                f"job {job_id} is {answer[1].decode()}: only a queued job can be claimed"
            )
        raise StoreError(f"unexpected answer from the store: {answer!r}")

    async def kick_job(self, job_id: int, now: float) -> JobState:
        answer = (await self._run("kick_job", check_id("job id", job_id), repr(now))).decode()
        if answer == "notfound":
            raise JobNotFound(job_id)
        if answer.startswith("illegal:"):
            raise IllegalTransition(
                f"job {job_id} is {answer[8:]}: only dead, scheduled or retrying jobs can be kicked"
            )
        self._announce(ready=True)
        return JobState(answer)

    async def peek(self, queue: str, state: JobState, *, type: str | None = None) -> Job | None:
        if state not in (S.QUEUED, S.SCHEDULED, S.DEAD):
            raise ValueError(f"peek shows a queued, scheduled or dead job, not {state!r}")
        check_name("queue", queue)
        if type is not None:
            check_name("job type", type)
        answer = await self._run("peek", queue, JobState(state).value, type or "", PEEK_SCAN)
        if not answer:
            return None
        return _job(int(answer[0]), _pairs(answer[1]))

    async def get(self, job_id: int) -> Job | None:
        key = self._key("job", str(check_id("job id", job_id)))
        h = await self._read(lambda: self._redis.hgetall(key))
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
        ids: list[bytes] = []
        cursor: bytes = b"" if before is None else str(before).encode()
        while True:  # a filtered list looks at LIST_SCAN ids per call at most
            found, cursor = await self._run("list", state_name, queue or "", type or "",
                                            limit - len(ids), cursor, LIST_SCAN)  # fmt: skip
            ids += found
            if not cursor or len(ids) >= limit:
                break

        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    key = self._key("job", job_id.decode())
                    pipe.hmget(key, SUMMARY_FIELDS)
                    pipe.hstrlen(key, "payload")
                return await pipe.execute()  # type: ignore[no-any-return]

        replies = await self._read(read)
        jobs = []
        for i, job_id in enumerate(ids):
            values, size = replies[2 * i], replies[2 * i + 1]
            if values[0] is None:
                continue  # purged between the two steps
            h = {k.encode(): v for k, v in zip(SUMMARY_FIELDS, values, strict=True)}
            jobs.append(_job(int(job_id), h, payload_size=int(size)))
        return jobs

    async def stats(self) -> Stats:
        # one script: the counts and the oldest queued job at one instant (stats.lua)
        flat_counts, flat_prio, flat_totals, oldest = await self._run("stats")
        counts, prio, totals = (
            dict(zip(flat[::2], flat[1::2], strict=True))
            for flat in (flat_counts, flat_prio, flat_totals)
        )
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
                     totals=all_totals,
                     oldest_queued_at=float(oldest) if oldest else None)  # fmt: skip

    async def sweep(self, now: float, retention: Retention | None = None) -> int:
        r = retention or Retention()
        purged = 0
        while True:  # a batch at a time, as expire
            n = int(await self._run("purge", repr(now - r.succeeded), repr(now - r.failed), BATCH))
            purged += n
            if n < BATCH:
                return purged

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
        key = self._key("types")
        h = await self._read(lambda: self._redis.hgetall(key))
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in h.items()}

    # The worker registry (P:workers, P:workers:seen, P:workers:ids; see _lib.lua):
    # shared by every process on this Redis, so any server lists every worker, direct
    # mode's included. A worker's jobs come from P:worker:<w>, the set heartbeat reads.

    async def note_worker(self, worker: str, info: Mapping[str, Any], now: float) -> None:
        data = check_worker_info(info)
        await self._run("worker_note", check_worker(worker), repr(now), data, MAX_WORKERS)

    async def workers(
        self, now: float, *, max_age: float, limit: int = 1000
    ) -> builtins.list[WorkerRecord]:  # (``list`` is the method above, in here)
        check_workers(max_age, limit)
        rows = await self._run("workers", repr(now - max_age), limit, WORKERS_PURGE,
                               WORKER_JOBS)  # fmt: skip
        return [
            WorkerRecord(id=r[0].decode(), info=codec.loads(r[2]), seen=float(r[1]),
                         jobs=[int(j) for j in r[3]])
            for r in rows
        ]  # fmt: skip

    async def forget_worker(self, worker: str) -> None:
        await self._run("worker_forget", check_worker(worker))

    # -- flow control (#14): limits, paused queues (flow.lua), periodic schedules
    # (periodic.lua, periodic_read.lua, and enqueue.lua's guard for fire_periodic)

    async def set_limit(self, limit: Limit) -> None:
        limit = check_limit(limit)

        def opt(value: float | None) -> str:
            return "" if value is None else repr(value)

        data = b"" if limit.empty else codec.dumps(dataclasses.asdict(limit))
        rate = limit.rate is not None
        answer = await self._run(
            "flow", "limit", limit.scope, limit.name, data, opt(limit.concurrency),
            opt(limit.rate), repr(float(limit.period)) if rate else "",
            opt(limit.burst) if rate else "", opt(limit.max_depth), MAX_LIMITS,
        )  # fmt: skip
        if answer == b"full":
            raise InvalidJob(f"at most {MAX_LIMITS} limits: remove one first")
        self._announce(ready=True)  # a looser limit may let queued jobs go

    async def limits(self) -> builtins.list[Limit]:
        key = self._key("limits")
        h = await self._read(lambda: self._redis.hgetall(key))
        found = [Limit(**codec.loads(v)) for v in h.values()]
        return sorted(found, key=lambda limit: (limit.scope, limit.name))

    async def pause(self, queue: str, paused: bool, *, until: float | None = None) -> None:
        until = check_pause(queue, paused, until)
        end = "" if until is None else repr(until)
        await self._run("flow", "pause", queue, "1" if paused else "0", end)
        if not paused:
            self._announce(ready=True)

    async def paused(self) -> builtins.list[str]:
        key = self._key("paused")
        members = await self._read(lambda: self._redis.smembers(key))
        return sorted(m.decode() for m in members)

    async def pauses(self) -> dict[str, float | None]:
        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.smembers(self._key("paused"))
                pipe.zrange(self._key("pause_until"), 0, -1, withscores=True)
                return await pipe.execute()  # type: ignore[no-any-return]

        members, ends = await self._read(read)
        until = {q.decode(): float(at) for q, at in ends}
        return {q: until.get(q) for q in sorted(m.decode() for m in members)}

    async def resume_due(self, now: float) -> builtins.list[str]:
        due = await self._run("flow", "resume_due", repr(check_seconds("now", now)), MAX_RESUME)
        if due:
            self._announce(ready=True)
        return sorted(q.decode() for q in due)

    async def set_periodic(self, periodic: Periodic) -> Periodic:
        p = check_periodic(periodic)
        answer = await self._run("periodic", "set", p.name, p.definition, int(p.paused),
                                 repr(float(p.next_at)), MAX_PERIODICS)  # fmt: skip
        if answer == b"full":
            raise InvalidJob(f"at most {MAX_PERIODICS} periodic schedules: remove one first")
        return _periodic([p.name.encode(), *answer])

    async def periodics(self) -> builtins.list[Periodic]:
        rows = await self._run("periodic_read", "all")
        return sorted((_periodic(r) for r in rows), key=lambda p: p.name)

    async def remove_periodic(self, name: str) -> bool:
        return bool(await self._run("periodic", "remove", check_name("schedule name", name)))

    async def pause_periodic(self, name: str, paused: bool) -> None:
        name = check_name("schedule name", name)
        if not await self._run("periodic", "pause", name, "1" if paused else "0"):
            raise InvalidJob(f"no periodic schedule {name!r}")

    async def due_periodics(self, now: float, limit: int = 100) -> builtins.list[Periodic]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidJob("limit must be 1 or more")
        return [_periodic(r) for r in await self._run("periodic_read", "due", repr(now), limit)]

    async def fire_periodic(
        self, name: str, tick: float, next_at: float, spec: JobSpec | None, now: float
    ) -> Enqueued | None:
        check_name("schedule name", name)
        specs = [] if spec is None else [
            dataclasses.replace(spec, unique_key=periodic_key(name, tick))
        ]  # fmt: skip
        wire, payloads = _wire(specs)
        guard = codec.dumps({"name": name, "tick": repr(float(tick)),
                             "next_at": repr(float(next_at))})  # fmt: skip
        [answer] = await self._run("enqueue", repr(now), codec.dumps(wire), guard, *payloads)
        out = _enqueued(answer)
        if not out:  # not this tick's turn, or no spec
            return None
        self._announce(ready=out[0].created and out[0].state is S.QUEUED)
        return out[0]
