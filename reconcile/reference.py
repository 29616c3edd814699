"""The README's command reference, generated from the CLI itself so the two cannot drift."""

from __future__ import annotations

import re

import typer


def command_reference() -> str:
    from reconcile.cli import app

    root = typer.main.get_command(app)
    lines: list[str] = []
    Context = root.context_class  # typer vendors click; reach it through the command
    ctx = Context(root, info_name="reconcile")

    def walk(cmd, name: str, parent) -> None:
        sub_ctx = Context(cmd, info_name=name.split()[-1], parent=parent)
        if hasattr(cmd, "list_commands"):
            for sub_name in sorted(cmd.list_commands(sub_ctx)):
                walk(cmd.get_command(sub_ctx, sub_name), f"{name} {sub_name}", sub_ctx)
            return
        usage = re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(),
                       " ".join(cmd.collect_usage_pieces(sub_ctx)))
        usage = re.sub(r"\[([a-z_]+)\]", lambda m: f"[{m.group(1).upper()}]", usage)
        lines.append(f"### `{name} {usage}`".replace("  ", " "))
        lines.append("")
        lines.append(" ".join((cmd.help or "").strip().split("\n\n")[0].split()))  # first paragraph
        lines.append("")
        for param in cmd.params:
            if param.param_type_name == "option" and param.name != "help":
                flags = ", ".join(f"`{o}`" for o in param.opts)
                lines.append(f"- {flags}: {(param.help or '').strip()}")
        if lines[-1] != "":
            lines.append("")

    lines.append("Global options (before the command): " + ", ".join(
        f"`{p.opts[0]}`" for p in root.params if p.param_type_name == "option" and p.name != "help"))
    lines.append("")
    for name in sorted(root.list_commands(ctx)):
        walk(root.get_command(ctx, name), f"reconcile {name}", ctx)
    return "\n".join(lines).rstrip() + "\n"
