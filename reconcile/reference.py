"""The README's command reference, generated from the CLI itself so the two cannot drift."""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption


def command_reference() -> str:
    from reconcile.cli import app

    root = typer.main.get_command(app)
    lines: list[str] = []
    Context = root.context_class  # typer vendors click; reach it through the command
    ctx = Context(root, info_name="reconcile")

    def walk(cmd: TyperCommand | TyperGroup, name: str, parent: Any) -> None:
        # parent: click's Context, which typer vendors privately (no public name to annotate with)
        sub_ctx = Context(cmd, info_name=name.split()[-1], parent=parent)
        if isinstance(cmd, TyperGroup):
            for sub_name in sorted(cmd.list_commands(sub_ctx)):
                walk(_command(cmd, sub_ctx, sub_name), f"{name} {sub_name}", sub_ctx)
            return
        usage = re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(),
                       " ".join(cmd.collect_usage_pieces(sub_ctx)))
        usage = re.sub(r"\[([a-z_]+)\]", lambda m: f"[{m.group(1).upper()}]", usage)
        lines.append(f"### `{name} {usage}`".replace("  ", " "))
        lines.append("")
        lines.append(" ".join((cmd.help or "").strip().split("\n\n")[0].split()))  # first paragraph
        lines.append("")
        for param in cmd.params:
            if isinstance(param, TyperOption) and param.name != "help":
                flags = ", ".join(f"`{o}`" for o in param.opts)
                lines.append(f"- {flags}: {(param.help or '').strip()}")
        if lines[-1] != "":
            lines.append("")

    lines.append("Global options (before the command): " + ", ".join(
        f"`{p.opts[0]}`" for p in root.params if p.param_type_name == "option" and p.name != "help"))
    lines.append("")
    assert isinstance(root, TyperGroup)
    for name in sorted(root.list_commands(ctx)):
        walk(_command(root, ctx, name), f"reconcile {name}", ctx)
    return "\n".join(lines).rstrip() + "\n"


def _command(group: TyperGroup, ctx: Any, name: str) -> TyperCommand | TyperGroup:
    cmd = group.get_command(ctx, name)
    assert isinstance(cmd, (TyperCommand, TyperGroup)), name
    return cmd
