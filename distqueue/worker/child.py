"""A process-pool child: ``python -m distqueue.worker.child MODULE...``.

Reads jobs from stdin and answers on stdout, in length-prefixed frames (a JSON
header, then a body of raw bytes: the payload in, a file result out). Task
output printed to stdout goes to stderr instead, so it cannot break the frames.

Only its worker stops it: it ignores SIGINT and SIGTERM (a Ctrl-C meant for the
worker must not break off the job it runs: the worker drains and then kills it),
and it dies with its worker, which closes its stdin or, if it dies, leaves the
kernel to kill it (Linux) or a watcher thread to notice (elsewhere).
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import sys
import threading
import time
from typing import Any, BinaryIO

import orjson

from distqueue.worker.executors import call_sync
from distqueue.worker.registry import JobContext, import_tasks, run_with_context

_LEN = struct.Struct(">I")

#: the environment variable with the pid of the worker that started this child
PARENT_ENV = "DISTQUEUE_POOL_PARENT"
#: prctl(2) option: the signal this process gets when its parent exits (Linux)
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux
    only: False elsewhere, or if it is refused). The caller should check afterwards
    that its parent is still the one it expects: one that died before is missed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent: int, interval: float = 0.5) -> None:
    """Exit at once when ``parent`` is no longer this process's parent (a thread)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="dq-parent", daemon=True).start()


def _follow_parent() -> None:
    """Stopped by the worker alone, and never outliving it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = int(os.environ.pop(PARENT_ENV, "0")) or os.getppid()
    if not die_with_parent(signal.SIGKILL):
        watch_parent(parent)
    elif os.getppid() != parent:  # it died before the kernel was told
        os._exit(1)


def _read(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError
    return data


def main(modules: list[str]) -> None:
    _follow_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints from tasks land on stderr
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer
    lock = threading.Lock()

    def send(header: dict[str, Any], body: bytes = b"") -> None:
        head = orjson.dumps(header)
        with lock:
            out.write(_LEN.pack(len(head)) + head + _LEN.pack(len(body)) + body)
            out.flush()

    tasks = import_tasks(modules)
    while True:
        try:
            (n,) = _LEN.unpack(_read(stdin, 4))
            header = orjson.loads(_read(stdin, n))
            (m,) = _LEN.unpack(_read(stdin, 4))
            payload = _read(stdin, m)
        except EOFError:
            return
        ctx = JobContext(
            id=header["id"], attempts=header["attempts"], type=header["type"],
            token=header.get("token", 0), payload=payload if header.get("has_payload") else None,
            report=lambda p, msg: send({"event": "progress", "percent": p, "message": msg}),
        )  # fmt: skip
        outcome = run_with_context(ctx, call_sync, tasks[header["type"]], header["args"])
        ctx.cleanup()
        if outcome.error is not None:
            send({"event": "done", "error": outcome.error})
        elif isinstance(outcome.result, bytes):
            send({"event": "done", "kind": "bytes"}, outcome.result)
        else:
            send({"event": "done", "kind": "json", "result": outcome.result})


if __name__ == "__main__":
    main(sys.argv[1:])
