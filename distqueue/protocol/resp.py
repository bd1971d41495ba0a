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

from distqueue.errors import DistQueueError, ProtocolError, TooLarge

__all__ = [
    "RequestParser",
    "Resp3",
    "Simple",
    "encode_command",
    "encode_error",
    "encode_reply",
    "encode_reply3",
]

#: the longest inline line accepted (a person's typing, not a payload)
MAX_INLINE = 64 * 1024
#: the most arguments one request may have (a bulk SUBMIT's payloads are arguments)
MAX_ARGS = 1024 * 1024
#: the longest RESP header line (``*`` or ``$`` and a decimal number)
MAX_HEADER = 32
#: unread bytes up to this many are split at CRLFs in one go (the fast path)
FAST_SPAN = 256 * 1024
CRLF = b"\r\n"


class Simple(str):
    """A reply sent as a RESP simple string (``+OK``) instead of a bulk string."""

    __slots__ = ()


class Resp3:
    """A reply to send in RESP3 forms whatever the connection speaks: the answer to
    Redis's ``HELLO 3`` (a map), and every reply of a connection that said it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class RequestParser:
    """Turns the bytes of a connection into commands (lists of bytes arguments).

    A connection starts in inline mode; its first request that starts with ``*``
    switches it to RESP for good (libraries speak RESP only, people inline only).

    Every limit holds before a byte of what it limits is buffered: a RESP header is
    checked when its line arrives — an array of more than ``max_args`` elements, a
    nested array, a bulk string longer than ``max_arg``, or one that would take the
    request past ``max_request`` bytes (its whole frame, headers included) is
    refused at once, exact to the byte. Nothing is allocated from a declared size:
    arguments are collected as they arrive. ``feed`` raises ProtocolError for a
    frame that cannot be read and TooLarge for one over a limit; either way the
    connection must be closed (its stream has lost its framing).

    The limits may change between requests (a connection raises them once it has
    authenticated): ``feed(data, most=1)`` returns at most one command and keeps
    the rest for the next call, so each request is read under the limits in force
    when the one before it has been dispatched.
    """

    def __init__(
        self,
        max_request: int,
        *,
        max_arg: int | None = None,
        max_args: int = MAX_ARGS,
        why: str = "the server's --max-payload",
    ) -> None:
        self.max_request = max_request
        self.max_arg = max_request if max_arg is None else max_arg
        self.max_args = max_args
        #: where the limits come from, for the error message
        self.why = why
        self._resp = False
        #: the error that ended this stream (raised by every feed from then on)
        self.error: ProtocolError | None = None
        #: unread bytes: a part of a request, or several requests when ``most`` held
        self._rest = b""
        #: while a long bulk string arrives: its bytes (from _rest on), gathered in
        #: one buffer, and how many are wanted before parsing goes on
        self._gather = bytearray()
        self._need = 0
        # the RESP request being read: its arguments so far, how many are still to
        # come, the length of the bulk string awaited (-1: a header line), its size
        self._args: list[bytes] | None = None
        self._left = 0
        self._bulk = -1
        self._size = 0

    def set_limits(
        self, max_request: int, *, max_arg: int | None = None, max_args: int = MAX_ARGS, why: str
    ) -> None:
        """New limits, from the next request on."""
        self.max_request = max_request
        self.max_arg = max_request if max_arg is None else max_arg
        self.max_args = max_args
        self.why = why

    @property
    def pending(self) -> bool:
        """True while a request has started but not finished arriving."""
        return bool(self._rest) or bool(self._need) or self._args is not None

    def discard(self) -> None:
        """Drop what is buffered (the connection will read no more)."""
        self._rest, self._gather, self._need = b"", bytearray(), 0
        self._args, self._bulk = None, -1

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as commands."""
        return len(self._rest) + len(self._gather)

    def feed(self, data: bytes, most: int | None = None) -> list[list[bytes]]:
        """The requests complete so far (at most ``most``). A bad frame raises; the
        whole requests before it in the same bytes are returned first, and the error
        is raised by the next call (the caller runs them, then the next call fails):
        what a client sent before its mistake is done, as Redis does."""
        if self.error is not None:
            raise self.error
        if self._need:
            self._gather += data
            if len(self._gather) < self._need:
                return []
            buf = bytes(self._gather)
            self._gather, self._need = bytearray(), 0
        else:
            buf = self._rest + data if self._rest else bytes(data)
        out: list[list[bytes]] = []
        pos = 0
        try:
            if not self._resp:
                pos = self._inline(buf, out, most)
            if self._resp:
                pos = self._walk(buf, pos, out, most)
        except ProtocolError as exc:  # TooLarge too
            self.error = exc
            if not out:
                raise
        finally:
            rest = buf[pos:] if pos else buf
            if self._bulk >= 0 and len(rest) < self._bulk + 2 and len(rest) > 65536:
                # a long bulk string is on its way: gather it without re-copying
                self._gather, self._need = bytearray(rest), self._bulk + 2
                rest = b""
            self._rest = rest
        return out

    def _inline(self, buf: bytes, out: list[list[bytes]], most: int | None) -> int:
        limit = min(MAX_INLINE, self.max_request)
        pos = 0
        while pos < len(buf) and (most is None or len(out) < most):
            if buf[pos] == 0x2A:  # '*': a RESP array; RESP from now on
                self._resp = True
                break
            if buf[pos] == 0x16 and buf[pos + 1 : pos + 2] == b"\x03":  # a TLS record
                raise ProtocolError("a TLS handshake, but this server speaks plain RESP: no TLS")
            end = buf.find(b"\n", pos, pos + limit + 1)
            if end < 0:
                if len(buf) - pos > limit:
                    raise ProtocolError(f"inline command longer than {limit} bytes")
                break
            line = buf[pos:end].rstrip(b"\r")
            pos = end + 1
            if line.strip():
                words = _split_inline(line)
                if len(words) > self.max_args:
                    raise TooLarge(
                        f"a request of {len(words)} arguments: the limit is {self.max_args}"
                        f" ({self.why})"
                    )
                out.append(words)
        return pos

    def _walk(self, buf: bytes, pos: int, out: list[list[bytes]], most: int | None) -> int:
        n = len(buf)
        fast = most is None and n - pos <= FAST_SPAN <= self.max_arg  # once a read at most
        while most is None or len(out) < most:
            bulk = self._bulk
            if bulk >= 0:  # awaiting a bulk string's bytes and its CRLF
                end = pos + bulk
                if n < end + 2:
                    return pos
                if buf[end : end + 2] != CRLF:
                    raise ProtocolError("malformed request: a bulk string not ended by CRLF")
                args = self._args
                assert args is not None
                args.append(buf[pos:end])
                pos = end + 2
                self._bulk = -1
                self._left -= 1
                if not self._left:
                    out.append(args)
                    self._args = None
                continue
            if fast and self._args is None:
                fast = False  # never again for this read: each try splits all of it
                pos = self._fast(buf, pos, out)  # whole small requests, at C speed
                if pos == n:
                    return pos
            # a header line: *N at a request's start, $L before each argument
            end = buf.find(CRLF, pos, pos + MAX_HEADER + 2)
            if end < 0:
                if n - pos > MAX_HEADER + 1:
                    raise ProtocolError("malformed request: a header line too long")
                return pos
            digits = buf[pos + 1 : end]
            if not digits.isdigit() or (digits[0] == 0x30 and len(digits) > 1):
                # ASCII digits only, no leading zero (as Redis): no sign, space or _
                raise ProtocolError(f"malformed request: bad header {buf[pos:end][:30]!r}")
            value = int(digits)
            size = end + 2 - pos
            if self._args is None:
                if buf[pos] != 0x2A:  # '*'
                    raise ProtocolError(
                        "malformed request: expected '*' (an array of bulk strings),"
                        f" got {buf[pos : pos + 1]!r}"
                    )
                if not value:
                    raise ProtocolError("a request must be a non-empty array of bulk strings")
                if value > self.max_args:
                    raise TooLarge(
                        f"a request of {value} arguments: the limit is {self.max_args} ({self.why})"
                    )
                self._check_size(size + 6 * value)  # each argument takes 6 bytes or more
                self._args, self._left, self._size = [], value, size
            else:
                if buf[pos] != 0x24:  # '$'
                    raise ProtocolError(
                        "a request must be an array of bulk strings (no nesting),"
                        f" got {buf[pos : pos + 1]!r}"
                    )
                if value > self.max_arg:
                    raise TooLarge(
                        f"an argument of {value} bytes: the limit is {self.max_arg} ({self.why})"
                    )
                self._size += size + value + 2
                self._check_size(self._size + 6 * (self._left - 1))
                self._bulk = value
            pos = end + 2
        return pos

    def _fast(self, buf: bytes, pos: int, out: list[list[bytes]]) -> int:
        """Read the whole requests at ``buf[pos:]`` by splitting it at CRLFs; stop at
        the first one that is not whole, or whose arguments hold a CRLF or anything
        unusual: the walk reads (or refuses) it. Only for spans no longer than any
        limit, so each request read here is within them."""
        toks = (buf[pos:] if pos else buf).split(CRLF)
        n = len(toks) - 1  # the last is what follows the last CRLF
        i = 0
        max_args = self.max_args
        while i < n:
            head = toks[i]
            if head[:1] != b"*" or not head[1:].isdigit() or head[1:2] == b"0":
                break  # (a leading zero, or *0: the walk refuses it)
            count = int(head[1:])
            end = i + 1 + 2 * count
            if not 0 < count <= max_args or end > n:
                break
            args = toks[i + 2 : end : 2]
            if [b"$%d" % len(a) for a in args] != toks[i + 1 : end : 2]:
                break  # an argument holding CRLF, a leading zero, a nested array
            out.append(args)
            i = end
        if not i:
            return pos
        return pos + len(CRLF.join(toks[:i])) + 2

    def _check_size(self, size: int) -> None:
        if size > self.max_request:
            raise TooLarge(
                f"a request of at least {size} bytes: the limit is {self.max_request} ({self.why})"
            )


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
    if isinstance(value, Resp3):
        return encode_reply3(value.value)
    raise TypeError(f"cannot encode {type(value).__name__} as a reply")


def encode_reply3(value: Any) -> bytes:
    """Encode a reply for a connection that speaks RESP3 (it said Redis's ``HELLO 3``):
    None -> the null ``_``, dict -> a map ``%``; every other value has the same form
    as in RESP2 (encode_reply): bulk strings (JSON text stays one), simple strings,
    integers, arrays, errors."""
    if isinstance(value, bytes | str | int):  # Simple is a str: encode_reply tells
        return encode_reply(value)
    if value is None:
        return b"_\r\n"
    if isinstance(value, list | tuple):
        return b"*%d\r\n" % len(value) + b"".join(encode_reply3(v) for v in value)
    if isinstance(value, dict):
        return b"%%%d\r\n" % len(value) + b"".join(
            encode_reply3(k) + encode_reply3(v) for k, v in value.items()
        )
    if isinstance(value, Resp3):
        return encode_reply3(value.value)
    return encode_reply(value)
