"""The ``distqueue`` command. Each subcommand family lives in its own module.

Every option of every command takes its value from, in this order: the command
line; the environment (the option's own variable where it names one, such as
DISTQUEUE_SERVER or DISTQUEUE_TOKEN, else DISTQUEUE_<COMMAND>_<OPTION>, e.g.
DISTQUEUE_WORKER_CONCURRENCY=16); the config file (``--config FILE``,
``DISTQUEUE_CONFIG``, else ./distqueue.toml when there is one), a TOML table per
command; the default (distqueue/defaults.py). ``distqueue config`` shows them.
"""

from __future__ import annotations

from typing import Any

import click

from distqueue import defaults
from distqueue._version import __version__

__all__ = ["load_config", "main"]

#: the prefix of every option's environment variable (DISTQUEUE_<COMMAND>_<OPTION>)
ENV_PREFIX = "DISTQUEUE"


def load_config(path: str | None) -> tuple[dict[str, Any], str | None]:
    """The config file's tables (command -> option -> value) and its path: ``path``
    if given (it must exist), else ./distqueue.toml if there is one."""
    import tomllib

    given = path is not None
    path = path or defaults.CONFIG_FILE
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if given:
            raise click.UsageError(f"no config file {path}") from None
        return {}, None
    except OSError as exc:
        raise click.UsageError(f"cannot read the config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.UsageError(f"the config file {path} is not valid TOML: {exc}") from None
    for name, table in data.items():
        if not isinstance(table, dict):
            raise click.UsageError(
                f"{path}: {name} = ... belongs in a table: [server], [worker], ..."
                " (one per command, options by their long name)"
            )
    # TOML keys as people write them (lease, max-payload, max_payload) -> click's names
    return {
        command: {key.replace("-", "_"): value for key, value in table.items()}
        for command, table in data.items()
    }, path


class Main(click.Group):
    """The group: checks the config file's tables and keys against the commands."""

    def invoke(self, ctx: click.Context) -> Any:
        tables = ctx.default_map or {}
        for command, table in tables.items():
            cmd = self.commands.get(command)
            if cmd is None:
                raise click.UsageError(
                    f"{ctx.meta.get('config_path')}: [{command}] is no command"
                    f" (commands: {', '.join(sorted(self.commands))})"
                )
            # a key names an option by its long name (store, max-payload, max_payload)
            names: dict[str, str] = {}
            for p in cmd.params:
                if isinstance(p, click.Option) and p.name is not None:
                    names[p.name] = p.name
                    for opt in p.opts:
                        if opt.startswith("--"):
                            names.setdefault(opt[2:].replace("-", "_"), p.name)
            for key in list(table):
                if key not in names:
                    raise click.UsageError(
                        f"{ctx.meta.get('config_path')}: [{command}] {key}: no such option"
                        f" of distqueue {command} (see distqueue {command} --help)"
                    )
                table[names[key]] = table.pop(key)
        return super().invoke(ctx)


def _use_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    tables, path = load_config(value)
    ctx.default_map = tables
    ctx.meta["config_path"] = path
    return path


@click.group(
    cls=Main,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": ENV_PREFIX},
)
@click.version_option(__version__, prog_name="distqueue")
@click.option(
    "--config",
    "config_path",
    envvar="DISTQUEUE_CONFIG",
    default=None,
    metavar="FILE",
    is_eager=True,
    expose_value=False,
    callback=_use_config,
    help="A TOML file of settings, a table per command ([server], [worker], ...);"
    f" default ./{defaults.CONFIG_FILE} when there is one.",
)
def main() -> None:
    """distqueue: a distributed job queue with a durable embedded store.

    Settings: flags, then DISTQUEUE_<COMMAND>_<OPTION> environment variables, then
    the config file, then the defaults; `distqueue config` shows what is in effect.
    """


def _register() -> None:
    from distqueue.cli.bench import bench
    from distqueue.cli.config import config
    from distqueue.cli.demo import demo
    from distqueue.cli.flow import COMMANDS as FLOW
    from distqueue.cli.jobs import COMMANDS
    from distqueue.cli.migrate import migrate
    from distqueue.cli.server import server, worker
    from distqueue.cli.supervisor import workers

    for command in [server, worker, workers, *COMMANDS, *FLOW, bench, demo, config, migrate]:
        main.add_command(command)


_register()
