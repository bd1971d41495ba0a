"""RESP framing only: reading requests, writing replies. It knows no commands.

Requests come in two forms (docs/protocol.md, "Framing"):
- RESP arrays of bulk strings, as every Redis client library sends them, parsed by
  hiredis at C speed;
- inline commands, one line of words as a person types them (``STATUS 42``), with
  "double" or 'single' quotes around a word that has spaces.
"""

from __future__ import annotations

import shlex
from typing import Any

import hiredis

from distqueue.errors import DistQueueError, ProtocolError, TooLarge

__all__ = [
    "RequestParser",
    "Simple",
    "encode_command",
    "encode_error",
    "encode_reply",
]

#: the longest inline line accepted (a person's typing, not a payload)
MAX_INLINE = 64 * 1024
CRLF = b"\r\n"


class Simple(str):
    """A reply sent as a RESP simple string (``+OK``) instead of a bulk string."""

    __slots__ = ()


class RequestParser:
    """Turns the bytes of a connection into commands (lists of bytes arguments).

    A connection starts in inline mode; its first request that starts with ``*``
    switches it to RESP for good (libraries speak RESP only, people inline only).
    ``feed`` returns the complete commands so far. It raises ProtocolError for a
    frame that cannot be read (the connection must then be closed: its stream has
    lost its framing) and TooLarge when one request passes ``max_request`` bytes —
    as soon as that many bytes are pending, never after buffering the rest.
    """

    def __init__(self, max_request: int) -> None:
        self.max_request = max_request
        self._reader = hiredis.Reader()
        self._buf = bytearray()
        self._resp = False
        #: bytes received since the last complete RESP request
        self._since = 0

    @property
    def pending(self) -> bool:
        """True while a request has started but not finished arriving."""
        return bool(self._buf) or (self._resp and (self._since > 0 or self._reader.has_data()))

    def feed(self, data: bytes) -> list[list[bytes]]:
        out: list[list[bytes]] = []
        if self._resp:
            self._feed_resp(data, out)
            return out
        self._buf += data
        while self._buf:
            if self._buf[0] == 0x2A:  # '*': a RESP array; RESP from now on
                self._resp = True
                rest, self._buf = bytes(self._buf), bytearray()
                self._feed_resp(rest, out)
                return out
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_INLINE:
                    raise ProtocolError(f"inline command longer than {MAX_INLINE} bytes")
                return out
            line = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[: end + 1]
            if line.strip():
                out.append(_split_inline(line))
        return out

    def _feed_resp(self, data: bytes, out: list[list[bytes]]) -> None:
        reader = self._reader
        reader.feed(data)
        self._since += len(data)
        while True:
            try:
                item = reader.gets()
            except hiredis.ProtocolError as exc:
                raise ProtocolError(f"malformed request: {exc}") from None
            if item is False:
                break
            out.append(_command(item))
            # what follows in this chunk belongs to the next request; it is at most
            # one read's worth, so the size check below can be late by no more
            self._since = 0
        if self._since > self.max_request:
            raise TooLarge(
                f"request larger than the limit of {self.max_request} bytes"
                " (the server's --max-payload)"
            )


def _command(item: Any) -> list[bytes]:
    if not isinstance(item, list) or not item:
        raise ProtocolError("a request must be a non-empty array of bulk strings")
    args: list[bytes] = []
    for arg in item:
        if isinstance(arg, bytes):
            args.append(arg)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            args.append(str(arg).encode())
        else:
            raise ProtocolError("a request must be a non-empty array of bulk strings")
    return args


def _split_inline(line: bytes) -> list[bytes]:
    text = line.decode("utf-8", "surrogateescape")
    try:
        words = shlex.split(text, posix=True)
    except ValueError as exc:
        raise ProtocolError(f"inline command: {exc}") from None
    return [w.encode("utf-8", "surrogateescape") for w in words]


def encode_command(*args: bytes | str | int | float) -> bytes:
    """One request as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = repr(arg).encode()
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(CRLF)
    return b"".join(parts)


def encode_error(exc: DistQueueError) -> bytes:
    """``-CODE message``, the message on one line."""
    message = " ".join(str(exc).split())
    return f"-{exc.code} {message}\r\n".encode("utf-8", "replace")


def encode_reply(value: Any) -> bytes:
    """Encode a reply: bytes -> bulk, Simple -> simple string, str -> bulk (UTF-8),
    int -> integer, None -> null, list/tuple -> array, DistQueueError -> error."""
    if isinstance(value, bytes):
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if isinstance(value, Simple):
        return b"+" + value.encode() + CRLF
    if isinstance(value, str):
        data = value.encode()
        return b"$%d\r\n%b\r\n" % (len(data), data)
    if isinstance(value, bool):
        return b":1\r\n" if value else b":0\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, DistQueueError):
        return encode_error(value)
    if isinstance(value, list | tuple):
        return b"*%d\r\n" % len(value) + b"".join(encode_reply(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__} as a reply")
