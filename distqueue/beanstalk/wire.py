"""The beanstalkd text protocol on the wire (beanstalkd's doc/protocol.txt; what
Debian's beanstalkd 1.12 does where it says more: tests/protocol/beanstalk/NOTES.md).

Pure: bytes in, commands out; replies built as bytes. No I/O, no store.

A request is a command line ending ``\\r\\n`` (a bare ``\\n`` is not a line end), at
most 224 bytes with it; ``put`` is followed by a body of the announced size and
``\\r\\n``. Tokens are separated by one space. Errors are reply words:
BAD_FORMAT (a malformed line: a wrong argument count, a non-integer or out-of-range
number, a bad tube name, a trailing space, a line too long), UNKNOWN_COMMAND,
EXPECTED_CRLF (a body not followed by ``\\r\\n``), JOB_TOO_BIG (a body larger than
the server's limit: the body is read and dropped). As beanstalkd does, a ``put`` line
refused with BAD_FORMAT does not swallow the body that may follow: its bytes are
read as the next command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_JOB_SIZE", "MAX_LINE", "MAX_U32", "Command", "Parser", "WireError", "is_tube",
    "job_reply", "yaml_list", "yaml_map",
]  # fmt: skip

#: a command line's longest, \r\n included
MAX_LINE = 224
#: the largest job body beanstalkd takes by default (65,535 bytes: one more is JOB_TOO_BIG)
MAX_JOB_SIZE = 65_535
#: priorities, delays, ttrs, pause delays, bounds: 32-bit unsigned
MAX_U32 = 2**32 - 1
#: a job id (distqueue's ids are 63-bit)
MAX_ID = 2**63 - 1

_TUBE = re.compile(rb"[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()-]{0,199}\Z")
_UINT = re.compile(rb"[0-9]{1,20}\Z")

#: command -> the numbers of arguments of each kind it takes: "t" a tube name,
#: "u" a 32-bit unsigned integer, "i" a job id
_ARGS: dict[bytes, str] = {
    b"put": "uuuu",
    b"use": "t",
    b"reserve": "",
    b"reserve-with-timeout": "u",
    b"reserve-job": "i",
    b"delete": "i",
    b"release": "iuu",
    b"bury": "iu",
    b"touch": "i",
    b"watch": "t",
    b"ignore": "t",
    b"peek": "i",
    b"peek-ready": "",
    b"peek-delayed": "",
    b"peek-buried": "",
    b"kick": "u",
    b"kick-job": "i",
    b"stats-job": "i",
    b"stats-tube": "t",
    b"stats": "",
    b"list-tubes": "",
    b"list-tube-used": "",
    b"list-tubes-watched": "",
    b"pause-tube": "tu",
    b"quit": "",
}


class WireError(Exception):
    """A request refused before it runs: ``word`` is the reply (BAD_FORMAT, ...)."""

    def __init__(self, word: str) -> None:
        super().__init__(word)
        self.word = word


@dataclass(frozen=True, slots=True)
class Command:
    """One request: its name (``put``, ``reserve``...), its arguments (str for a tube,
    int otherwise) and, for ``put``, the body."""

    name: str
    args: tuple[str | int, ...] = ()
    body: bytes | None = None


def is_tube(name: bytes) -> bool:
    """A tube name as beanstalkd takes it: 1-200 of A-Z a-z 0-9 - + / ; . $ _ ( ), not
    starting with a hyphen."""
    return _TUBE.match(name) is not None


def _arg(kind: str, token: bytes) -> str | int:
    if kind == "t":
        if not is_tube(token):
            raise WireError("BAD_FORMAT")
        return token.decode("ascii")
    if not _UINT.match(token):
        raise WireError("BAD_FORMAT")
    value = int(token)
    if value > (MAX_U32 if kind == "u" else MAX_ID):
        raise WireError("BAD_FORMAT")
    return value


def parse_line(line: bytes) -> Command:
    """A command line without its \\r\\n; WireError when refused. A ``put``'s body is
    not read here (Parser does)."""
    name, _, rest = line.partition(b" ")
    kinds = _ARGS.get(name)
    if kinds is None:
        raise WireError("UNKNOWN_COMMAND")
    tokens = rest.split(b" ") if rest or _ else []
    if len(tokens) != len(kinds):
        # beanstalkd: "use" with nothing after it is not the command "use <tube>"
        raise WireError("UNKNOWN_COMMAND" if not tokens and kinds else "BAD_FORMAT")
    args = tuple(_arg(kind, token) for kind, token in zip(kinds, tokens, strict=True))
    return Command(name.decode("ascii"), args)


class Parser:
    """Requests from a byte stream, in order: feed() bytes, then take what is complete
    from next(): a Command, a WireError (the reply to send for that request; the
    connection goes on), or None when more bytes are needed."""

    def __init__(self, max_job_size: int = MAX_JOB_SIZE) -> None:
        self.max_job_size = max_job_size
        self._buf = bytearray()
        #: a put waiting for its body: (the command, body size)
        self._put: tuple[Command, int] | None = None
        #: bytes of a too-big body (and its \r\n) still to drop
        self._drop = 0
        #: a line longer than MAX_LINE is being skipped up to its end
        self._skipping = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def pending(self) -> int:
        """Bytes buffered and not yet parsed."""
        return len(self._buf)

    def next(self) -> Command | WireError | None:
        buf = self._buf
        while True:
            if self._drop:
                n = min(self._drop, len(buf))
                del buf[:n]
                self._drop -= n
                if self._drop:
                    return None
                return WireError("JOB_TOO_BIG")
            if self._put is not None:
                command, size = self._put
                if len(buf) < size + 2:
                    return None
                body = bytes(buf[:size])
                crlf = bytes(buf[size : size + 2])
                del buf[: size + 2]
                self._put = None
                if crlf != b"\r\n":
                    return WireError("EXPECTED_CRLF")
                return Command(command.name, command.args, body)
            if self._skipping:
                # the rest of a line longer than any command: up to its end, no further
                end = buf.find(b"\r\n")
                if end < 0:
                    del buf[: max(0, len(buf) - 1)]  # (keep a \r that may start the \r\n)
                    return None
                del buf[: end + 2]
                self._skipping = False
                continue
            end = buf.find(b"\r\n", 0, MAX_LINE)
            if end < 0:
                if len(buf) >= MAX_LINE:
                    # longer than any command: refused once, skipped to its end (what
                    # follows that end is the next command)
                    self._skipping = True
                    return WireError("BAD_FORMAT")
                return None
            line = bytes(buf[:end])
            del buf[: end + 2]
            try:
                command = parse_line(line)
            except WireError as exc:
                return exc
            if command.name != "put":
                return command
            announced = command.args[3]
            assert isinstance(announced, int)
            if announced > self.max_job_size:
                self._drop = announced + 2
                continue
            self._put = (command, announced)


# -- replies ---------------------------------------------------------------------------------


def job_reply(word: str, job_id: int, body: bytes) -> bytes:
    """``RESERVED`` / ``FOUND``: the word, the id, the body's size, the body."""
    return b"%s %d %d\r\n%s\r\n" % (word.encode("ascii"), job_id, len(body), body)


def _yaml(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"OK %d\r\n%s\r\n" % (len(data), data)


def yaml_map(items: list[tuple[str, str | int | float | bool]]) -> bytes:
    """An ``OK <bytes>`` reply with a YAML mapping, one ``key: value`` a line, as
    beanstalkd writes them (strings bare unless they would read as another type)."""
    lines = ["---"]
    for key, value in items:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = f"{value:.6f}"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = f'"{value}"' if _needs_quotes(value) else value
        lines.append(f"{key}: {text}")
    return _yaml("\n".join(lines) + "\n")


def _needs_quotes(value: str) -> bool:
    if value == "" or value.lower() in ("true", "false", "null", "yes", "no", "on", "off", "~"):
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def yaml_list(names: list[str]) -> bytes:
    """An ``OK <bytes>`` reply with a YAML list of names."""
    return _yaml("---\n" + "".join(f"- {n}\n" for n in names))
