"""``reconcile benchmark``: API calls, wall time and peak memory of plan and apply
against the bundled sandbox org, at several sizes (SPEC §7).

For N outcomes the org holds N Contacts and N Leads (2N records); outcomes mix
inactive, reactivate, title and e-mail changes, Multipub people and unknown
addresses. The pure planner is also timed alone on the same data.
"""

from __future__ import annotations

import csv
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from reconcile import workflow as wf
from reconcile.config import load_config

if TYPE_CHECKING:
    from reconcile.sandbox.store import Store


def _people(n: int) -> Iterator[tuple[int, str]]:
    for i in range(n):
        yield i, f"person{i:07d}.o'neil@bench.example.com" if i % 97 == 0 else f"person{i:07d}@bench.example.com"


def _seed(store: Store, n: int) -> None:
    stamp = "2026-01-01T00:00:00.000+0000"
    contacts, leads = [], []
    for i, email in _people(n):
        contacts.append({"Email": email, "LastName": f"Person {i}", "FirstName": "Bench",
                         "Title": "Engineer", "Contact_Status__c": "Active"})
        leads.append({"Email": email, "LastName": f"Person {i}", "Company": "Bench Inc",
                      "Status": "Working - Contacted", "Title": "Engineer"})
    store.insert_many("Contact", contacts)
    store.insert_many("Lead", leads)
    del stamp


def _outcomes(path: Path, n: int) -> None:
    kinds = ["inactive", "inactive", "title_change", "email_change", "reactivate"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "outcome", "new_email", "new_title", "multipub_id", "cupola_status", "observed_at", "source_id"])
        for i, email in _people(n):
            kind = kinds[i % len(kinds)]
            if i % 50 == 49:
                email = f"nobody{i}@bench.example.com"
            w.writerow([email, kind,
                        f"moved{i:07d}@bench.example.org" if kind == "email_change" else "",
                        "Director" if kind == "title_change" else "",
                        f"MP{i}" if i % 40 == 7 else "",
                        "active" if i % 10 else "inactive",
                        "2026-11-20T10:00:00Z", f"msg-{i}"])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_benchmark(sizes: list[int], *, say: Callable[[str], None], apply_up_to: int = 10_000) -> list[dict]:
    from reconcile.inputs import read_outcomes
    from reconcile.planner import build_plan
    from reconcile.sandbox import SandboxServer
    from reconcile.snapshot import take_snapshot

    rows = []
    say(f"{'outcomes':>9} {'records':>8} {'plan calls':>10} {'/1k':>6} {'plan s':>7} "
        f"{'planner s':>9} {'planner MB':>10} {'apply calls':>11} {'/1k':>6} {'apply s':>7}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp, SandboxServer(seed="empty") as sb:
            _seed(sb.store, n)
            outcomes = Path(tmp) / "outcomes.csv"
            _outcomes(outcomes, n)
            config = load_config(archive=Path(tmp) / "plans", env={})
            ctx = wf.Context(config=config, env=dict(sb.env))

            t0 = time.perf_counter()
            planned = wf.plan(ctx, [outcomes])
            plan_s = time.perf_counter() - t0

            # the pure planner alone, with its peak memory
            outcome_set = read_outcomes([outcomes])
            sf = ctx.salesforce()
            snapshot = take_snapshot(sf.reader(), outcome_set, config, allow_create=False)
            t0 = time.perf_counter()
            build_plan(outcome_set, snapshot, config, allow_create=False)
            planner_s = time.perf_counter() - t0
            tracemalloc.start()  # a second run measures memory (tracing slows it down)
            build_plan(outcome_set, snapshot, config, allow_create=False)
            planner_mb = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()

            apply_calls = apply_s = None
            if n <= apply_up_to:
                pid = planned.doc["plan_id"]
                wf.approve(ctx, pid, by="benchmark")
                t0 = time.perf_counter()
                report = wf.apply(ctx, pid)
                apply_s = time.perf_counter() - t0
                apply_calls = report.api_calls
            row = {"outcomes": n, "records": 2 * n, "changes": len(planned.doc["changes"]),
                   "plan_api_calls": planned.api_calls, "plan_seconds": round(plan_s, 2),
                   "planner_seconds": round(planner_s, 2), "planner_peak_mb": round(planner_mb, 1),
                   "apply_api_calls": apply_calls,
                   "apply_seconds": None if apply_s is None else round(apply_s, 2),
                   "process_peak_rss_mb": round(_rss_mb(), 1)}
            rows.append(row)
            def per_k(calls: int | None, n: int = n) -> str:
                return "-" if calls is None else f"{calls * 1000 / n:.1f}"
            say(f"{n:>9} {2 * n:>8} {planned.api_calls:>10} {per_k(planned.api_calls):>6} {plan_s:>7.2f} "
                f"{planner_s:>9.2f} {planner_mb:>10.1f} {apply_calls if apply_calls is not None else '-':>11} "
                f"{per_k(apply_calls):>6} {apply_s if apply_s is not None else float('nan'):>7.2f}")
    say(f"process peak RSS (server + client in one process): {_rss_mb():.0f} MB")
    return rows
