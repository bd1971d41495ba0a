"""``distqueue config``: every setting a command would run with, and where it came from."""

from __future__ import annotations

from typing import Any

import click

from distqueue.config import redact_url

__all__ = ["config", "effective"]

#: options whose value is a secret: shown as *** when set
SECRETS = {"token", "password"}
#: what each click ParameterSource is called here
SOURCES = {
    "COMMANDLINE": "flag",
    "ENVIRONMENT": "env",
    "DEFAULT_MAP": "file",
    "DEFAULT": "default",
    "PROMPT": "prompt",
}


def _shown(name: str, value: Any) -> Any:
    if value is None or value == () or value is False:
        return value
    if name in SECRETS:
        return "***"
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, tuple):
        return [redact_url(v) if isinstance(v, str) else v for v in value]
    return value


def effective(parent: click.Context, name: str, args: list[str]) -> list[dict[str, Any]]:
    """The settings of ``distqueue NAME ARGS``: one dict per option (name, value,
    source, and the environment variable it reads), without running the command."""
    group = parent.parent
    assert group is not None and isinstance(group.command, click.Group)
    command = group.command.commands.get(name)
    if command is None:
        raise click.UsageError(
            f"no command {name!r} (commands: {', '.join(sorted(group.command.commands))})"
        )
    ctx = command.make_context(name, list(args), parent=group)
    rows = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None or param.hidden:
            continue
        if param.name in ("help",):
            continue
        source = ctx.get_parameter_source(param.name)
        value = ctx.params.get(param.name)
        envvar = param.envvar or (
            f"{ctx.auto_envvar_prefix}_{param.name.upper()}" if ctx.auto_envvar_prefix else None
        )
        rows.append({
            "option": next((o for o in param.opts if o.startswith("--")), param.opts[0]),
            "name": param.name,
            "value": _shown(param.name, value),
            "source": SOURCES.get(source.name, source.name.lower()) if source else "default",
            "env": envvar if isinstance(envvar, str) else (list(envvar) if envvar else None),
        })  # fmt: skip
    return rows


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("command", required=False, default="server")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def config(ctx: click.Context, command: str, args: tuple[str, ...], as_json: bool) -> None:
    """Show the settings COMMAND (default: server) would run with, and where each
    comes from: flag, env, file (--config / distqueue.toml) or default. Secrets show
    as ***. Flags after COMMAND are taken into account: `distqueue config worker -c 8`.
    """
    rows = effective(ctx, command, list(args))
    path = ctx.find_root().meta.get("config_path")
    if as_json:
        from distqueue.cli.common import emit_json

        emit_json({"command": command, "config_file": path, "settings": rows})
        return
    click.echo(f"distqueue {command}: config file {path or 'none'}")
    width = max(len(r["option"]) for r in rows)
    for r in rows:
        value = r["value"]
        shown = "-" if value is None else value
        click.echo(f"  {r['option']:<{width}}  {shown!s:<24} {r['source']:<7}  {r['env'] or ''}")
