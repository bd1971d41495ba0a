"""The Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio), same methods.

    with Client("127.0.0.1:7700") as client:
        job_id = client.submit("wordcount", "hello world")
        print(client.result(job_id, wait=10))        # 2

Each keeps one connection and reuses it (reconnecting after a failure); errors
raise the typed exceptions of distqueue.errors with the server's message.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from distqueue import codec
from distqueue.client.connection import Arg, AsyncConnection, Connection
from distqueue.client.direct import DirectConnection, SyncDirectConnection, is_store_url
from distqueue.errors import InvalidJob, QueueFull
from distqueue.jobs import Job
from distqueue.names import task_name
from distqueue.protocol.messages import job_from_wire

if TYPE_CHECKING:
    import ssl

__all__ = ["AsyncClient", "Client", "schedule_command", "submit_command"]


def _spec(
    target: str | Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    """A spec dict: the job type (a name, or a @task function), its arguments as the
    worker will call the task with them, and the options that were given."""
    spec: dict[str, Any] = {"type": target if isinstance(target, str) else task_name(target)}
    if kwargs:
        spec["args"] = {"args": list(args), "kwargs": kwargs} if args else kwargs
    elif args:
        spec["args"] = list(args)
    for key, value in options.items():
        if value is not None and key != "payload":
            spec[key] = value
    if options.get("payload") is not None:
        spec["payload"] = True
    if not isinstance(target, str) and options.get("check_type") is None:
        spec["check_type"] = False  # a task of this process: its type is no typo
    return spec


def _submit_one(
    target: str | Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    task_kwargs: dict[str, Any],
    options: dict[str, Any],
) -> list[Arg]:
    """SUBMIT for one job, its payload (if any) as the bulk after the spec."""
    spec = _spec(target, args, {**(kwargs or {}), **task_kwargs}, options)
    command: list[Arg] = ["SUBMIT", codec.dumps(spec)]
    if options.get("payload") is not None:
        command.append(options["payload"])
    return command


def submit_command(specs: Sequence[dict[str, Any]]) -> list[Arg]:
    """SUBMIT for many spec dicts; a spec's ``payload`` (bytes) travels as its own bulk."""
    wire: list[dict[str, Any]] = []
    payloads: list[Arg] = []
    for spec in specs:
        if not isinstance(spec, dict):
            raise InvalidJob("each job spec must be a dict")
        payload = spec.get("payload")
        if isinstance(payload, bytes | bytearray | memoryview):
            spec = {**spec, "payload": True}
            payloads.append(bytes(payload))
        wire.append(spec)
    return ["SUBMIT", codec.dumps(wire), *payloads]


def _result(reply: list[bytes]) -> Any:
    kind, data = reply
    return data if kind == b"bytes" else codec.loads(data, "result")


def _list_args(
    state: str | None, queue: str | None, type: str | None, limit: int, before: int | None
) -> list[Arg]:
    args: list[Arg] = ["LIST", "LIMIT", limit]
    filters: list[tuple[str, str | int | None]] = [
        ("STATE", state),
        ("QUEUE", queue),
        ("TYPE", type),
        ("BEFORE", before),
    ]
    for name, value in filters:
        if value is not None:
            args += [name, value]
    return args


#: what a schedule's job may say besides the task's own arguments
_SCHEDULE_OPTIONS = ("queue", "priority", "retries", "timeout")


def _ids(after: int | Sequence[int] | None) -> list[int] | None:
    if after is None:
        return None
    return [after] if isinstance(after, int) else [int(i) for i in after]


def _backoff() -> Iterator[float]:
    """Naps between tries of a submit refused as full: 0.05 s doubling to 2 s."""
    nap = 0.05
    while True:
        yield nap
        nap = min(2.0, nap * 2)


def _scope_of(type: str | None, queue: str | None) -> list[Arg]:
    if (type is None) == (queue is None):
        raise InvalidJob("name a job type (type=...) or a queue (queue=...), one of them")
    return ["type", type] if type is not None else ["queue", queue]  # type: ignore[list-item]


def _limit_args(type: str | None, queue: str | None, changes: dict[str, Any]) -> list[Arg]:
    args: list[Arg] = ["LIMIT", "SET", *_scope_of(type, queue)]
    for name, value in changes.items():
        args += [name.upper(), "none" if value is None else str(value)]
    if len(args) == 4:
        raise InvalidJob("set at least one of concurrency, rate, burst, max_depth")
    return args


def _schedule_args(
    name: str, target: str | Callable[..., Any], args: Sequence[Any], cron: str | None,
    every: float | None, timezone: str, catch_up: str, options: dict[str, Any],
) -> list[Arg]:  # fmt: skip
    own = {k: options.pop(k) for k in _SCHEDULE_OPTIONS if k in options}
    return schedule_command(name, target, args, options, own, cron, every, timezone, catch_up)


def schedule_command(
    name: str, target: str | Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
    options: dict[str, Any], cron: str | None, every: float | None, timezone: str,
    catch_up: str,
) -> list[Arg]:  # fmt: skip
    """SCHEDULE ADD for ``target(*args, **kwargs)`` with job ``options`` (queue,
    priority, retries, timeout)."""
    job = _spec(target, args, kwargs, options)
    job.pop("check_type", None)
    body = {"cron": cron, "every": every, "timezone": timezone, "catch_up": catch_up, "job": job}
    return ["SCHEDULE", "ADD", name, codec.dumps({k: v for k, v in body.items() if v is not None})]


class Client:
    """A blocking client. ``server`` is ``host:port[,host:port...]`` (default
    $DISTQUEUE_SERVER, else 127.0.0.1:7700); a list fails over in order. A store URL
    (``redis://host:port/db``, ``rediss://`` over TLS) works with the shared store
    directly, no server.

    TLS: an address written ``tls://host:port``, or ``tls=True`` for every address
    (``tls`` may also be an ``ssl.SSLContext``); ``tls_ca`` trusts that CA file
    instead of the system's store, ``tls_cert``/``tls_key`` present a client
    certificate, and either implies TLS. Not given, they are read from
    DISTQUEUE_TLS(=1), DISTQUEUE_TLS_CA, DISTQUEUE_TLS_CERT, DISTQUEUE_TLS_KEY."""

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        timeout: float | None = None,
        tls: bool | ssl.SSLContext | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        full_wait: float = 0.0,
    ) -> None:
        #: seconds a submit refused because its queue is full (QueueFull) keeps trying
        #: again, with backoff, before it raises; 0 = raise at once
        self.full_wait = full_wait
        self.connection: Any
        if is_store_url(server):  # direct mode: straight to the shared store
            self.connection = SyncDirectConnection(server)  # type: ignore[arg-type]
        else:
            self.connection = Connection(
                server, token=token, timeout=timeout,
                tls=tls, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
            )  # fmt: skip

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    def call(self, *args: Arg) -> Any:
        return self.connection.call(*args)

    def submit(
        self,
        target: str | Callable[..., Any],
        *args: Any,
        payload: bytes | None = None,
        queue: str | None = None,
        priority: int | str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        delay: float | None = None,
        run_at: float | None = None,
        deadline: float | None = None,
        unique_key: str | None = None,
        check_type: bool | None = None,
        after: int | Sequence[int] | None = None,
        on_failure: str | None = None,
        pass_results: bool | None = None,
        kwargs: dict[str, Any] | None = None,
        **task_kwargs: Any,
    ) -> int:
        """Submit one job; return its id.

        ``target`` is a job type or a ``@distqueue.task`` function; ``args`` and any
        keyword not named here go to the task (``kwargs=`` passes keywords whose
        names clash with these options). ``after``: ids of jobs it waits for (it runs
        once they have all succeeded; ``on_failure="run"`` runs it even when one
        failed, else it is cancelled then); ``pass_results`` puts their results first
        in its arguments (docs/lifecycle.md "Workflows").
        """
        options = dict(
            payload=payload, queue=queue, priority=priority, retries=retries,
            timeout=timeout, delay=delay, run_at=run_at, deadline=deadline,
            unique_key=unique_key, check_type=check_type, after=_ids(after),
            on_failure=on_failure, pass_results=pass_results,
        )  # fmt: skip
        command = _submit_one(target, args, kwargs, task_kwargs, options)
        return int(self._when_full(lambda: self.call(*command)))

    def submit_many(self, specs: Iterable[dict[str, Any]]) -> builtins.list[int]:
        """Submit many jobs in one call (one transaction): spec dicts as in
        docs/protocol.md, with ``payload`` as bytes. Returns their ids in order."""
        command = submit_command(list(specs))
        return [int(i) for i in self._when_full(lambda: self.call(*command))]

    def status(self, job_id: int) -> Job:
        return job_from_wire(self.call("STATUS", job_id))

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Block until the job has finished; Timeout after ``timeout`` seconds."""
        args: list[Arg] = ["WAIT", job_id]
        if timeout is not None:
            args.append(timeout)
        return job_from_wire(self.call(*args))

    def result(self, job_id: int, wait: float | None = None) -> Any:
        """The job's result (JSON value or bytes). With ``wait``, wait that long for
        it first. Raises NotFinished, JobFailed, JobNotFound, Timeout."""
        if wait is not None:
            self.wait(job_id, wait)
        return _result(self.call("RESULT", job_id))

    def cancel(self, job_id: int) -> str:
        """``cancelled``, or ``cancelling`` when its worker is being told to stop it."""
        return str(self.call("CANCEL", job_id).decode())

    def retry(self, job_id: int) -> None:
        self.call("RETRY", job_id)

    def purge(self, job_id: int) -> None:
        self.call("PURGE", job_id)

    def list(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        type: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[Job]:
        return [job_from_wire(j) for j in self.call(*_list_args(state, queue, type, limit, before))]

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = codec.loads(self.call("STATS"), "stats")
        return stats

    def ping(self) -> None:
        self.call("PING")

    def _when_full(self, send: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.full_wait
        for nap in _backoff():
            try:
                return send()
            except QueueFull:
                if time.monotonic() + nap > deadline:
                    raise
                time.sleep(nap)
        raise AssertionError("unreachable")

    # -- workflows and flow control (docs/lifecycle.md "Workflows", "Limits") --------

    def chain(self, steps: Sequence[Sequence[Any]], *, pass_results: bool = False,
              on_failure: str = "cancel", **options: Any) -> builtins.list[int]:  # fmt: skip
        """Submit ``steps`` (each ``(target, *args)``) so each runs after the one before
        it succeeded; with ``pass_results`` each gets the one before's result as its
        first argument. ``options`` (queue, priority, ...) apply to every step.
        Returns the ids in order."""
        ids: builtins.list[int] = []
        for target, *args in steps:
            extra: dict[str, Any] = {"after": ids[-1:], "pass_results": pass_results or None,
                     "on_failure": on_failure} if ids else {}  # fmt: skip
            ids.append(self.submit(target, *args, **options, **extra))
        return ids

    def group(self, steps: Sequence[Sequence[Any]], *, then: Sequence[Any] | None = None,
              pass_results: bool = False, on_failure: str = "cancel",
              **options: Any) -> tuple[builtins.list[int], int | None]:  # fmt: skip
        """Submit ``steps`` to run side by side and, with ``then`` (``(target,
        *args)``), one job after all of them (fan-out, fan-in: with ``pass_results``
        it gets the list of their results first). Returns (ids, then's id)."""
        ids = [self.submit(target, *args, **options) for target, *args in steps]
        if then is None:
            return ids, None
        target, *args = then
        last = self.submit(target, *args, after=ids, pass_results=pass_results or None,
                           on_failure=on_failure, **options)  # fmt: skip
        return ids, last

    def set_limit(self, *, type: str | None = None, queue: str | None = None,
                  **changes: Any) -> dict[str, Any]:  # fmt: skip
        """Set a limit of a job type or a queue: ``concurrency=5``, ``rate="100/m"``,
        ``burst=10``, ``max_depth=100000`` (None removes that one). Returns it."""
        return dict(codec.loads(self.call(*_limit_args(type, queue, changes)), "limit"))

    def clear_limit(self, *, type: str | None = None, queue: str | None = None) -> None:
        self.call("LIMIT", "CLEAR", *_scope_of(type, queue))

    def limits(self) -> builtins.list[dict[str, Any]]:
        return list(codec.loads(self.call("LIMIT", "LIST"), "limits"))

    def pause(self, queue: str, seconds: float | None = None) -> None:
        """No job of ``queue`` is handed out until resume() — or, given ``seconds``,
        until they have passed (the store keeps the end: it holds across restarts and
        servers); running ones finish."""
        self.call("PAUSE", queue, *([] if seconds is None else [repr(float(seconds))]))

    def resume(self, queue: str) -> None:
        self.call("RESUME", queue)

    def paused(self) -> builtins.list[str]:
        return [q.decode() for q in self.call("PAUSED")]

    def pauses(self) -> dict[str, float | None]:
        """Each paused queue: when its pause ends (epoch seconds), None: when resumed."""
        return dict(codec.loads(self.call("PAUSED", "ENDS"), "pauses"))

    def schedule(self, name: str, target: str | Callable[..., Any], *args: Any,
                 cron: str | None = None, every: float | None = None,
                 timezone: str = "UTC", catch_up: str = "once",
                 **options: Any) -> dict[str, Any]:  # fmt: skip
        """Submit ``target(*args)`` at each tick of ``cron`` (5 fields, or 6 with
        seconds first, in ``timezone``) or ``every`` seconds, once per tick however
        many servers run. ``options``: queue, priority, retries, timeout, and the
        task's keywords. Returns the schedule (with its next_at)."""
        command = _schedule_args(name, target, args, cron, every, timezone, catch_up, options)
        return dict(codec.loads(self.call(*command), "schedule"))

    def schedules(self) -> builtins.list[dict[str, Any]]:
        return list(codec.loads(self.call("SCHEDULE", "LIST"), "schedules"))

    def unschedule(self, name: str) -> None:
        self.call("SCHEDULE", "REMOVE", name)

    def pause_schedule(self, name: str, paused: bool = True) -> None:
        self.call("SCHEDULE", "PAUSE" if paused else "RESUME", name)


class AsyncClient:
    """The asyncio twin of Client: the same methods, awaited; concurrent calls share
    one pipelined connection. TLS as for Client."""

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        tls: bool | ssl.SSLContext | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        full_wait: float = 0.0,
    ) -> None:
        self.full_wait = full_wait
        self.connection: Any
        if is_store_url(server):  # direct mode: straight to the shared store
            self.connection = DirectConnection(server)  # type: ignore[arg-type]
        else:
            self.connection = AsyncConnection(server, token=token, tls=tls, tls_ca=tls_ca,
                                              tls_cert=tls_cert, tls_key=tls_key)  # fmt: skip

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.connection.close()

    async def call(self, *args: Arg) -> Any:
        return await self.connection.call(*args)

    async def submit(
        self,
        target: str | Callable[..., Any],
        *args: Any,
        payload: bytes | None = None,
        queue: str | None = None,
        priority: int | str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        delay: float | None = None,
        run_at: float | None = None,
        deadline: float | None = None,
        unique_key: str | None = None,
        check_type: bool | None = None,
        after: int | Sequence[int] | None = None,
        on_failure: str | None = None,
        pass_results: bool | None = None,
        kwargs: dict[str, Any] | None = None,
        **task_kwargs: Any,
    ) -> int:
        """Submit one job; return its id.

        ``target`` is a job type or a ``@distqueue.task`` function; ``args`` and any
        keyword not named here go to the task (``kwargs=`` passes keywords whose
        names clash with these options). ``after``, ``on_failure``, ``pass_results``:
        as for Client.submit.
        """
        options = dict(
            payload=payload, queue=queue, priority=priority, retries=retries,
            timeout=timeout, delay=delay, run_at=run_at, deadline=deadline,
            unique_key=unique_key, check_type=check_type, after=_ids(after),
            on_failure=on_failure, pass_results=pass_results,
        )  # fmt: skip
        command = _submit_one(target, args, kwargs, task_kwargs, options)
        return int(await self._when_full(lambda: self.call(*command)))

    async def submit_many(self, specs: Iterable[dict[str, Any]]) -> builtins.list[int]:
        command = submit_command(list(specs))
        return [int(i) for i in await self._when_full(lambda: self.call(*command))]

    async def status(self, job_id: int) -> Job:
        return job_from_wire(await self.call("STATUS", job_id))

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        args: list[Arg] = ["WAIT", job_id]
        if timeout is not None:
            args.append(timeout)
        return job_from_wire(await self.call(*args))

    async def result(self, job_id: int, wait: float | None = None) -> Any:
        if wait is not None:
            await self.wait(job_id, wait)
        return _result(await self.call("RESULT", job_id))

    async def cancel(self, job_id: int) -> str:
        return str((await self.call("CANCEL", job_id)).decode())

    async def retry(self, job_id: int) -> None:
        await self.call("RETRY", job_id)

    async def purge(self, job_id: int) -> None:
        await self.call("PURGE", job_id)

    async def list(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        type: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[Job]:
        replies = await self.call(*_list_args(state, queue, type, limit, before))
        return [job_from_wire(j) for j in replies]

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = codec.loads(await self.call("STATS"), "stats")
        return stats

    async def ping(self) -> None:
        await self.call("PING")

    async def _when_full(self, send: Callable[[], Awaitable[Any]]) -> Any:
        deadline = time.monotonic() + self.full_wait
        for nap in _backoff():
            try:
                return await send()
            except QueueFull:
                if time.monotonic() + nap > deadline:
                    raise
                await asyncio.sleep(nap)
        raise AssertionError("unreachable")

    async def chain(self, steps: Sequence[Sequence[Any]], *, pass_results: bool = False,
                    on_failure: str = "cancel", **options: Any) -> builtins.list[int]:  # fmt: skip
        ids: builtins.list[int] = []
        for target, *args in steps:
            extra: dict[str, Any] = {"after": ids[-1:], "pass_results": pass_results or None,
                     "on_failure": on_failure} if ids else {}  # fmt: skip
            ids.append(await self.submit(target, *args, **options, **extra))
        return ids

    async def group(self, steps: Sequence[Sequence[Any]], *, then: Sequence[Any] | None = None,
                    pass_results: bool = False, on_failure: str = "cancel",
                    **options: Any) -> tuple[builtins.list[int], int | None]:  # fmt: skip
        ids = [await self.submit(target, *args, **options) for target, *args in steps]
        if then is None:
            return ids, None
        target, *args = then
        last = await self.submit(target, *args, after=ids, pass_results=pass_results or None,
                                 on_failure=on_failure, **options)  # fmt: skip
        return ids, last

    async def set_limit(self, *, type: str | None = None, queue: str | None = None,
                        **changes: Any) -> dict[str, Any]:  # fmt: skip
        reply = await self.call(*_limit_args(type, queue, changes))
        return dict(codec.loads(reply, "limit"))

    async def clear_limit(self, *, type: str | None = None, queue: str | None = None) -> None:
        await self.call("LIMIT", "CLEAR", *_scope_of(type, queue))

    async def limits(self) -> builtins.list[dict[str, Any]]:
        return list(codec.loads(await self.call("LIMIT", "LIST"), "limits"))

    async def pause(self, queue: str, seconds: float | None = None) -> None:
        await self.call("PAUSE", queue, *([] if seconds is None else [repr(float(seconds))]))

    async def resume(self, queue: str) -> None:
        await self.call("RESUME", queue)

    async def paused(self) -> builtins.list[str]:
        return [q.decode() for q in await self.call("PAUSED")]

    async def pauses(self) -> dict[str, float | None]:
        return dict(codec.loads(await self.call("PAUSED", "ENDS"), "pauses"))

    async def schedule(self, name: str, target: str | Callable[..., Any], *args: Any,
                       cron: str | None = None, every: float | None = None,
                       timezone: str = "UTC", catch_up: str = "once",
                       **options: Any) -> dict[str, Any]:  # fmt: skip
        command = _schedule_args(name, target, args, cron, every, timezone, catch_up, options)
        return dict(codec.loads(await self.call(*command), "schedule"))

    async def schedules(self) -> builtins.list[dict[str, Any]]:
        return list(codec.loads(await self.call("SCHEDULE", "LIST"), "schedules"))

    async def unschedule(self, name: str) -> None:
        await self.call("SCHEDULE", "REMOVE", name)

    async def pause_schedule(self, name: str, paused: bool = True) -> None:
        await self.call("SCHEDULE", "PAUSE" if paused else "RESUME", name)
