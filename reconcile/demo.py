"""``reconcile demo``: the whole loop against the bundled sandbox org.

No credentials and no network: starts the sandbox org on loopback, seeds the
demo org and a demo outcome file, then plans, approves, applies, plans the
rollback, approves and applies it, and verifies the archive, narrating each
step. The archive is left in the demo directory for the user to open.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from reconcile import workflow as wf
from reconcile.config import load_config
from reconcile.render.text import summary_line


def run_demo(directory: Path, *, say: Callable[[str], None]) -> None:
    from reconcile.sandbox import SandboxServer

    directory.mkdir(parents=True, exist_ok=True)
    state = directory / "sandbox-org.json"
    if state.exists():
        state.unlink()  # every demo starts from the seeded demo org
    outcomes = directory / "outcomes.csv"
    with resources.as_file(resources.files("reconcile.sandbox") / "demo_outcomes.csv") as src:
        shutil.copyfile(src, outcomes)
    archive = directory / "plans"
    config = load_config(archive=archive, env={})

    with SandboxServer(state_path=state, seed="demo") as sandbox:
        ctx = wf.Context(config=config, env=dict(sandbox.env))
        counts = {s: len(sandbox.store.records(s)) for s in ("Contact", "Lead", "Account")}
        say(f"1. Sandbox org running at {sandbox.instance_url} "
            f"({counts['Contact']} Contacts, {counts['Lead']} Leads, {counts['Account']} Accounts).")
        rows = sum(1 for _ in outcomes.open(encoding="utf-8")) - 1
        say(f"   Outcomes from the auto-responder pipeline: {outcomes} ({rows} rows).")

        planned = wf.plan(ctx, [outcomes], allow_create=True)
        pid = planned.doc["plan_id"][:12]
        say(f"2. reconcile plan {outcomes} --allow-create  ({planned.api_calls} API calls)")
        say(f"   {summary_line(planned.doc)}")
        say(f"   Review it: {planned.plan_dir / 'plan.html'}")
        say(f"   Human review list: {planned.plan_dir / 'review.csv'}")

        wf.approve(ctx, pid, by="demo", comment="reconcile demo")
        say(f"3. reconcile approve {pid} --by demo  (bound to the plan's SHA-256)")

        report = wf.apply(ctx, pid)
        say(f"4. reconcile apply {pid}: {report.status}, {report.tally()} ({report.api_calls} API calls)")

        again = wf.plan(ctx, [outcomes], allow_create=True)
        say(f"5. Planning the same outcomes again: {summary_line(again.doc)}")

        back = wf.rollback(ctx, pid)
        bid = back.doc["plan_id"][:12]
        say(f"6. reconcile rollback {pid}: {summary_line(back.doc)}")
        say(f"   Review it: {back.plan_dir / 'plan.html'}")
        wf.approve(ctx, bid, by="demo", comment="undo the demo apply")
        undo = wf.apply(ctx, bid)
        say(f"7. reconcile approve {bid} --by demo; reconcile apply {bid}: {undo.status}, {undo.tally()}")
        for note in undo.warnings:
            say(f"   {note}")

        checked = wf.verify(ctx)
        say(f"8. reconcile verify: {len(checked)} checks passed; the archive is in {archive}")
        for entry in wf.log(ctx):
            say(f"   {entry['plan_id'][:12]}  {entry['kind']:<8}  {entry['state']}")
        say(f"Next: open {planned.plan_dir / 'plan.html'} in a browser, or run "
            f"`reconcile --archive {archive} show {pid}`.")

