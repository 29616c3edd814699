"""``reconcile benchmark``: API calls, wall time and process peak memory of plan,
approve and apply against the bundled sandbox org, at several sizes (SPEC §7),
beside what the pipeline's own approach would spend.

For N outcomes the org holds N Contacts (a share of them duplicates: a second
Contact with another person's address) and N/2 Leads; outcomes mix inactive,
reactivate, title and e-mail changes, Multipub people and unknown addresses.

The sandbox org runs in this process; every phase (plan, approve, apply) runs
in a child process of its own, so its peak RSS (the child's ``VmHWM``, else its
``ru_maxrss`` from ``os.wait4``) is the command's own, not the org's. The baseline is the
pipeline's approach the tool replaces: two queries per person (its Contact
and its Lead) and one update request per record written.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The round trip the baseline's wall time is projected at (the measurement).
BASELINE_RTT_SECONDS = 0.040

def _email(i: int) -> str:
    return (f"person{i:07d}.o'neil@bench.example.com" if i % 97 == 0
            else f"person{i:07d}@bench.example.com")


def _people(n: int) -> Iterator[tuple[int, str]]:
    for i in range(n):
        yield i, _email(i)


def seed_org(store: Any, n: int, *, leads_share: float = 0.5, duplicate_share: float = 0.05) -> dict[str, int]:
    """N Contacts (``duplicate_share`` of them a second Contact for another person's
    address), ``leads_share``·N Leads (every other person has one)."""
    contacts, leads = [], []
    every = round(1 / duplicate_share) if duplicate_share else 0
    lead_every = round(1 / leads_share) if leads_share else 0
    for i, email in _people(n):
        holder = i - 1 if every and i % every == every - 1 else i   # a duplicate of the previous person
        contacts.append({"Email": _email(holder), "LastName": f"Person {i}", "FirstName": "Bench",
                         "Title": "Engineer", "Contact_Status__c": "Active"})
        if lead_every and i % lead_every == 0:
            leads.append({"Email": email, "LastName": f"Person {i}", "Company": "Bench Inc",
                          "Status": "Working - Contacted", "Title": "Engineer"})
    store.insert_many("Contact", contacts)
    store.insert_many("Lead", leads)
    return {"contacts": len(contacts), "leads": len(leads)}


def write_outcomes(path: Path, n: int) -> None:
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


# -- one phase in a child process ---------------------------------------------------

def _phase_main() -> None:
    """Child process: run one phase, print one JSON line (``python -c`` entry point)."""
    from reconcile import workflow as wf
    from reconcile.config import load_config

    phase, archive, arg = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    ctx = wf.Context(config=load_config(archive=archive, env={}), env=dict(os.environ))
    t0 = time.perf_counter()
    out: dict[str, Any]
    if phase == "plan":
        result = wf.plan(ctx, [Path(arg)])
        doc = result.doc
        plan_dir = result.plan_dir
        out = {"plan_id": doc["plan_id"], "api_calls": result.api_calls,
               "changes": len(doc["changes"]), "estimated_api_calls": doc["estimated_api_calls"],
               "plan_json_mb": (plan_dir / "plan.json").stat().st_size / 1e6,
               "plan_html_mb": (plan_dir / "plan.html").stat().st_size / 1e6}
    elif phase == "approve":
        wf.approve(ctx, arg, by="benchmark")
        out = {"api_calls": 0}
    elif phase == "apply":
        report = wf.apply(ctx, arg)
        out = {"api_calls": report.api_calls}
    else:
        raise SystemExit(f"unknown phase {phase!r}")
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _own_peak_rss_mb()
    sys.stdout.write(json.dumps(out) + "\n")


def _own_peak_rss_mb() -> float | None:
    """This process's peak resident memory since it started its program (Linux: VmHWM).
    ``ru_maxrss`` would also count the parent's pages while the child was being started."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_phase(phase: str, archive: Path, arg: str, env: dict[str, str]) -> dict[str, Any]:
    """Run one phase in a child process; its result, wall time (the child's own
    measure, imports excluded) and peak RSS in MB."""
    proc = subprocess.Popen([sys.executable, "-c", "from reconcile.bench import _phase_main; _phase_main()",
                             phase, str(archive), arg],
                            env={**os.environ, **env}, cwd=archive.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"benchmark {phase} failed (exit {proc.returncode}): {last[0]}")
    result = json.loads(stdout.decode("utf-8").strip().splitlines()[-1])
    if result.get("peak_rss_mb") is None:   # no /proc: the child's ru_maxrss (kilobytes on Linux)
        result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def baseline_calls(outcomes: int, record_writes: int) -> dict[str, int]:
    """The pipeline's own approach: two queries per person, one update per record."""
    return {"read": 2 * outcomes, "write": record_writes, "total": 2 * outcomes + record_writes}


def run_benchmark(sizes: list[int], *, say: Callable[[str], None], apply_up_to: int = 10_000,
                  leads_share: float = 0.5, duplicate_share: float = 0.05) -> list[dict]:
    from reconcile.sandbox import SandboxServer

    rows = []
    say(f"{'outcomes':>8} {'records':>8} {'changes':>8} | {'plan calls':>10} {'plan s':>7} {'plan MB':>8} "
        f"{'html MB':>7} | {'approve s':>9} {'approve MB':>10} | {'apply calls':>11} {'apply s':>7} "
        f"{'apply MB':>8} | {'baseline calls':>14} {'baseline s':>10}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp, SandboxServer(seed="empty", daily_api_limit=10_000_000) as sb:
            counts = seed_org(sb.store, n, leads_share=leads_share, duplicate_share=duplicate_share)
            outcomes = Path(tmp) / "outcomes.csv"
            write_outcomes(outcomes, n)
            archive = Path(tmp) / "plans"
            env = dict(sb.env)
            planned = run_phase("plan", archive, str(outcomes), env)
            approved = run_phase("approve", archive, planned["plan_id"], env)
            applied = run_phase("apply", archive, planned["plan_id"], env) if n <= apply_up_to else None
            base = baseline_calls(n, planned["changes"])
            row = {"outcomes": n, "contacts": counts["contacts"], "leads": counts["leads"],
                   "changes": planned["changes"],
                   "plan": {"api_calls": planned["api_calls"], "seconds": round(planned["seconds"], 2),
                            "peak_rss_mb": round(planned["peak_rss_mb"], 1),
                            "estimated_apply_calls": planned["estimated_api_calls"],
                            "plan_json_mb": round(planned["plan_json_mb"], 1),
                            "plan_html_mb": round(planned["plan_html_mb"], 1)},
                   "approve": {"api_calls": 0, "seconds": round(approved["seconds"], 2),
                               "peak_rss_mb": round(approved["peak_rss_mb"], 1)},
                   "apply": None if applied is None else {
                       "api_calls": applied["api_calls"], "seconds": round(applied["seconds"], 2),
                       "peak_rss_mb": round(applied["peak_rss_mb"], 1)},
                   "baseline": {**base, "seconds_at_40ms": round(base["total"] * BASELINE_RTT_SECONDS, 1)}}
            rows.append(row)
            a = row["apply"] or {}
            say(f"{n:>8} {counts['contacts'] + counts['leads']:>8} {planned['changes']:>8} | "
                f"{planned['api_calls']:>10} {planned['seconds']:>7.2f} {planned['peak_rss_mb']:>8.0f} "
                f"{planned['plan_html_mb']:>7.1f} | {approved['seconds']:>9.2f} {approved['peak_rss_mb']:>10.0f} | "
                f"{a.get('api_calls', '-'):>11} {a.get('seconds', '-'):>7} {a.get('peak_rss_mb', '-'):>8} | "
                f"{base['total']:>14} {base['total'] * BASELINE_RTT_SECONDS:>10.1f}")
    say("plan/approve/apply: each in its own process (peak RSS is that process's); wall time excludes "
        "Python start-up; baseline: two queries per person and one update per record, at 40 ms a request")
    return rows
