"""How a job's code runs, and how each kind is stopped.

- async tasks run on the worker's event loop; stopping cancels them;
- sync tasks run in a thread pool (cannot be killed: a stopped job keeps its slot
  until it really returns) or a process pool (the child is killed and replaced);
- shell jobs run in their own process group, killed whole;
- the built-in text and file types run inline or in a thread.

Every runner returns an Outcome: a result (JSON value or bytes) or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import signal
import struct
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distqueue import codec, defaults
from distqueue.errors import DistQueueError, InvalidJob
from distqueue.worker.builtins import BUILTINS, SLEEP, sleep_seconds, text_of
from distqueue.worker.registry import (
    FileResult,
    JobContext,
    Task,
    call_args,
    reset_context,
    set_context,
)

__all__ = [
    "SHELL_OUTPUT_LIMIT",
    "Outcome",
    "OutputTooLarge",
    "ProcessPool",
    "call_sync",
    "error_outcome",
    "finish_result",
    "run_async",
    "run_builtin",
    "run_inline",
    "run_shell",
]

#: 4-byte big-endian length prefix of the frames spoken with pool children
_LEN = struct.Struct(">I")
#: the most bytes of a shell job's stdout, and of its stderr, kept (WorkerOptions)
SHELL_OUTPUT_LIMIT = defaults.SHELL_OUTPUT_LIMIT
#: bytes read from a shell job's pipe at a time
SHELL_CHUNK = 64 * 1024
#: seconds a timed-out shell job's pipes are still read after the kill
SHELL_DRAIN = 1.0
#: seconds a killed shell command is waited for, to be reaped
SHELL_REAP = 5.0


@dataclass
class Outcome:
    #: the result when the job succeeded: a JSON value, or bytes for a file result
    result: Any = None
    #: the error when it failed: {"kind", "message", "traceback", "retryable"}
    error: dict[str, Any] | None = None


def error_outcome(exc: BaseException, *, retryable: bool | None = None) -> Outcome:
    """An exception as a failure: distqueue's own errors (invalid arguments, ...) are
    permanent, everything else retryable, unless said otherwise."""
    if retryable is None:
        retryable = not isinstance(exc, DistQueueError)
    return Outcome(error={
        "kind": type(exc).__name__, "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)), "retryable": retryable,
    })  # fmt: skip


def finish_result(value: Any) -> Outcome:
    """A task's return value as an Outcome: bytes and FileResult are file results."""
    if isinstance(value, FileResult):
        path = Path(value.path)
        data = path.read_bytes()
        if value.delete:
            path.unlink(missing_ok=True)
        return Outcome(result=data)
    if isinstance(value, bytes | bytearray | memoryview):
        return Outcome(result=bytes(value))
    try:
        codec.dumps(value, "the task's result")
    except InvalidJob as exc:
        return error_outcome(exc, retryable=False)
    return Outcome(result=value)


async def run_async(task: Task, args: Any, ctx: JobContext) -> Outcome:
    """An async task, on this loop (the caller cancels it to stop it)."""
    token = set_context(ctx)
    try:
        pos, kw = call_args(task.fn, args)
        return finish_result(await task.fn(*pos, **kw))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return error_outcome(exc)
    finally:
        reset_context(token)


def call_sync(task: Task, args: Any) -> Outcome:
    """A sync task's call, as an Outcome (run in a thread or a pool child)."""
    try:
        pos, kw = call_args(task.fn, args)
        return finish_result(task.fn(*pos, **kw))
    except Exception as exc:
        return error_outcome(exc)


def run_inline(type_: str, args: Any) -> Outcome:
    """The instant built-ins (text types, noop)."""
    try:
        return finish_result(BUILTINS[type_](args))
    except Exception as exc:
        return error_outcome(exc)


async def run_builtin(type_: str, args: Any, payload: bytes | None) -> Outcome:
    """The built-in types: text ones inline, gzip/gunzip in a thread."""
    try:
        if type_ == "gzip":
            data = payload or b""
            return Outcome(result=await asyncio.to_thread(gzip.compress, data, 6))
        if type_ == "gunzip":
            data = payload or b""
            try:
                return Outcome(result=await asyncio.to_thread(gzip.decompress, data))
            except (OSError, EOFError) as exc:  # not gzip data: retrying cannot help
                return error_outcome(InvalidJob(f"payload is not gzip data: {exc}"))
        if type_ == SLEEP:
            seconds = sleep_seconds(args)
            await asyncio.sleep(seconds)
            return Outcome(result=seconds)
        return finish_result(BUILTINS[type_](args))
    except Exception as exc:
        return error_outcome(exc)


async def run_shell(
    command: Any,
    limit: float,
    on_start: Callable[[Callable[[], None]], None],
    output_limit: int = SHELL_OUTPUT_LIMIT,
) -> Outcome:
    """A shell command in its own process group; ``on_start`` gets the kill switch.
    Result: stdout, stderr, exit_code; a non-zero exit is a (retryable) failure.

    Each stream is read as it comes, up to ``output_limit`` bytes: one that passes it
    gets the whole group killed at once (nothing more is read) and the job fails for
    good, kind OutputTooLarge; output is never cut short silently."""
    try:
        text = text_of(command)
    except InvalidJob as exc:
        return error_outcome(exc)
    proc = await asyncio.create_subprocess_shell(
        text, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    on_start(kill)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    readers = [
        asyncio.ensure_future(_read_capped(proc.stdout, out, output_limit, "stdout", kill)),
        asyncio.ensure_future(_read_capped(proc.stderr, err, output_limit, "stderr", kill)),
    ]
    tasks = [*readers, asyncio.ensure_future(proc.wait())]
    try:
        done, _ = await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            failure = task.exception()
            if isinstance(failure, OutputTooLarge):  # killed already
                # the stream that passed the limit is read no more: what its pipe
                # still holds is read and dropped, so the pipe reaches its end and the
                # process can be waited for (an unread pipe kept proc.wait() waiting
                # for ever); bounded, like the timeout's drain below
                stream = proc.stdout if task is readers[0] else proc.stderr
                tasks.append(asyncio.ensure_future(_discard(stream)))
                await asyncio.wait([t for t in tasks if not t.done()], timeout=SHELL_DRAIN)
                transport = getattr(proc, "_transport", None)  # (asyncio's own, 3.11+)
                if transport is not None and proc.returncode is not None:
                    transport.close()  # its pipes too: none is left for the collector
                return Outcome(error={
                    "kind": "OutputTooLarge", "message": str(failure), "traceback": "",
                    "retryable": False,
                })  # fmt: skip
            if failure is not None:
                raise failure
        if len(done) < len(tasks):
            kill()
            # what the pipes still hold (a process that left the group may keep them
            # open: not waited for long)
            await asyncio.wait(readers, timeout=SHELL_DRAIN)
            return Outcome(error={
                "kind": "timeout", "message": f"shell command ran over its {limit:g}s limit",
                "traceback": err.decode(errors="replace"), "retryable": True,
            })  # fmt: skip
    finally:
        for task in tasks:
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a reader past the limit while draining
        if proc.returncode is None:
            kill()
            # reaped here, not left to the garbage collector ("subprocess is still
            # running"): killed with its group, it goes at once (bounded anyway)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SHELL_REAP):
                    await proc.wait()
        transport = getattr(proc, "_transport", None)  # (asyncio's own, 3.11+)
        if transport is not None:
            transport.close()  # its pipes too
    result = {
        "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace"),
        "exit_code": proc.returncode,
    }  # fmt: skip
    if proc.returncode != 0:
        return Outcome(error={
            "kind": "exit", "message": f"exit code {proc.returncode}",
            "traceback": f"stderr:\n{result['stderr']}\nstdout:\n{result['stdout']}",
            "retryable": True,
        })  # fmt: skip
    return Outcome(result=result)


async def _discard(stream: asyncio.StreamReader) -> None:
    """Read ``stream`` to its end, dropping what it holds."""
    with contextlib.suppress(Exception):
        while await stream.read(1 << 16):
            pass


class OutputTooLarge(Exception):
    """A shell job's stdout or stderr passed the worker's --shell-output-limit."""


async def _read_capped(
    stream: asyncio.StreamReader, buf: bytearray, limit: int, name: str,
    kill: Callable[[], None],
) -> None:  # fmt: skip
    """Read ``stream`` into ``buf`` until its end; past ``limit`` bytes, kill the
    command and raise OutputTooLarge (what is left is never read)."""
    while chunk := await stream.read(SHELL_CHUNK):
        if len(buf) + len(chunk) > limit:
            kill()
            raise OutputTooLarge(
                f"shell output too large: {name} passed the limit of {limit} bytes"
                " (worker --shell-output-limit)"
            )
        buf += chunk


# -- the process pool ---------------------------------------------------------------------


async def write_frame(writer: asyncio.StreamWriter, header: dict[str, Any], body: bytes) -> None:
    head = codec.dumps(header)
    writer.write(_LEN.pack(len(head)) + head + _LEN.pack(len(body)))
    writer.write(body)
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    (n,) = _LEN.unpack(await reader.readexactly(4))
    header = codec.loads(await reader.readexactly(n))
    (m,) = _LEN.unpack(await reader.readexactly(4))
    return header, await reader.readexactly(m)


class _Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        #: the job it runs now (so a late kill of an earlier job cannot hit the next)
        self.job: object | None = None

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    def killer(self, job: object) -> Callable[[], None]:
        def kill() -> None:
            if self.job is job:
                self.kill()

        return kill


class ProcessPool:
    """N child processes (``python -m distqueue.worker.child``), one job each at a
    time. A child that is killed (timeout, cancel) is replaced by a fresh one.

    The children are stopped by this process alone: each runs in a session of its
    own, so a Ctrl-C at the terminal (SIGINT to the foreground process group) or a
    SIGTERM to the worker's group reaches the worker and not the job it runs, and
    they ignore both; they die with their worker (see distqueue.worker.child)."""

    def __init__(self, size: int, modules: list[str]) -> None:
        self.size = size
        self.modules = modules
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._children: set[_Child] = set()

    async def start(self) -> None:
        for _ in range(self.size):
            await self._spawn()

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "distqueue.worker.child", *self.modules,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
            start_new_session=True, env={**os.environ, "DISTQUEUE_POOL_PARENT": str(os.getpid())},
        )  # fmt: skip
        child = _Child(proc)
        self._children.add(child)
        self._idle.put_nowait(child)

    async def run(
        self, task: Task, args: Any, ctx: JobContext,
        on_start: Callable[[Callable[[], None]], None],
    ) -> Outcome:  # fmt: skip
        child = await self._idle.get()
        child.job = job = object()
        on_start(child.killer(job))
        proc = child.proc
        assert proc.stdin is not None and proc.stdout is not None
        header = {"type": task.name, "args": args, "id": ctx.id, "attempts": ctx.attempts,
                  "token": ctx.token, "has_payload": ctx.payload is not None}  # fmt: skip
        try:
            await write_frame(proc.stdin, header, ctx.payload or b"")
            while True:
                reply, body = await read_frame(proc.stdout)
                if reply["event"] == "progress":
                    ctx.progress(reply["percent"], reply["message"])
                    continue
                break
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
            await self._replace(child)
            return error_outcome(RuntimeError(f"the pool process died: {exc}"), retryable=True)
        except BaseException:
            await self._replace(child)
            raise
        child.job = None
        self._idle.put_nowait(child)
        if reply.get("error") is not None:
            return Outcome(error=reply["error"])
        return Outcome(result=body if reply.get("kind") == "bytes" else reply.get("result"))

    async def _replace(self, child: _Child) -> None:
        child.kill()
        await child.proc.wait()
        self._children.discard(child)
        await self._spawn()

    async def close(self) -> None:
        for child in list(self._children):
            child.kill()
        for child in list(self._children):
            await child.proc.wait()
        self._children.clear()
