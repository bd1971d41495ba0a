"""Logging for the long-running commands (server, worker, workers, demo).

``setup_logging(level, fmt)`` configures the root logger once, on stderr:

- ``text``: ``%(asctime)s %(name)s %(message)s``, with the level name after the
  logger's for WARNING and above (an INFO line reads as before);
- ``json``: one JSON object per line: ``ts`` (ISO 8601, UTC, milliseconds),
  ``level``, ``logger``, ``msg``, ``exc`` (the traceback, when there is one) and the
  structured fields in ``FIELDS`` a call passed with ``extra=``; nothing else of the
  LogRecord.

``announce()`` prints a command's status lines (listening, serving, stopped): as
plain text in text format, as a JSON record in json format, whatever the level.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from typing import Any

__all__ = [
    "FIELDS",
    "FORMATS",
    "LEVELS",
    "AnnounceStream",
    "JSONFormatter",
    "TextFormatter",
    "announce",
    "json_enabled",
    "setup_logging",
]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
#: the structured fields a JSON line carries when a call passes them with ``extra=``
FIELDS = (
    "job", "type", "queue", "attempt", "duration", "worker", "error", "state", "retry_in",
)  # fmt: skip

TEXT_FORMAT = "%(asctime)s %(name)s %(message)s"
TEXT_FORMAT_LEVELED = "%(asctime)s %(name)s %(levelname)s %(message)s"

#: the handler setup_logging installed on the root logger (replaced by a second call)
_handler: logging.Handler | None = None
_format = "text"


class TextFormatter(logging.Formatter):
    """Today's ``%(asctime)s %(name)s %(message)s``; WARNING and above also name
    their level, so trouble stands out."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._leveled = logging.PercentStyle(TEXT_FORMAT_LEVELED)

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return self._leveled.format(record)
        return super().formatMessage(record)


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self) -> None:
        super().__init__()
        import orjson

        self._dumps = orjson.dumps

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text or record.stack_info:
            parts = [record.exc_text or "", self.formatStack(record.stack_info or "")]
            line["exc"] = "\n".join(p for p in parts if p)
        fields = record.__dict__
        for name in FIELDS:
            value = fields.get(name)
            if value is not None:
                line[name] = value
        return self._dumps(line, default=str).decode()


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Log records of ``level`` and above to stderr, in ``fmt`` (text or json).
    A second call replaces what the first set up."""
    global _handler, _format
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    _handler, _format = handler, fmt
    # json: Python's warnings become records too, so every line parses
    logging.captureWarnings(fmt == "json")


def json_enabled() -> bool:
    """setup_logging chose the json format."""
    return _format == "json"


def announce(text: str, logger: str = "distqueue", level: int = logging.INFO) -> None:
    """A status line a command always prints (whatever --log-level): plain on stderr
    in text format, a record of ``level`` from ``logger`` in json format."""
    if _format != "json":
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        return
    log = logging.getLogger(logger)
    # handle(), not log(): announcements pass whatever the level
    log.handle(log.makeRecord(log.name, level, "(announce)", 0, text, (), None))


class AnnounceStream(io.TextIOBase):
    """A text stream whose every line is announce()d (a server's status and console
    output, written with print())."""

    def __init__(self, logger: str) -> None:
        super().__init__()
        self.logger = logger
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        *lines, self._partial = (self._partial + s).split("\n")
        for line in lines:
            announce(line, self.logger)
        return len(s)
