"""The Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio), same methods.

    with Client("127.0.0.1:7700") as client:
        job_id = client.submit("wordcount", "hello world")
        print(client.result(job_id, wait=10))        # 2

Each keeps one connection and reuses it (reconnecting after a failure); errors
raise the typed exceptions of distqueue.errors with the server's message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from distqueue import codec
from distqueue.client.connection import Arg, AsyncConnection, Connection
from distqueue.client.direct import DirectConnection, SyncDirectConnection, is_store_url
from distqueue.errors import InvalidJob
from distqueue.jobs import Job
from distqueue.names import task_name
from distqueue.protocol.messages import job_from_wire

if TYPE_CHECKING:
    import ssl

__all__ = ["AsyncClient", "Client", "submit_command"]


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
    ) -> None:
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
        kwargs: dict[str, Any] | None = None,
        **task_kwargs: Any,
    ) -> int:
        """Submit one job; return its id.

        ``target`` is a job type or a ``@distqueue.task`` function; ``args`` and any
        keyword not named here go to the task (``kwargs=`` passes keywords whose
        names clash with these options).
        """
        options = dict(
            payload=payload, queue=queue, priority=priority, retries=retries,
            timeout=timeout, delay=delay, run_at=run_at, deadline=deadline,
            unique_key=unique_key, check_type=check_type,
        )  # fmt: skip
        return int(self.call(*_submit_one(target, args, kwargs, task_kwargs, options)))

    def submit_many(self, specs: Iterable[dict[str, Any]]) -> list[int]:
        """Submit many jobs in one call (one transaction): spec dicts as in
        docs/protocol.md, with ``payload`` as bytes. Returns their ids in order."""
        return [int(i) for i in self.call(*submit_command(list(specs)))]

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
    ) -> list[Job]:
        return [job_from_wire(j) for j in self.call(*_list_args(state, queue, type, limit, before))]

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = codec.loads(self.call("STATS"), "stats")
        return stats

    def ping(self) -> None:
        self.call("PING")


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
    ) -> None:
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
        kwargs: dict[str, Any] | None = None,
        **task_kwargs: Any,
    ) -> int:
        """Submit one job; return its id.

        ``target`` is a job type or a ``@distqueue.task`` function; ``args`` and any
        keyword not named here go to the task (``kwargs=`` passes keywords whose
        names clash with these options).
        """
        options = dict(
            payload=payload, queue=queue, priority=priority, retries=retries,
            timeout=timeout, delay=delay, run_at=run_at, deadline=deadline,
            unique_key=unique_key, check_type=check_type,
        )  # fmt: skip
        return int(await self.call(*_submit_one(target, args, kwargs, task_kwargs, options)))

    async def submit_many(self, specs: Iterable[dict[str, Any]]) -> list[int]:
        return [int(i) for i in await self.call(*submit_command(list(specs)))]

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
    ) -> list[Job]:
        replies = await self.call(*_list_args(state, queue, type, limit, before))
        return [job_from_wire(j) for j in replies]

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = codec.loads(await self.call("STATS"), "stats")
        return stats

    async def ping(self) -> None:
        await self.call("PING")
