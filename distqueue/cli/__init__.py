"""The ``distqueue`` command. Each subcommand family lives in its own module."""

from __future__ import annotations

import click

from distqueue._version import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distqueue")
def main() -> None:
    """distqueue: a distributed job queue with a durable embedded store."""


def _register() -> None:
    from distqueue.cli.bench import bench
    from distqueue.cli.demo import demo
    from distqueue.cli.jobs import COMMANDS
    from distqueue.cli.server import server, worker
    from distqueue.cli.supervisor import workers

    for command in [server, worker, workers, *COMMANDS, bench, demo]:
        main.add_command(command)


_register()
