"""``reconcile sandbox serve``: run the sandbox org in the foreground."""

from __future__ import annotations

import errno
import shlex
import signal
import threading
from pathlib import Path

import typer

app = typer.Typer(help="The bundled sandbox Salesforce org.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """The bundled sandbox Salesforce org."""


def _check_seed(seed: str) -> int | None:
    from reconcile.sandbox.scale import parse_seed
    try:
        people = parse_seed(seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--seed") from None
    if people is None and seed not in ("demo", "empty"):
        raise typer.BadParameter("use demo, empty or scale:N", param_hint="--seed")
    return people


@app.command()
def outcomes(
    seed: str = typer.Option("demo", "--seed", help="The seed org the outcomes are for: demo | scale:N."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file (default: stdout)."),
) -> None:
    """Write the pipeline outcomes that go with a seed org (CSV), to plan against it."""
    people = _check_seed(seed)
    if seed == "empty":
        raise typer.BadParameter("the empty org has no outcomes", param_hint="--seed")
    if people is None:
        from importlib import resources
        text = resources.files("reconcile.sandbox").joinpath("demo_outcomes.csv").read_text("utf-8")
    else:
        from reconcile.sandbox.scale import scale_outcomes_csv
        text = scale_outcomes_csv(people)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"# wrote {text.count(chr(10)) - 1:,} outcome rows to {output}", err=True)


@app.command()
def serve(
    port: int = typer.Option(0, "--port", help="Port on 127.0.0.1 (0: any free port)."),
    state: Path | None = typer.Option(
        None, "--state", help="JSON state file: loaded when it exists, else seeded; every "
        "write is saved to it. Without it the org lives in memory."),
    seed: str = typer.Option("demo", "--seed", help="Seed org when there is no state: demo | empty | scale:N "
                             "(N people; outcomes from `reconcile sandbox outcomes --seed scale:N`)."),
    session_seconds: float | None = typer.Option(
        None, "--session-seconds", help="Sessions from the token endpoint or SOAP login expire after this many seconds."),
    production: bool = typer.Option(False, "--production", help="Answer IsSandbox = false: the org says it is production."),
    no_soap_login: bool = typer.Option(
        False, "--no-soap-login", help="Refuse SOAP login() (as orgs created since Winter '26 do)."),
    duplicate_rules_on_edit: str | None = typer.Option(
        None, "--duplicate-rules-on-edit", help="What the standard Contact and Lead duplicate rules do on "
        "edit: allow (as shipped: report only) | alert | block. Kept in the state file."),
) -> None:
    """Start the sandbox org and print the environment that points reconcile,
    simple-salesforce or curl at it. Ctrl-C stops it."""
    from reconcile.config import DEFAULT_API_VERSION
    from reconcile.sandbox.server import SandboxServer

    _check_seed(seed)
    if duplicate_rules_on_edit not in (None, "allow", "alert", "block"):
        raise typer.BadParameter("use 'allow', 'alert' or 'block'", param_hint="--duplicate-rules-on-edit")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server = SandboxServer(state_path=state, seed=seed, port=port, session_seconds=session_seconds,
                               production=production, soap_login=not no_soap_login)
        try:
            server.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                typer.echo(f"error: port {port} on 127.0.0.1 is in use; choose another with --port "
                           "(0: any free port)", err=True)
            else:
                typer.echo(f"error: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
        sb = server
        try:
            if duplicate_rules_on_edit is not None:
                for rule in ("Standard_Contact_Duplicate_Rule", "Standard_Lead_Duplicate_Rule"):
                    sb.store.configure_duplicate_rule(rule, on_edit=duplicate_rules_on_edit)
            for name, value in sb.env.items():
                typer.echo(f"export {name}={shlex.quote(value)}")
            typer.echo(f"# sandbox org {sb.store.org_id} at {sb.instance_url}; try:", err=True)
            typer.echo(f'#   curl --cacert "$REQUESTS_CA_BUNDLE" -H "Authorization: Bearer '
                       f'$SALESFORCE_ACCESS_TOKEN" {sb.instance_url}/services/data/v{DEFAULT_API_VERSION}/limits/',
                       err=True)
            for mode in ("jwt", "client_credentials"):
                extra = {k: v for k, v in sb.env_for(mode).items() if k != "REQUESTS_CA_BUNDLE"}
                typer.echo(f"# or sign in with {mode.replace('_', ' ')} (unset SALESFORCE_ACCESS_TOKEN): "
                           + " ".join(f"{k}={shlex.quote(v)}" for k, v in extra.items()), err=True)
            typer.echo("# Ctrl-C stops it.", err=True)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
        finally:
            server.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo("# sandbox org stopped", err=True)
