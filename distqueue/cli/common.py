"""What every CLI command shares: --server/--token/--tls.../--json, one-line errors."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import orjson

from distqueue import logs
from distqueue.errors import DistQueueError, NotFinished, Timeout
from distqueue.store import MissingExtra
from distqueue.worker.registry import TaskImportError

__all__ = [
    "client_options",
    "emit_json",
    "exit_code",
    "fail",
    "friendly_errors",
    "log_options",
    "log_options_passed_on",
    "progress_bar",
    "quiet_log_options",
    "resolve_token",
    "stderr_is_tty",
    "tls_options",
    "token_file_option",
]

F = TypeVar("F", bound=Callable[..., Any])

#: exit codes (README, "Exit codes"): it worked (for wait and result: the job
#: succeeded); the job failed or the command was refused; a usage or set-up mistake
#: (click's own code for a bad option; a missing extra; --tasks that does not
#: import); the job has not finished (wait --timeout, result --wait ran out)
OK, FAILED, USAGE, PENDING = 0, 1, 2, 3


def exit_code(exc: DistQueueError) -> int:
    """The exit code of a command that ended with ``exc``."""
    return PENDING if isinstance(exc, NotFinished | Timeout) else FAILED


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr, a non-zero exit, no traceback."""
    if logs.json_enabled():  # --log-format json: every line of stderr parses
        logs.announce(f"distqueue: {message}", level=logging.ERROR)
    else:
        click.echo(f"distqueue: {message}", err=True)
    sys.exit(code)


def friendly_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DistQueueError as exc:
            fail(f"{exc} [{exc.code}]", exit_code(exc))
        except (MissingExtra, TaskImportError) as exc:  # a missing extra, a bad --tasks
            fail(str(exc), USAGE)
        except (ValueError, OSError) as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


#: the TLS options' parameter names and environment variables (read by the client)
TLS_ENV = {
    "tls": "DISTQUEUE_TLS",
    "tls_ca": "DISTQUEUE_TLS_CA",
    "tls_cert": "DISTQUEUE_TLS_CERT",
    "tls_key": "DISTQUEUE_TLS_KEY",
}


def tls_options() -> list[Callable[[F], F]]:
    """--tls, --tls-ca, --tls-cert, --tls-key: how a client or worker reaches a TLS
    server (also an address written tls://HOST:PORT)."""
    return [
        click.option(
            "--tls", is_flag=True, default=False, envvar="DISTQUEUE_TLS",
            help="Speak TLS to every server, verified against the system's trust store"
            " (env DISTQUEUE_TLS=1; or write an address tls://HOST:PORT).",
        ),
        click.option(
            "--tls-ca", default=None, metavar="FILE", envvar="DISTQUEUE_TLS_CA",
            help="Trust the server certificates this CA (a PEM file) signed, instead of"
            " the system's trust store; implies --tls (env DISTQUEUE_TLS_CA).",
        ),
        click.option(
            "--tls-cert", default=None, metavar="FILE", envvar="DISTQUEUE_TLS_CERT",
            help="Present this client certificate (a PEM file) to a server that asks for"
            " one; implies --tls, needs --tls-key (env DISTQUEUE_TLS_CERT).",
        ),
        click.option(
            "--tls-key", default=None, metavar="FILE", envvar="DISTQUEUE_TLS_KEY",
            help="The --tls-cert's private key (env DISTQUEUE_TLS_KEY).",
        ),
    ]  # fmt: skip


def _tls_to_env(fn: F) -> F:
    """Take the TLS options out of the command's arguments and hand them to the client
    the way it reads them when not told: the DISTQUEUE_TLS* environment variables."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for name, var in TLS_ENV.items():
            value = kwargs.pop(name, None)
            if value:
                os.environ[var] = "1" if value is True else str(value)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


TOKEN_HELP = (
    "The server's token. Prefer the environment (DISTQUEUE_TOKEN) or --token-file:"
    " a command line is visible to every user of the machine (ps)."
)


def token_file_option(fn: F) -> F:
    return click.option(
        "--token-file", default=None, metavar="FILE", envvar="DISTQUEUE_TOKEN_FILE",
        type=click.Path(dir_okay=False),
        help="Read the token from FILE (its first line; env DISTQUEUE_TOKEN_FILE).",
    )(fn)  # fmt: skip


def resolve_token(fn: F) -> F:
    """Turn --token / --token-file / DISTQUEUE_TOKEN into the one ``token`` argument,
    and warn when the token was typed on the command line, where ``ps`` shows it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token_file = kwargs.pop("token_file", None)
        token = kwargs.get("token")
        ctx = click.get_current_context(silent=True)
        source = ctx.get_parameter_source("token") if ctx is not None else None
        file_source = ctx.get_parameter_source("token_file") if ctx is not None else None
        typed = click.core.ParameterSource.COMMANDLINE
        if token_file is not None and source == typed and file_source != typed:
            token_file = None  # a flag beats the environment's file
        if token_file is not None:
            if token is not None and source == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError("give --token or --token-file, not both")
            kwargs["token"] = read_token_file(token_file)
        elif token is not None and source == click.core.ParameterSource.COMMANDLINE:
            click.echo(
                "distqueue: warning: --token on the command line is visible to every user"
                " of this machine (ps); use DISTQUEUE_TOKEN or --token-file instead",
                err=True,
            )
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    except OSError as exc:
        raise click.UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise click.UsageError(f"the token file {path} is not UTF-8 text") from None
    if not token:
        raise click.UsageError(f"the token file {path} is empty")
    return token


def client_options(fn: F) -> F:
    """--server, --token, the TLS options and --json, for every command that talks to
    a server."""
    fn = _tls_to_env(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)
    for option in reversed(tls_options()):
        fn = option(fn)
    fn = resolve_token(fn)
    fn = token_file_option(fn)
    fn = click.option("--token", envvar="DISTQUEUE_TOKEN", default=None, help=TOKEN_HELP)(fn)
    fn = click.option(
        "--server", envvar="DISTQUEUE_SERVER", default=None, metavar="[tls://]HOST:PORT[,...]",
        help="Server address(es) (env DISTQUEUE_SERVER, default 127.0.0.1:7700);"
        " tls://HOST:PORT for TLS.",
    )(fn)  # fmt: skip
    return friendly_errors(fn)


def emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _log_options(fn: F, *, keep: bool, default_level: str) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if keep:
            logs.setup_logging(kwargs["log_level"], kwargs["log_format"])
        else:
            logs.setup_logging(kwargs.pop("log_level"), kwargs.pop("log_format"))
        return fn(*args, **kwargs)

    options = [
        click.option(
            "--log-level", type=click.Choice(logs.LEVELS, case_sensitive=False),
            default=default_level, show_default=True, envvar="DISTQUEUE_LOG_LEVEL",
            help="Log records of this level and above (env DISTQUEUE_LOG_LEVEL); debug"
            " logs every job a worker runs.",
        ),
        click.option(
            "--log-format", type=click.Choice(logs.FORMATS, case_sensitive=False),
            default="text", show_default=True, envvar="DISTQUEUE_LOG_FORMAT",
            help="text, or json: one JSON object per line of stderr (env"
            " DISTQUEUE_LOG_FORMAT).",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def log_options(fn: F) -> F:
    """--log-level and --log-format, for a long-running command: logging is set up
    (distqueue.logs.setup_logging) before the command runs, which does not see them."""
    return _log_options(fn, keep=False, default_level="info")


def log_options_passed_on(fn: F) -> F:
    """log_options for a command that passes them on (``distqueue workers`` to its
    worker processes): it gets ``log_level`` and ``log_format`` too."""
    return _log_options(fn, keep=True, default_level="info")


def quiet_log_options(fn: F) -> F:
    """log_options at --log-level warning by default (``distqueue demo``: its output
    is what it prints; its in-process server says only what is wrong)."""
    return _log_options(fn, keep=False, default_level="warning")


def stderr_is_tty() -> bool:
    """Progress and spinners are drawn on stderr only when it is a terminal."""
    return sys.stderr.isatty()


@contextmanager
def progress_bar(
    total: int, what: str, *, transient: bool = True
) -> Iterator[Callable[[int], None]]:
    """``advance(n)``: a progress bar of ``total`` on stderr when it is a terminal
    (and ``total`` > 0), gone when done unless not ``transient``; nothing otherwise
    (piped output stays as it is)."""
    if not total or not stderr_is_tty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("[progress.description]{task.description}", BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=transient) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
