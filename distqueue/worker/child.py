"""A process-pool child: ``python -m distqueue.worker.child MODULE...``.

Reads jobs from stdin and answers on stdout, in length-prefixed frames (a JSON
header, then a body of raw bytes: the payload in, a file result out). Task
output printed to stdout goes to stderr instead, so it cannot break the frames.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from typing import Any, BinaryIO

import orjson

from distqueue.worker.executors import call_sync
from distqueue.worker.registry import JobContext, import_tasks, run_with_context

_LEN = struct.Struct(">I")


def _read(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError
    return data


def main(modules: list[str]) -> None:
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
            payload=payload if header.get("has_payload") else None,
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
