"""The README's command reference, generated from the CLI itself so the two cannot drift."""

from __future__ import annotations

import click
import typer


def command_reference() -> str:
    from reconcile.cli import app

    root = typer.main.get_command(app)
    lines: list[str] = []
    ctx = click.Context(root, info_name="reconcile")

    def walk(cmd: click.Command, name: str, parent: click.Context) -> None:
        sub_ctx = click.Context(cmd, info_name=name.split()[-1], parent=parent)
        if isinstance(cmd, click.Group):
            for sub_name in sorted(cmd.list_commands(sub_ctx)):
                walk(cmd.get_command(sub_ctx, sub_name), f"{name} {sub_name}", sub_ctx)
            return
        usage = " ".join(cmd.collect_usage_pieces(sub_ctx))
        lines.append(f"### `{name} {usage}`".replace("  ", " "))
        lines.append("")
        lines.append((cmd.help or "").strip().splitlines()[0])
        lines.append("")
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name != "help":
                flags = ", ".join(f"`{o}`" for o in param.opts)
                lines.append(f"- {flags}: {(param.help or '').strip()}")
        if lines[-1] != "":
            lines.append("")

    lines.append("Global options (before the command): " + ", ".join(
        f"`{p.opts[0]}`" for p in root.params if isinstance(p, click.Option) and p.name != "help"))
    lines.append("")
    for name in sorted(root.list_commands(ctx)):
        walk(root.get_command(ctx, name), f"reconcile {name}", ctx)
    return "\n".join(lines).rstrip() + "\n"
