"""The command line: parse, call one workflow function, print, map errors to exit codes.

Exit codes: 0 success; 1 error (bad input, refused step, failed apply);
2 with ``plan --detailed-exitcode`` when the plan has changes; 64 the command
line itself is wrong (an unknown option, a missing argument: EX_USAGE of
sysexits.h, so a script never reads a typo as "changes present"); 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperCommand, TyperGroup, TyperOption

from reconcile import __version__
from reconcile import workflow as wf
from reconcile.config import load_config
from reconcile.errors import InputError, ReconcileError, UsageError
from reconcile.sandbox.cli import app as sandbox_app

#: The command line is wrong (sysexits.h EX_USAGE). Never 2: ``plan --detailed-exitcode`` means "changes".
EX_USAGE = 64
#: click's UsageError (typer vendors click in recent versions, so it is reached through typer).
_ClickUsageError: type[Exception] = typer.BadParameter.__mro__[1]


class _FlagsAsFlags:
    """Help shows an on/off option as a flag (``--json``), not as ``--json <bool>``."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
        return params


class Command(_FlagsAsFlags, TyperCommand):
    pass


class Group(_FlagsAsFlags, TyperGroup):
    """The ``reconcile`` group: a command line that does not parse is one line on stderr and exit code 64."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors():
            return super().invoke(ctx)


class _usage_errors:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, _tb: Any) -> Literal[False]:
        if isinstance(exc, _ClickUsageError):
            where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "reconcile"  # type: ignore[attr-defined]
            message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
            if message:   # empty: a bare group name, whose help is already printed
                err.print(f"error: {message} (see `{where} --help`)", markup=False)
            raise typer.Exit(EX_USAGE) from None
        return False


app = typer.Typer(
    name="reconcile", no_args_is_help=True, add_completion=False, cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,  # tracebacks must never carry tokens
    help="Terraform-style plan / approve / apply / rollback for Salesforce Contact and Lead updates.",
)
for _info in sandbox_app.registered_commands:   # its commands show flags as flags too
    _info.cls = Command if _info.cls in (None, TyperCommand) else _info.cls
app.add_typer(sandbox_app, name="sandbox", cls=Group, help="The bundled sandbox Salesforce org (for the demo and tests).")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_state: dict[str, Any] = {}

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def _print_version(value: bool) -> None:
    if value:
        out.print(f"reconcile {__version__}", markup=False)
        raise typer.Exit(0)


@app.callback()
def _main(
    archive: Path | None = typer.Option(None, "--archive", help="Archive directory (default ./plans, or $RECONCILE_ARCHIVE)."),
    config: Path | None = typer.Option(None, "--config", help="Configuration file (default ./reconcile.toml if present)."),
    target_org: str | None = typer.Option(
        None, "--target-org", help="Sign in as this Salesforce CLI alias or username (sf); overrides the environment."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    _state["archive"] = archive
    _state["config"] = config
    _state["target_org"] = target_org


def _context() -> wf.Context:
    config = load_config(_state.get("config"), archive=_state.get("archive"))
    return wf.Context(config=config, target_org=_state.get("target_org"))


def _org_line(org: Any) -> str:
    """``Org: PRODUCTION — Acme (Enterprise Edition) https://… 00D…``"""
    from reconcile.model import org_label
    org = org or {}
    parts = [p for p in (org.get("name"), f"({org['organization_type']})" if org.get("organization_type") else None,
                         org.get("instance_url"), org.get("org_id")) if p]
    return f"Org: {org_label(org.get('is_sandbox'))} — {' '.join(parts)}"


def _with_status(ctx: wf.Context, fn: Callable[[], Any]) -> Any:
    """On a terminal, a live status line narrating the long steps (reading the org …)."""
    if not err.is_terminal:
        return fn()
    with err.status("working…") as status:
        ctx.say = lambda message: status.update(message)
        return fn()


def _run(fn: Callable[[], int | None], as_json: bool = False, *, interrupted: str = "interrupted") -> None:
    """Run a command body; every ReconcileError becomes a one-line message and its exit code
    (with ``--json``, also a JSON error document on stdout for scripts)."""
    try:
        code = fn() or 0
    except InputError as exc:
        for problem in exc.problems:
            err.print(f"error: {problem}", markup=False)
        err.print(f"error: {len(exc.problems)} problem(s) in the outcome files; "
                  "nothing was read from or written to Salesforce", markup=False)
        _json_error(as_json, exc, problems=exc.problems)
        raise typer.Exit(exc.exit_code) from None
    except ReconcileError as exc:
        err.print(f"error: {exc}", markup=False)
        report = getattr(exc, "report", None)
        _json_error(as_json, exc, report=_report_json(report) if report is not None else None)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:   # the archive or an input cannot be read or written: one line, no traceback
        text = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        err.print(f"error: {' '.join(text.split()) or exc.__class__.__name__}", markup=False)
        _json_error(as_json, exc, message=text)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print(interrupted, markup=False)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _json_error(as_json: bool, exc: BaseException, *, message: str | None = None, **extra: Any) -> None:
    if as_json:
        _emit_json({"ok": False, "error": type(exc).__name__, "code": getattr(exc, "code", None),
                    "message": message or str(exc), **{k: v for k, v in extra.items() if v is not None}})


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def _short(plan_id: str) -> str:
    return plan_id[:12]


# -- commands ---------------------------------------------------------------------------

@app.command(cls=Command)
def plan(
    outcomes: list[Path] = typer.Argument(..., help="Pipeline outcome files (CSV or JSON Lines)."),
    allow_create: bool = typer.Option(False, "--allow-create", help="Create Contacts (and Accounts) for new_contact outcomes."),
    detailed_exitcode: bool = typer.Option(
        False, "--detailed-exitcode", help="Exit 2 when the plan has changes, 0 when it has none."),
    as_json: bool = JsonOpt,
) -> None:
    """Snapshot the org, apply the rules, and archive a reviewable plan."""
    from reconcile.render.text import NO_CHANGES, summary_line

    def body() -> int:
        ctx = _context()
        result = _with_status(ctx, lambda: wf.plan(ctx, outcomes, allow_create=allow_create))
        doc = result.doc
        changes = len(doc["changes"])
        if as_json:
            _emit_json({"plan_id": doc["plan_id"], "path": str(result.plan_dir / "plan.json"),
                        "html": str(result.plan_dir / "plan.html"), "changes_csv": str(result.plan_dir / "changes.csv"),
                        "state": "planned", "summary": doc["summary"], "transitions": doc.get("transitions"),
                        "by_reason": doc.get("by_reason"), "estimated_api_calls": doc["estimated_api_calls"],
                        "api_calls": result.api_calls, "org": doc["org"]})
        else:
            out.print(summary_line(doc), markup=False)
            if not changes:
                out.print(NO_CHANGES, markup=False)
            out.print(_org_line(doc["org"]), markup=False)
            out.print(f"Saved plan {_short(doc['plan_id'])} (state: planned) in {result.plan_dir}", markup=False)
            out.print(f"  review:  {result.plan_dir / 'plan.html'}  or  reconcile show {_short(doc['plan_id'])}", markup=False)
            if changes:
                out.print(f"  approve: reconcile approve {_short(doc['plan_id'])} --by NAME", markup=False)
            out.print(f"  ({result.api_calls} API calls; apply will spend about {doc['estimated_api_calls']})", markup=False)
        return 2 if detailed_exitcode and changes else 0

    _run(body, as_json)


@app.command(cls=Command)
def show(
    plan: str = typer.Argument(..., help="Plan id, unique id prefix, or path."),
    full: bool = typer.Option(
        False, "--full",
        help="List every change, skipped and review item (a long plan goes through a pager on a terminal)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan document itself."),
) -> None:
    """Show a plan for a terminal: counts per transition and reason with examples (--full: every change)."""
    from reconcile.render.text import render_show

    def body() -> int:
        ctx = _context()
        loaded = wf.load(ctx, plan)
        if as_json:
            _emit_json(loaded.doc)
            return 0
        wf.check_head(loaded)

        def write(console: Console) -> None:
            console.print(f"State: {loaded.state}", markup=False)
            render_show(loaded.doc, console, ctx.config, full=full)

        with wf.plan_shape(loaded):
            _paged(write)
        return 0

    _run(body, as_json)


def _paged(write: Callable[[Console], Any]) -> None:
    """Print through the pager ($PAGER, else less) when on a terminal and longer than it."""
    if not out.is_terminal:
        write(out)
        return
    with out.capture() as captured:
        write(out)
    text = captured.get()
    if text.count("\n") < out.size.height:
        out.file.write(text)
        out.file.flush()
        return
    with out.pager(styles=True):
        out.print(Text.from_ansi(text), end="")


@app.command(cls=Command)
def approve(
    plan: str = typer.Argument(..., help="Plan id, unique id prefix, or path."),
    by: str = typer.Option(..., "--by", help="Who approves (recorded in the archive)."),
    comment: str = typer.Option("", "--comment", help="Why, or a ticket reference."),
    sign: Path | None = typer.Option(None, "--sign", metavar="KEYFILE",
                                        help="Sign the approval with this SSH key "
                                             "(ssh-keygen -Y sign; default: [approval] signing_key)."),
    as_json: bool = JsonOpt,
) -> None:
    """Record an approval bound to the plan's exact bytes and every file beside it (SHA-256)."""
    def body() -> int:
        loaded, record = wf.approve(_context(), plan, by=by, comment=comment, sign=sign)
        if as_json:
            _emit_json({**record, "state": str(loaded.state), "org": loaded.doc.get("org")})
        else:
            out.print(f"Approved plan {_short(record['plan_id'])} by {record['approved_by']} at {record['approved_at']} "
                      f"(plan.json sha256 {record['plan_sha256'][:12]}); state: {loaded.state}", markup=False)
            out.print(f"  {_org_line(loaded.doc.get('org'))}", markup=False)
            if (loaded.plan_dir / "approval.sig").is_file():
                out.print(f"  signed: {loaded.plan_dir / 'approval.sig'}", markup=False)
            out.print(f"  apply: reconcile apply {_short(record['plan_id'])}", markup=False)
        return 0

    _run(body, as_json)


@app.command("apply", cls=Command)
def apply_cmd(
    plan: str = typer.Argument(..., help="Plan id, unique id prefix, or path."),
    skip_drifted: bool = typer.Option(
        False, "--skip-drifted",
        help="Write the rest when some records changed since the plan; record the drifted ones."),
    as_json: bool = JsonOpt,
) -> None:
    """Execute exactly the approved plan (drift-checked, journaled, resumable)."""
    from reconcile.errors import DriftError

    def body() -> int:
        ctx = _context()
        try:
            report = _with_progress(lambda progress: wf.apply(ctx, plan, skip_drifted=skip_drifted, progress=progress))
        except ReconcileError as exc:
            rep = getattr(exc, "report", None)
            if rep is not None and not as_json:
                _print_drift(rep) if isinstance(exc, DriftError) else _print_report(rep)
            raise
        if as_json:
            _emit_json(_report_json(report))
        else:
            _print_report(report)
        return 0 if str(report.status) == "applied" and report.finished else 1

    _run(body, as_json, interrupted=f"interrupted: what was sent is in the journal; run `reconcile apply {plan}` "
                                    "again to resume (nothing is sent twice)")


@app.command(cls=Command)
def rollback(
    plan: str = typer.Argument(..., help="The applied plan to undo."),
    as_json: bool = JsonOpt,
) -> None:
    """Write a new plan that undoes what that plan's apply did (to review, approve and apply)."""
    from reconcile.render.text import summary_line

    def body() -> int:
        result = wf.rollback(_context(), plan)
        doc = result.doc
        if as_json:
            _emit_json({"plan_id": doc["plan_id"], "parent_plan_id": doc["parent_plan_id"], "kind": doc["kind"],
                        "path": str(result.plan_dir / "plan.json"), "state": "planned", "summary": doc["summary"]})
        else:
            out.print(summary_line(doc), markup=False)
            out.print(f"Saved rollback plan {_short(doc['plan_id'])} of {_short(doc['parent_plan_id'])} "
                      f"(state: planned) in {result.plan_dir}", markup=False)
            out.print(f"  review:  {result.plan_dir / 'plan.html'}", markup=False)
            out.print(f"  approve: reconcile approve {_short(doc['plan_id'])} --by NAME", markup=False)
        return 0

    _run(body, as_json)


@app.command(cls=Command)
def whoami(as_json: bool = JsonOpt) -> None:
    """Sign in and show the org: instance, id, name, user, PRODUCTION or Sandbox, API version, API requests left."""
    def body() -> int:
        info = wf.whoami(_context())
        if as_json:
            _emit_json(info)
            return 0
        daily = info.get("daily_api_requests") or {}
        rows = [("org", f"{info['org_kind']} — {info.get('org_name') or '?'}"
                        + (f" ({info['organization_type']})" if info.get("organization_type") else "")),
                ("org id", info["org_id"]), ("instance", info["instance_url"]),
                ("user", info.get("username") or "?"), ("signed in with", info["sign_in"]),
                ("API version", info["api_version"]),
                ("API requests left today", f"{daily.get('remaining', '?')} of {daily.get('max', '?')}"
                 if daily else "unknown")]
        for label, value in rows:
            out.print(f"{label + ':':<25}{value}", markup=False)
        return 0

    _run(body, as_json)


@app.command(cls=Command)
def log(as_json: bool = JsonOpt) -> None:
    """The archive's history as a table: every plan with its time, kind, state, counts, approver,
    and whether its files pass verify."""
    def body() -> int:
        entries = wf.log(_context())
        if as_json:
            _emit_json(entries)
            return 0
        if not entries:
            out.print("No plans in the archive yet. Start with `reconcile plan OUTCOMES.csv`.", markup=False)
            return 0
        from rich.table import Table
        table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), header_style="bold")
        for name in ("PLAN", "CREATED", "KIND", "STATE", "+ ~ -", "SKIP", "REVIEW", "APPROVED BY", "FILES"):
            table.add_column(name, no_wrap=name != "APPROVED BY", overflow="fold",
                             justify="right" if name in ("SKIP", "REVIEW") else "left")
        failing = []
        for e in entries:
            s = e.get("summary") or {}
            kind = (e.get("kind") or "?") + (f" of {e['parent_plan_id'][:8]}" if e.get("parent_plan_id") else "")
            created = str(e.get("created_at") or "?").replace("T", " ")[:16]
            files = "ok" if e.get("verified") else "FAILS VERIFY"
            if not e.get("verified"):
                failing.append(_short(e.get("plan_id") or "?"))
            table.add_row(_short(e.get("plan_id") or "?"), created, kind, str(e["state"]),
                          f"+{s.get('create', 0)} ~{s.get('update', 0)} -{s.get('delete', 0)}",
                          str(s.get("skipped", 0)), str(s.get("review", 0)), e.get("approved_by") or "—",
                          Text(files, style="bold red" if files != "ok" else "green"))
        # piped: wide enough for every column (scripts read --json; a person may read a file)
        (out if out.is_terminal else Console(highlight=False, soft_wrap=True, width=120)).print(table)
        if failing:
            out.print(f"{len(failing)} plan(s) fail verification: run `reconcile verify {failing[0]}` for what is wrong.",
                      markup=False)
        return 0

    _run(body, as_json)


@app.command(cls=Command)
def verify(
    plan: str | None = typer.Argument(None, help="One plan (default: the whole archive)."),
    as_json: bool = JsonOpt,
) -> None:
    """Recompute every hash and check that approvals, results and rollbacks point at their plans."""
    def body() -> int:
        checked = wf.verify(_context(), plan)
        if as_json:
            _emit_json({"ok": True, "checked": checked})
        else:
            for line in checked:
                out.print(f"ok  {line}", markup=False)
            out.print(f"Archive verified: {len(checked)} check(s) passed.", markup=False)
        return 0

    _run(body, as_json)


@app.command(cls=Command)
def demo(
    directory: Path = typer.Option(Path("reconcile-demo"), "--dir", help="Where the demo keeps its org, outcomes and archive."),
) -> None:
    """The whole loop against the bundled sandbox org: plan, approve, apply, rollback, verify."""
    from reconcile.demo import run_demo

    def body() -> int:
        run_demo(directory, say=lambda line: out.print(line, markup=False))
        return 0

    _run(body)


@app.command(cls=Command)
def benchmark(
    sizes: str = typer.Option("1000,10000,100000", "--sizes", help="Comma-separated numbers of outcomes."),
    apply_up_to: int = typer.Option(10_000, "--apply-up-to", help="Also apply plans up to this many outcomes."),
    leads: float = typer.Option(0.5, "--leads", help="Leads in the org per outcome (Contacts: one per outcome)."),
    duplicates: float = typer.Option(0.05, "--duplicates", help="Share of Contacts that duplicate another's address."),
    as_json: bool = JsonOpt,
) -> None:
    """API calls, wall time and peak memory (each phase in its own process) of plan,
    approve and apply against the sandbox org, beside the pipeline's own approach."""
    from reconcile.bench import run_benchmark

    def body() -> int:
        try:
            numbers = [int(s) for s in sizes.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--sizes: expected numbers like 1000,10000, got {sizes!r}") from None
        if not (0 <= leads <= 1 and 0 <= duplicates < 1):
            raise UsageError(f"--leads must be 0..1 and --duplicates 0..<1, got {leads} and {duplicates}")
        rows = run_benchmark(numbers, apply_up_to=apply_up_to, leads_share=leads, duplicate_share=duplicates,
                             say=(lambda _l: None) if as_json else (lambda line: out.print(line, markup=False)))
        if as_json:
            _emit_json(rows)
        return 0

    _run(body, as_json)


# -- printing helpers ---------------------------------------------------------------------

def _with_progress(fn: Callable[[Any], Any]) -> Any:
    if not err.is_terminal:
        return fn(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    with Progress(TextColumn("applying"), BarColumn(), MofNCompleteColumn(), TextColumn("changes"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("applying", total=None)
        return fn(lambda done, total: bar.update(task, completed=done, total=total))


def _report_json(report: Any) -> dict[str, Any]:
    return report.to_dict() if hasattr(report, "to_dict") else dict(report)



def _print_report(report: Any) -> None:
    for r in report.results:
        if str(r.status) in ("failed", "drifted"):
            out.print(f"  {r.status}: {r.change_id} {r.error_code or ''} {r.message or ''}".rstrip(), markup=False)
    for warning in report.warnings:
        out.print(f"note: {warning}", markup=False)
    line = report.tally()
    short = _short(report.plan_id)
    if report.finished:
        out.print(f"Apply complete: {line} ({report.api_calls} API calls). Plan {short} is {report.status}; "
                  f"per-change results in its apply.json", markup=False)
    else:
        out.print(f"Apply stopped ({report.stop_reason}): {line}. Plan {short} is {report.status}; "
                  f"run `reconcile apply {short}` again to resume", markup=False)


def _print_drift(report: Any) -> None:
    """Each drifted record with the plan's value and today's value, per field."""
    for result in getattr(report, "drifted", ()) or ():
        parts = [f"{name}: plan expected {d.get('planned')!r}, Salesforce now has {d.get('current')!r}"
                 for name, d in sorted((result.drift or {}).items())]
        detail = "; ".join(parts + ([result.message] if result.message else [])) or "changed since the plan"
        out.print(f"  drifted: {result.change_id}  {detail}", markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
