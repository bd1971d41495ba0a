"""What every CLI command shares: --server/--token/--json, one-line errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import orjson

from distqueue.errors import DistQueueError

__all__ = ["client_options", "emit_json", "fail", "friendly_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr, a non-zero exit, no traceback."""
    click.echo(f"distqueue: {message}", err=True)
    sys.exit(code)


def friendly_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DistQueueError as exc:
            fail(f"{exc} [{exc.code}]")
        except (ValueError, OSError) as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def client_options(fn: F) -> F:
    """--server, --token and --json, for every command that talks to a server."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)
    fn = click.option(
        "--token", envvar="DISTQUEUE_TOKEN", default=None,
        help="The server's token (env DISTQUEUE_TOKEN).",
    )(fn)  # fmt: skip
    fn = click.option(
        "--server", envvar="DISTQUEUE_SERVER", default=None, metavar="HOST:PORT[,...]",
        help="Server address(es) (env DISTQUEUE_SERVER, default 127.0.0.1:7700).",
    )(fn)  # fmt: skip
    return friendly_errors(fn)


def emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
